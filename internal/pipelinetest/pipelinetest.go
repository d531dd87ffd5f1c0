// Package pipelinetest holds what end-to-end tests of the pipeline share:
// a ledger of the exact integer sums Redis must hold for the samples
// JetStream acknowledged, a deterministic sample generator, and checks of
// the consumer and the dead-letter stream.
package pipelinetest

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
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

// Ledger is the exact integer sums per scope, member and day of its billing
// zone that Redis must hold: above them is double counting, below is loss.
// It cuts days and rounds on its own (cut), not through rollup.Split, so a
// suite that compares it with Redis proves the arithmetic as well as the
// delivery. It is safe for concurrent use.
type Ledger struct {
	loc  *time.Location
	mu   sync.Mutex
	m    map[ledgerKey]rollup.Values
	keys []string // the kept label keys (KeepGroups)
}

// KeepGroups makes the ledger book the group rollups of keys too (as a
// store with rollup.WithGroupKeys(keys)), and Diff check them both ways.
// Call it before Add.
func (l *Ledger) KeepGroups(keys ...string) *Ledger {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append([]string(nil), keys...)
	return l
}

// scopes are the scopes Diff checks: the usage scopes, the groups' when
// kept, and the capacities.
func (l *Ledger) scopes() []rollup.Scope {
	out := rollup.Scopes()
	if len(l.keys) > 0 {
		out = append(out, rollup.ScopeGroup, rollup.ScopeProjectGroup, rollup.ScopeGroupNamespace)
	}
	return append(out, rollup.ScopeCapacity)
}

type ledgerKey struct {
	scope  rollup.Scope
	member string
	day    rollup.Day
}

// NewLedger returns an empty ledger of UTC days.
func NewLedger() *Ledger { return NewLedgerIn(time.UTC) }

// NewLedgerIn returns an empty ledger of the days of loc.
func NewLedgerIn(loc *time.Location) *Ledger {
	return &Ledger{loc: loc, m: map[ledgerKey]rollup.Values{}}
}

// Add books samples.
func (l *Ledger) Add(samples ...sample.Sample) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range samples {
		s := &samples[i]
		e := rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}
		for d, v := range cut(s, l.loc) {
			book := func(sc rollup.Scope, member string) {
				k := ledgerKey{sc, member, d}
				sum := l.m[k]
				sum.Add(&v)
				l.m[k] = sum
			}
			if s.IsCapacity() {
				book(rollup.ScopeCapacity, e.Member(rollup.ScopeCapacity))
				continue
			}
			for _, sc := range rollup.Scopes() {
				book(sc, e.Member(sc))
			}
			for _, k := range l.keys {
				g := e
				g.GroupKey, g.Group = k, s.Labels[k]
				if g.Group == "" {
					g.Group = "__unallocated__"
				}
				for _, sc := range []rollup.Scope{rollup.ScopeGroup, rollup.ScopeProjectGroup, rollup.ScopeGroupNamespace} {
					book(sc, g.Member(sc))
				}
			}
		}
	}
}

// bytesPerGiB is the README's unit of memory and storage: GiB = 2^30 bytes.
const bytesPerGiB = 1 << 30

// cut is the README's rollup rule written out plainly, as a check on
// rollup.Split: the window is cut where each day of loc begins (found with
// calendar arithmetic, so 23- and 25-hour DST days come out right),
// and each day's part adds value × seconds × rollup.Scale (÷ 2^30 for
// bytes), rounded once to the nearest integer, halves away from zero.
//
// The product is computed in float64 with a single rounding: whole seconds
// × Scale is an exact integer and dividing by a power of two is exact, so
// the only inexact step is the one IEEE multiplication of the value by
// that integer, which is correctly rounded. Every float64 evaluation that
// keeps seconds × Scale together therefore gets the same integers, and
// equality with Split is exact, not approximate.
func cut(s *sample.Sample, loc *time.Location) map[rollup.Day]rollup.Values {
	out := map[rollup.Day]rollup.Values{}
	for from := s.Start; from.Before(s.End); {
		y, m, d := from.In(loc).Date()
		to := nextDay(from, loc)
		if to.After(s.End) {
			to = s.End
		}
		secs := int64(to.Sub(from) / time.Second)
		day := rollup.Day(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400) // days since 1970-01-01
		v := out[day]
		book := func(it rollup.Item, r sample.Resources, divisor float64) {
			eff := max(r.Usage, r.Request)
			if r.Effective != nil {
				eff = *r.Effective
			}
			for _, x := range []struct {
				m rollup.Method
				v float64
			}{{rollup.Usage, r.Usage}, {rollup.Request, r.Request}, {rollup.Effective, eff}, {rollup.ProjectQuota, r.Quota}} {
				v[rollup.Field(it, x.m)] += int64(math.Round(x.v * float64(secs*rollup.Scale) / divisor))
			}
		}
		if c := s.Capacity; c != nil {
			// A capacity: each item's in its Effective field.
			v[rollup.Field(rollup.Cpu, rollup.Effective)] += int64(math.Round(c.CPU * float64(secs*rollup.Scale)))
			v[rollup.Field(rollup.Memory, rollup.Effective)] += int64(math.Round(c.Memory * float64(secs*rollup.Scale) / bytesPerGiB))
			v[rollup.Field(rollup.Storage, rollup.Effective)] += int64(math.Round(c.Storage * float64(secs*rollup.Scale) / bytesPerGiB))
		} else {
			book(rollup.Cpu, s.CPU, 1)
			book(rollup.Memory, s.Memory, bytesPerGiB)
			book(rollup.Storage, s.Storage, bytesPerGiB)
		}
		out[day] = v
		from = to
	}
	return out
}

