// Package pipelinetest holds what end-to-end tests of the pipeline share:
// a ledger of the exact integer sums Redis must hold for the samples
// JetStream acknowledged, a deterministic sample generator, and checks of
// the consumer and the dead-letter stream.
package pipelinetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// Ledger is the exact integer sums per scope, member and day (UTC) that
// Redis must hold: above them is double counting, below is loss. It is
// safe for concurrent use.
type Ledger struct {
	mu sync.Mutex
	m  map[ledgerKey]rollup.Values
}

type ledgerKey struct {
	scope  rollup.Scope
	member string
	day    rollup.Day
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{m: map[ledgerKey]rollup.Values{}} }

// Add books samples.
func (l *Ledger) Add(samples ...sample.Sample) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range samples {
		s := &samples[i]
		e := rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}
		for _, p := range rollup.Split(s, time.UTC) {
			for _, sc := range rollup.Scopes() {
				k := ledgerKey{sc, e.Member(sc), p.Day}
				v := l.m[k]
				v.Add(&p.Values)
				l.m[k] = v
			}
		}
	}
}

// Each calls f for every booked scope, member and day.
func (l *Ledger) Each(f func(sc rollup.Scope, member string, d rollup.Day, v rollup.Values)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, v := range l.m {
		f(k.scope, k.member, k.day, v)
	}
}

// DayReader reads one entity's day rollup: *rollup.Store and
// *rollup.Reader provide it.
type DayReader interface {
	DayValues(ctx context.Context, d rollup.Day, sc rollup.Scope, member string) (rollup.Values, bool, error)
}

// Diff compares the ledger with the rollups and describes the first
// mismatch ("" when they agree).
func (l *Ledger) Diff(ctx context.Context, rdb DayReader) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, want := range l.m {
		got, ok, err := rdb.DayValues(ctx, k.day, k.scope, k.member)
		if err != nil {
			return err.Error()
		}
		if !ok || got != want {
			return fmt.Sprintf("%s %q %s: redis %v, ledger %v", k.scope, k.member, k.day, got, want)
		}
	}
	return ""
}

// Gen makes namespaces × windows deterministic samples of cluster from
// start on, spread over three projects, with values that exercise every
// field and rounding.
func Gen(cluster string, namespaces int, start time.Time, windows int, interval time.Duration) []sample.Sample {
	var out []sample.Sample
	for w := range windows {
		t := start.Add(time.Duration(w) * interval)
		for n := range namespaces {
			eff := 0.9 + float64(n)/7
			out = append(out, sample.Sample{
				Cluster: cluster, Project: fmt.Sprintf("p%d", n%3), Namespace: fmt.Sprintf("ns-%d", n),
				Start: t, End: t.Add(interval),
				CPU:     sample.Resources{Usage: 0.001 + float64(n%5)*0.337 + float64(w%7)*0.01, Request: 0.5, Quota: 2, Effective: &eff},
				Memory:  sample.Resources{Usage: 1.2e9 + float64(w), Request: 2e9, Quota: 8e9},
				Storage: sample.Resources{Usage: 5e9, Request: 2e10, Quota: 1e11},
			})
		}
	}
	return out
}

// ConsumerInfo reads the aggregators' consumer.
func ConsumerInfo(js jetstream.JetStream) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, stream.Samples, stream.Consumer)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// Drained reports whether the consumer has nothing pending or unacked.
func Drained(js jetstream.JetStream) (bool, string) {
	info, err := ConsumerInfo(js)
	if err != nil {
		return false, err.Error()
	}
	return info.NumPending == 0 && info.NumAckPending == 0, fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
}

// DeadLetters counts the dead-letter stream's messages by reason.
func DeadLetters(js jetstream.JetStream) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream.DeadLetter)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(stream.DeadLetterSubjects))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for subj, n := range info.State.Subjects {
		out[strings.TrimPrefix(subj, stream.DeadLetterPrefix)] = int(n)
	}
	return out, nil
}

// Runner is a component that runs until its context ends.
type Runner interface {
	Run(ctx context.Context) error
}

// Start runs r until the test ends or the returned stop is called; stop
// waits for Run to return and reports its error.
func Start(t testing.TB, r Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WaitExact waits until the consumer is drained and Redis equals the
// ledger, failing the test after within.
func WaitExact(t testing.TB, js jetstream.JetStream, rdb DayReader, l *Ledger, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, within, "stream drained and rollups equal to the ledger", func() (bool, string) {
		if ok, why := Drained(js); !ok {
			return false, why
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d := l.Diff(ctx, rdb)
		return d == "", d
	})
}

// MustDeadLetters is DeadLetters, failing the test on error.
func MustDeadLetters(t testing.TB, js jetstream.JetStream) map[string]int {
	t.Helper()
	out, err := DeadLetters(js)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
