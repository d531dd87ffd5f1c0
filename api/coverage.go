package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
)

// CoveragePath is the completeness route (platform scope): per cluster and
// billing day, how much of the day was counted.
const CoveragePath = "/platform/cost.alauda.io/v1beta1/costs/coverage"

// CoverageRow is one cluster on one billing day.
type CoverageRow struct {
	Cluster string `json:"cluster"`
	// Day is the billing day, YYYYMMDD.
	Day string `json:"day"`
	// CoveredSeconds is how many seconds of the day at least one counted
	// sample of any namespace of the cluster covers (the union).
	CoveredSeconds int64 `json:"coveredSeconds"`
	// DaySeconds is the day's length in the billing zone: 86,400, or
	// 82,800 / 90,000 on the days clocks change.
	DaySeconds int64 `json:"daySeconds"`
	// Ratio is CoveredSeconds / DaySeconds, rounded to 6 decimals.
	Ratio float64 `json:"ratio"`
	// LastSampleEnd is the end of the latest counted window of the cluster
	// that overlaps the day, clipped to the day's end (RFC 3339, UTC).
	LastSampleEnd string `json:"lastSampleEnd"`
}

// CoverageResponse is one page of coverage rows.
type CoverageResponse struct {
	PageSize    int           `json:"pageSize"`
	CurrentPage int           `json:"currentPage"`
	Total       int           `json:"total"`
	Items       []CoverageRow `json:"items"`
}

// CoverageQuery is a parsed, valid coverage query.
type CoverageQuery struct {
	Start, End rollup.Day
	Cluster    string
	Page       int
	PageSize   int
}

// ParseCoverageQuery checks the coverage route's parameters with the usage
// route's rules (start, end, currentPage, pageSize) plus the optional
// cluster, and returns the first broken one as an error wrapping
// ErrBadParameter.
func ParseCoverageQuery(v url.Values) (CoverageQuery, error) {
	q := CoverageQuery{Page: 1, PageSize: DefaultPageSize}
	var err error
	if q.Start, q.End, err = parseRange(v); err != nil {
		return q, err
	}
	if name, ok := one(v, "cluster"); ok {
		if err := checkName("cluster", sample.NameCluster, name); err != nil {
			return q, err
		}
		q.Cluster = name
	}
	if q.Page, err = parseInt(v, "currentPage", 1, 1, MaxPage); err != nil {
		return q, err
	}
	if q.PageSize, err = parseInt(v, "pageSize", DefaultPageSize, 1, MaxPageSize); err != nil {
		return q, err
	}
	return q, nil
}

func (s *Server) serveCoverage(c *gin.Context) error {
	ctx := c.Request.Context()
	if err := authorize(ctx, ""); err != nil {
		return err
	}
	q, err := ParseCoverageQuery(c.Request.URL.Query())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	days, err := s.reader.ClusterCoverage(ctx, q.Start, q.End, q.Cluster)
	if err != nil {
		return fmt.Errorf("query coverage: %w", err)
	}
	resp := CoverageResponse{PageSize: q.PageSize, CurrentPage: q.Page, Total: len(days), Items: []CoverageRow{}}
	from := (q.Page - 1) * q.PageSize
	for i := from; i < len(days) && i < from+q.PageSize; i++ {
		resp.Items = append(resp.Items, s.coverageRow(days[i]))
	}
	c.JSON(http.StatusOK, resp)
	return nil
}

func (s *Server) coverageRow(d rollup.ClusterDay) CoverageRow {
	start := d.Day.Start(s.loc)
	daySecs := int64((d.Day + 1).Start(s.loc).Sub(start) / time.Second)
	covered := d.Covered()
	return CoverageRow{
		Cluster: d.Cluster, Day: d.Day.String(),
		CoveredSeconds: covered, DaySeconds: daySecs,
		Ratio:         math.Round(float64(covered)/float64(daySecs)*1e6) / 1e6,
		LastSampleEnd: start.Add(time.Duration(d.LastEnd()) * time.Second).UTC().Format(time.RFC3339),
	}
}

// coverageLookback is how many days back the coverage metrics look for a
// cluster's newest sample: a cluster silent for longer leaves them.
const coverageLookback = 35

// registerCoverageMetrics adds, per cluster, the end of its newest counted
// window (cost_cluster_last_sample_end_timestamp_seconds) and its covered
// ratio (cost_cluster_covered_ratio) of yesterday (covered / day seconds,
// final once late samples are in) and of today so far (covered / seconds
// elapsed since midnight), read from the store at each collection.
func (s *Server) registerCoverageMetrics(m metric.Meter) error {
	last, err := m.Float64ObservableGauge("cost.cluster.last_sample_end_timestamp", metric.WithUnit("s"),
		metric.WithDescription("End of the newest counted window of the cluster (Unix seconds)"))
	if err != nil {
		return fmt.Errorf("create last sample gauge: %w", err)
	}
	ratio, err := m.Float64ObservableGauge("cost.cluster.covered", metric.WithUnit("1"),
		metric.WithDescription("Part of the billing day (day=yesterday: whole day; day=today: so far) covered by counted samples of the cluster"))
	if err != nil {
		return fmt.Errorf("create covered ratio gauge: %w", err)
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		now := time.Now()
		if s.watch.now != nil {
			now = s.watch.now()
		}
		today := rollup.DayOf(now, s.loc)
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		days, err := s.reader.ClusterCoverage(ctx, today-coverageLookback+1, today, "")
		if err != nil {
			return fmt.Errorf("read coverage for metrics: %w", err)
		}
		newest := map[string]time.Time{}
		// A cluster seen in the lookback but silent yesterday or today
		// reports 0 for that day rather than nothing, so that an alert on
		// the ratio fires for it.
		yesterday, todays := map[string]float64{}, map[string]float64{}
		for _, d := range days {
			end := d.Day.Start(s.loc).Add(time.Duration(d.LastEnd()) * time.Second)
			if end.After(newest[d.Cluster]) {
				newest[d.Cluster] = end
			}
			yesterday[d.Cluster] += 0
			todays[d.Cluster] += 0
			switch d.Day {
			case today - 1:
				r := s.coverageRow(d)
				yesterday[d.Cluster] = float64(r.CoveredSeconds) / float64(r.DaySeconds)
			case today:
				elapsed := now.Sub(today.Start(s.loc)).Seconds()
				todays[d.Cluster] = min(float64(d.Covered())/max(elapsed, 1), 1)
			}
		}
		for c, t := range newest {
			cl := attribute.String("cluster", c)
			o.ObserveFloat64(last, float64(t.Unix()), metric.WithAttributes(cl))
			o.ObserveFloat64(ratio, yesterday[c], metric.WithAttributes(cl, attribute.String("day", "yesterday")))
			o.ObserveFloat64(ratio, todays[c], metric.WithAttributes(cl, attribute.String("day", "today")))
		}
		return nil
	}, last, ratio)
	if err != nil {
		return fmt.Errorf("register coverage metrics: %w", err)
	}
	return nil
}

// meterScope is the OTel instrumentation scope of the API's own meters.
const meterScope = "github.com/alauda/costmeter/api"
