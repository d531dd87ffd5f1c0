package pipelinetest

import (
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load zone %s: %v", name, err)
	}
	return loc
}

// oneCore is a sample of exactly one core, one GiB and two GiB, so that
// each day's values are its seconds × Scale.
func oneCore(start, end time.Time) sample.Sample {
	return sample.Sample{
		Cluster: "c", Project: "p", Namespace: "n", Start: start, End: end,
		CPU:     sample.Resources{Usage: 1, Request: 1, Quota: 1},
		Memory:  sample.Resources{Usage: 1 << 30, Request: 1 << 30, Quota: 1 << 30},
		Storage: sample.Resources{Usage: 2 << 30, Request: 2 << 30, Quota: 2 << 30},
	}
}

func day(y int, m time.Month, d int) rollup.Day {
	return rollup.Day(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// TestCutDays checks the ledger's own day cutting on hand-computed cases:
// seconds per day of the billing zone, including days of 23 and 25 hours
// and a zone whose DST change skips midnight.
func TestCutDays(t *testing.T) {
	ny := mustZone(t, "America/New_York")
	santiago := mustZone(t, "America/Santiago")
	tests := []struct {
		name       string
		loc        *time.Location
		start, end time.Time
		want       map[rollup.Day]int64 // seconds
	}{
		{"one day, UTC", time.UTC, time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC),
			map[rollup.Day]int64{day(2026, 3, 4): 3600}},
		{"across a month end, UTC", time.UTC, time.Date(2026, 1, 31, 23, 59, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 1, 0, time.UTC),
			map[rollup.Day]int64{day(2026, 1, 31): 60, day(2026, 2, 1): 1}},
		{"across a year end, New York", ny, time.Date(2026, 12, 31, 20, 0, 0, 0, ny), time.Date(2027, 1, 1, 20, 0, 0, 0, ny),
			map[rollup.Day]int64{day(2026, 12, 31): 4 * 3600, day(2027, 1, 1): 20 * 3600}},
		{"the 23-hour day whole, New York", ny, time.Date(2026, 3, 8, 0, 0, 0, 0, ny), time.Date(2026, 3, 9, 0, 0, 0, 0, ny),
			map[rollup.Day]int64{day(2026, 3, 8): 23 * 3600}},
		{"24 h over the 23-hour day touches three days, New York", ny, time.Date(2026, 3, 7, 23, 30, 0, 0, ny), time.Date(2026, 3, 9, 0, 30, 0, 0, ny),
			map[rollup.Day]int64{day(2026, 3, 7): 1800, day(2026, 3, 8): 23 * 3600, day(2026, 3, 9): 1800}},
		{"the 25-hour day whole, New York", ny, time.Date(2026, 11, 1, 0, 0, 0, 0, ny), time.Date(2026, 11, 2, 0, 0, 0, 0, ny).Add(-time.Hour),
			map[rollup.Day]int64{day(2026, 11, 1): 24 * 3600}},
		{"24 h on the 25-hour day stay on it, New York", ny, time.Date(2026, 11, 1, 0, 0, 0, 0, ny), time.Date(2026, 11, 1, 0, 0, 0, 0, ny).Add(24 * time.Hour),
			map[rollup.Day]int64{day(2026, 11, 1): 24 * 3600}},
		// At 24:00 -04 Santiago's clocks go to 01:00 -03: 2024-09-07 has
		// 24 hours and 2024-09-08 begins at 01:00 (04:00 UTC).
		{"midnight skipped by DST, Santiago", santiago, time.Date(2024, 9, 8, 2, 30, 0, 0, time.UTC), time.Date(2024, 9, 8, 4, 30, 0, 0, time.UTC),
			map[rollup.Day]int64{day(2024, 9, 7): 5400, day(2024, 9, 8): 1800}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := oneCore(tt.start, tt.end)
			got := cut(&s, tt.loc)
			if len(got) != len(tt.want) {
				t.Fatalf("days %v, want %v", keys(got), tt.want)
			}
			for d, secs := range tt.want {
				v, ok := got[d]
				if !ok {
					t.Fatalf("no piece on %s; days %v", d, keys(got))
				}
				for _, it := range rollup.Items() {
					gib := int64(1)
					if it == rollup.Storage {
						gib = 2
					}
					for _, m := range rollup.Methods() {
						if w := secs * gib * rollup.Scale; v[rollup.Field(it, m)] != w {
							t.Errorf("%s %s/%s: %d, want %d", d, it, m, v[rollup.Field(it, m)], w)
						}
					}
				}
			}
		})
	}
}

