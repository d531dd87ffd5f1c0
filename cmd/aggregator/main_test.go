package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestInvalidConfiguration: every bad flag or variable is named, with exit
// status 2, before anything connects.
func TestInvalidConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"bad zone", []string{"--timezone", "Mars/Olympus"}, nil, []string{"--timezone: \"Mars/Olympus\""}},
		{"bad redis url", []string{"--redis-url", "http://x"}, nil, []string{"--redis-url"}},
		{"bad nats url", []string{"--nats-url", "::"}, nil, []string{"--nats-url"}},
		{"short retention", []string{"--retention", "1h"}, nil, []string{"--retention"}},
		{"all at once", []string{"--timezone", "x", "--batch-size", "0", "--workers", "100"}, nil, []string{"--timezone", "--batch-size", "--workers"}},
		{"bad env", nil, map[string]string{"AGGREGATOR_BATCH_SIZE": "lots"}, []string{"AGGREGATOR_BATCH_SIZE"}},
		{"bad log format", []string{"--log-format", "xml"}, nil, []string{"--log-format"}},
		{"bad label key", []string{"--allocation-labels", "team,Bad Key"}, nil, []string{`--allocation-labels: label key "Bad Key"`}},
		{"label key twice", []string{"--allocation-labels", "team,team"}, nil, []string{`--allocation-labels: label key "team" is listed twice`}},
		{"too many label keys", []string{"--allocation-labels", "a,b,c,d,e,f,g,h,i"}, nil, []string{"--allocation-labels: 9 label keys, at most 8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			if code := run(tt.args, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// TestRefusesAnotherTimezone: Redis holds rollups cut in UTC; an aggregator
// configured for Shanghai must not add to them.
func TestRefusesAnotherTimezone(t *testing.T) {
	r := testenv.StartRedis(t)
	store, err := rollup.NewStore(r.Client(), mustZone(t, "UTC"), rollup.DefaultRetention)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CheckTimezone(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run([]string{"--redis-url", r.URL(), "--timezone", "Asia/Shanghai", "--nats-url", "nats://127.0.0.1:1"}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "billing time zone differs") || !strings.Contains(stderr.String(), `redis has \"UTC\"`) {
		t.Fatalf("exit %d, want 1 naming both zones:\n%s", code, stderr.String())
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