// nextDay is the first instant after t whose date in loc is the next day.
// That is local midnight, except where a DST change skips midnight
// (America/Santiago, America/Havana): there time.Date resolves the
// missing 00:00 to the instant an hour before the change, still on t's
// day, and the next day begins at the change itself, where the zone in
// effect at that instant ends.
func nextDay(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	next := time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	if ny, nm, nd := next.In(loc).Date(); ny == y && nm == m && nd == d {
		_, next = next.ZoneBounds()
	}
	return next
}

// Each calls f for every booked scope, member and day.
func (l *Ledger) Each(f func(sc rollup.Scope, member string, d rollup.Day, v rollup.Values)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, v := range l.m {
		f(k.scope, k.member, k.day, v)
	}
}

// DayReader reads the rollups: one entity's day rollup, and which
// entities have one on which days of a month. *rollup.Store and
// *rollup.Reader provide it.
type DayReader interface {
	DayValues(ctx context.Context, d rollup.Day, sc rollup.Scope, member string) (rollup.Values, bool, error)
	EntityDays(ctx context.Context, d rollup.Day, sc rollup.Scope) (map[string][]rollup.Day, error)
}

// Diff compares the ledger with the rollups both ways and describes the
// first mismatch ("" when they agree): every booked scope, member and day
// must be in Redis with exactly the booked values, and Redis must list no
// entity-day that the ledger did not book, in every month the ledger
// booked a day of. (Months the ledger never touched are not looked at: the
// suites' samples lie in a few known months.) Scopes are checked in the
// order of rollup.Scopes, namespaces first, so a stray or missing
// namespace is named rather than the sums it spoils.
func (l *Ledger) Diff(ctx context.Context, rdb DayReader) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	byScope := map[rollup.Scope][]ledgerKey{}
	months := map[string]rollup.Day{}
	for k := range l.m {
		byScope[k.scope] = append(byScope[k.scope], k)
		months[k.day.Month()] = k.day
	}
	for _, sc := range l.scopes() {
		booked := byScope[sc]
		slices.SortFunc(booked, func(a, b ledgerKey) int {
			return cmp.Or(cmp.Compare(a.day, b.day), cmp.Compare(a.member, b.member))
		})
		for _, k := range booked {
			want := l.m[k]
			got, ok, err := rdb.DayValues(ctx, k.day, k.scope, k.member)
			if err != nil {
				return err.Error()
			}
			if !ok {
				return fmt.Sprintf("missing rollup: %s %q %s: not in redis, ledger %v", k.scope, k.member, k.day, want)
			}
			if got != want {
				return fmt.Sprintf("%s %q %s: redis %v, ledger %v", k.scope, k.member, k.day, got, want)
			}
		}
		for _, month := range slices.Sorted(maps.Keys(months)) {
			listed, err := rdb.EntityDays(ctx, months[month], sc)
			if err != nil {
				return err.Error()
			}
			for _, member := range slices.Sorted(maps.Keys(listed)) {
				for _, day := range listed[member] {
					if _, ok := l.m[ledgerKey{sc, member, day}]; ok {
						continue
					}
					got, _, err := rdb.DayValues(ctx, day, sc, member)
					if err != nil {
						return err.Error()
					}
					return fmt.Sprintf("extra rollup: %s %q %s: redis %v, ledger booked nothing", sc, member, day, got)
				}
			}
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

// Drained reports whether the aggregators' consumer has acknowledged
// every sample message (stream.Drained).
func Drained(js jetstream.JetStream) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done, detail, err := stream.Drained(ctx, js, stream.Samples, stream.Consumer)
	if err != nil {
		return false, err.Error()
	}
	return done, detail
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