func keys(m map[rollup.Day]rollup.Values) []string {
	var out []string
	for d := range m {
		out = append(out, d.String())
	}
	return out
}

// TestCutAgreesWithSplit compares the ledger's day cutting and rounding
// with the production rollup.Split on random windows, exactly: windows
// around New York's DST changes, around month ends, and anywhere, with
// values of every magnitude. A ledger that disagreed with Split would make
// the fault suites fail on arithmetic, and one that called Split would
// prove nothing about it.
func TestCutAgreesWithSplit(t *testing.T) {
	zones := []*time.Location{time.UTC, mustZone(t, "America/New_York"), mustZone(t, "Asia/Kolkata"), mustZone(t, "Australia/Lord_Howe")}
	ny := zones[1]
	// Instants the random windows gather around: New York's DST changes
	// (local 02:00) and month ends (local midnight), 2024 to 2027.
	var edges []time.Time
	for y := 2024; y <= 2027; y++ {
		for m := time.January; m <= time.December; m++ {
			edges = append(edges, time.Date(y, m, 1, 0, 0, 0, 0, ny), time.Date(y, m, 1, 0, 0, 0, 0, time.UTC))
		}
	}
	for _, d := range []time.Time{
		time.Date(2024, 3, 10, 2, 0, 0, 0, ny), time.Date(2024, 11, 3, 1, 0, 0, 0, ny),
		time.Date(2025, 3, 9, 2, 0, 0, 0, ny), time.Date(2025, 11, 2, 1, 0, 0, 0, ny),
		time.Date(2026, 3, 8, 2, 0, 0, 0, ny), time.Date(2026, 11, 1, 1, 0, 0, 0, ny),
		time.Date(2027, 3, 14, 2, 0, 0, 0, ny), time.Date(2027, 11, 7, 1, 0, 0, 0, ny),
	} {
		edges = append(edges, d, d, d) // DST days weigh more
	}
	rng := rand.New(rand.NewPCG(14, 2026))
	value := func(max float64) float64 {
		switch rng.IntN(5) {
		case 0:
			return 0
		case 1:
			return float64(rng.IntN(int(max))) // whole
		case 2:
			return float64(rng.IntN(1000)) / 1000 * max / 1000 // small, three decimals
		default:
			return rng.Float64() * max
		}
	}
	resources := func(max float64) sample.Resources {
		r := sample.Resources{Usage: value(max), Request: value(max), Quota: value(max)}
		if rng.IntN(3) == 0 {
			e := value(max)
			r.Effective = &e
		}
		return r
	}
	const windows = 20000
	multiDay := 0
	for i := range windows {
		var start time.Time
		if i%4 == 0 {
			start = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(4*365*86400)) * time.Second)
		} else {
			start = edges[rng.IntN(len(edges))].Add(time.Duration(rng.Int64N(2*86400)-86400) * time.Second)
		}
		length := time.Duration(1+rng.Int64N(int64(sample.MaxWindow/time.Second))) * time.Second
		if rng.IntN(4) == 0 {
			length = sample.MaxWindow
		}
		s := sample.Sample{
			Cluster: "c", Project: "p", Namespace: "n", Start: start, End: start.Add(length),
			CPU: resources(sample.MaxCores), Memory: resources(1 << 40), Storage: resources(1 << 44),
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("window %d: generated an invalid sample: %v", i, err)
		}
		loc := zones[i%len(zones)]
		got := cut(&s, loc)
		want := map[rollup.Day]rollup.Values{}
		for _, p := range rollup.Split(&s, loc) {
			if _, dup := want[p.Day]; dup {
				t.Fatalf("window %d: Split gave %s twice", i, p.Day)
			}
			want[p.Day] = p.Values
		}
		if len(want) > 1 {
			multiDay++
		}
		if !maps.Equal(got, want) {
			t.Fatalf("window %d, %s to %s in %s:\nledger %v\nsplit  %v", i, s.Start.In(loc), s.End.In(loc), loc, got, want)
		}
	}
	if multiDay < windows/4 {
		t.Fatalf("only %d of %d windows crossed a day: the test proves little about cutting", multiDay, windows)
	}
}
