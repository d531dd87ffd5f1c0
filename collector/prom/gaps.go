package prom

import (
	"context"
	"time"

	"github.com/alauda/costmeter/internal/rollup"
)

// CoverageReader reads clusters' coverage from the store; rollup.Reader
// has it.
type CoverageReader interface {
	ClusterCoverage(ctx context.Context, first, last rollup.Day, cluster string) ([]rollup.ClusterDay, error)
}

// StoreGaps answers Gaps from the store: the coverage the aggregator keeps
// per cluster and billing day, in the billing zone loc (the zone recorded
// in the store).
type StoreGaps struct {
	r   CoverageReader
	loc *time.Location
}

// NewStoreGaps returns Gaps reading r in the billing zone loc.
func NewStoreGaps(r CoverageReader, loc *time.Location) *StoreGaps {
	return &StoreGaps{r: r, loc: loc}
}

// Covered implements Gaps.
func (g *StoreGaps) Covered(ctx context.Context, cluster string, from, to time.Time) ([]Interval, error) {
	if !to.After(from) {
		return nil, nil
	}
	days, err := g.r.ClusterCoverage(ctx, rollup.DayOf(from, g.loc), rollup.DayOf(to.Add(-time.Second), g.loc), cluster)
	if err != nil {
		return nil, err
	}
	var out []Interval
	for _, d := range days {
		start := d.Day.Start(g.loc)
		for _, s := range d.Spans {
			out = append(out, Interval{Start: start.Add(time.Duration(s.From) * time.Second), End: start.Add(time.Duration(s.To) * time.Second)})
		}
	}
	return out, nil
}
