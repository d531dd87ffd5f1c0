package aggregator

import (
	"testing"
	"time"
)

// TestMore: when a batch gathers another fetch.
func TestMore(t *testing.T) {
	c := DefaultConfig()
	c.BatchSize, c.MaxBatchPieces, c.Linger = 10, 100, 250*time.Millisecond
	cases := []struct {
		name     string
		n, days  int
		lingered time.Duration
		want     bool
	}{
		{"a full fetch: a backlog waits", 10, 50, time.Hour, true},
		{"a full fetch at the namespace-day budget", 10, 100, 0, false},
		{"a partial fetch while lingering", 3, 50, 100 * time.Millisecond, true},
		{"a partial fetch after lingering", 3, 50, 250 * time.Millisecond, false},
		{"a partial fetch at the budget", 3, 100, 0, false},
		{"an empty fetch: the stream is quiet", 0, 50, 0, false},
	}
	for _, tc := range cases {
		if got := c.more(tc.n, tc.days, tc.lingered); got != tc.want {
			t.Errorf("%s: more(%d, %d, %s) = %v, want %v", tc.name, tc.n, tc.days, tc.lingered, got, tc.want)
		}
	}
	c.Linger, c.MaxBatchPieces = 0, 0
	if c.more(3, 1, 0) {
		t.Error("--batch-linger 0: a partial fetch gathered more")
	}
	if !c.more(10, 1_000_000, 0) {
		t.Error("--batch-max-pieces 0: a full fetch did not gather more")
	}
}
