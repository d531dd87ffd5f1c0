package testenv

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a /metrics handler, parsed from the Prometheus
// text format: metric families by name.
type Metrics map[string]*dto.MetricFamily

// Scrape GETs /metrics from h and parses the answer; it fails the test on
// anything but a 200 in the text format.
func Scrape(t testing.TB, h http.Handler) Metrics {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape /metrics: status %d: %s", rec.Code, rec.Body.String())
	}
	m, err := ParseMetrics(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ParseMetrics parses the Prometheus text format, as served on /metrics.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	return mfs, nil
}

// Value returns the value of the series of family name whose labels
// include every pair of labels (name, value, name, value…): a counter's or
// gauge's value, a histogram's sample count. It reports false when there is
// no such series; it sums when several match.
func (m Metrics) Value(name string, labels ...string) (float64, bool) {
	mf, ok := m[name]
	if !ok {
		return 0, false
	}
	var (
		sum   float64
		found bool
	)
	for _, s := range mf.GetMetric() {
		if !matches(s, labels) {
			continue
		}
		found = true
		switch {
		case s.Counter != nil:
			sum += s.GetCounter().GetValue()
		case s.Gauge != nil:
			sum += s.GetGauge().GetValue()
		case s.Histogram != nil:
			sum += float64(s.GetHistogram().GetSampleCount())
		case s.Untyped != nil:
			sum += s.GetUntyped().GetValue()
		}
	}
	return sum, found
}

// Series lists the label sets of family name, one "k=v,k=v" string per
// series, for failure messages.
func (m Metrics) Series(name string) []string {
	var out []string
	for _, s := range m[name].GetMetric() {
		kv := map[string]string{}
		for _, l := range s.GetLabel() {
			kv[l.GetName()] = l.GetValue()
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			parts = append(parts, k+"="+kv[k])
		}
		out = append(out, strings.Join(parts, ","))
	}
	return out
}

func matches(s *dto.Metric, labels []string) bool {
	if len(labels)%2 != 0 {
		return false // a pair without its value matches nothing
	}
	for i := 0; i < len(labels); i += 2 {
		ok := false
		for _, l := range s.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
