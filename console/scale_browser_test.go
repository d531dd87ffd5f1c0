package console_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// The scale data: scaleProjects projects of one namespace each, spread
// over scaleClusters clusters, with a whole-day window every other day
// from scaleLead days before the view until yesterday. The view is the
// twelve whole months before this one, by day: 300 × 365 / 2 project
// rows, 2.7 times what the console once summed (it stopped at 20,000 rows
// without saying so). Whole months read from month indexes, so that a
// busy machine under the race detector stays within the API's 10 s a
// page.
const (
	scaleProjects = 300
	scaleClusters = 3
	scaleLead     = 15
	oldCap        = 20000
)

// scaleCores is project i's CPU on day d (days from the first), in cores:
// a multiple of 1/8, so that every day's core-hours (24 × cores) and
// every sum of them are exact in float64, and distinct enough per project
// that the top 10 is not the first 10 by name.
func scaleCores(i, d int) float64 {
	return float64((i*37)%scaleProjects+1+d%5) / 8
}

// scaleActive tells whether project i has usage on day d: every other
// day, half the projects on even days and half on odd ones.
func scaleActive(i, d int) bool { return (i+d)%2 == 0 }

// scaleName names project i and its cluster.
func scaleName(i int) (project, cluster string) {
	return fmt.Sprintf("p%03d", i), fmt.Sprintf("c%d", i%scaleClusters)
}

// TestConsoleAtScale: with 300 projects over a year, the view "a year,
// by day" shows the total, the cost and the chart's "others" that the
// known data and the API give, and at phone width the chart stays on the
// screen.
func TestConsoleAtScale(t *testing.T) {
	s := startServers(t, false) // no live view: the range ends yesterday
	now := time.Now().UTC()
	began := now
	s.today = now.Truncate(24 * time.Hour)
	start := time.Date(s.today.Year(), s.today.Month()-12, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(s.today.Year(), s.today.Month(), 0, 0, 0, 0, 0, time.UTC)
	viewDays := int(end.Sub(start).Hours()/24) + 1
	first := start.AddDate(0, 0, -scaleLead)
	scaleDays := int(s.today.Sub(first).Hours() / 24)
	// One message per cluster and day, as collectors send them: a batch
	// of one day is the aggregator's fast path.
	for d := range scaleDays {
		from := first.AddDate(0, 0, d)
		batches := make([][]sample.Sample, scaleClusters)
		for i := range scaleProjects {
			if !scaleActive(i, d) {
				continue
			}
			project, cluster := scaleName(i)
			c := scaleCores(i, d)
			batches[i%scaleClusters] = append(batches[i%scaleClusters], sample.Sample{
				Cluster: cluster, Project: project, Namespace: project + "-app", Start: from, End: from.AddDate(0, 0, 1),
				CPU: sample.Resources{Usage: c, Request: c / 2, Quota: 64},
			})
		}
		for _, batch := range batches {
			s.publish(t, batch[0].Cluster, batch)
		}
	}
	testenv.Eventually(t, 5*time.Minute, "scale data applied", func() (bool, string) {
		return pipelinetest.Drained(s.js)
	})
	t.Logf("%d samples applied in %v", scaleProjects*scaleDays/2, time.Since(began).Round(time.Millisecond))

	// The known data's sums over a range: usage in core-hours, and cost at
	// the stack's prices (0.25 a core-hour, 0.5 from ten days ago).
	priceFrom := time.Now().UTC().AddDate(0, 0, -10).Truncate(24 * time.Hour)
	model := func(start, end time.Time) (usage, cost float64) {
		for i := range scaleProjects {
			for d := range scaleDays {
				day := first.AddDate(0, 0, d)
				if !scaleActive(i, d) || day.Before(start) || day.After(end) {
					continue
				}
				h := scaleCores(i, d) * 24
				usage += h
				if day.Before(priceFrom) {
					cost += h * 0.25
				} else {
					cost += h * 0.5
				}
			}
		}
		return usage, cost
	}
	// The API's sums over a range, from each project's rows of step.
	apiSums := func(start, end time.Time, step string) (usage, cost float64) {
		q := url.Values{"start": {start.Format(time.DateOnly)}, "end": {end.Format(time.DateOnly)}, "kind": {"project_all"}, "step": {step}}
		for _, r := range s.rows(t, "", q) {
			usage += r.Usage
			cost += *r.Cost
		}
		return usage, cost
	}

	prevStart, prevEnd := start.AddDate(0, 0, -viewDays), start.AddDate(0, 0, -1)
	wantUsage, wantCost := model(start, end)
	wantPrev, _ := model(prevStart, prevEnd)
	apiUsage, apiCost := apiSums(start, end, "month")
	apiPrev, _ := apiSums(prevStart, prevEnd, "day") // not whole months
	if apiUsage != wantUsage || apiCost != wantCost || apiPrev != wantPrev || wantPrev == 0 {
		t.Fatalf("the API's sums %v core-hours, %v CNY (previous %v), the known data's %v, %v (previous %v)", apiUsage, apiCost, apiPrev, wantUsage, wantCost, wantPrev)
	}
	// The test proves nothing unless the view has more project rows than
	// the console once read.
	code, body := s.get(t, adminToken, usagePath(""), url.Values{
		"start": {start.Format(time.DateOnly)}, "end": {end.Format(time.DateOnly)}, "kind": {"project_all"}, "step": {"day"}, "pageSize": {"1"},
	})
	if n := pageTotal(t, code, body); n != scaleProjects*viewDays/2 || n <= 2*oldCap {
		t.Fatalf("the view has %d project rows, want %d, more than twice the %d the console once read: the test proves nothing", n, scaleProjects*viewDays/2, oldCap)
	}

	view := fmt.Sprintf("%s/console/?agg=project&item=Cpu&method=Effective&step=day&range=custom&start=%s&end=%s",
		s.base, start.Format(time.DateOnly), end.Format(time.DateOnly))
	b := newBrowser(t)
	b.do(chromedp.Navigate(view)) // not today: no watch, which needs the events this stack has not
	b.signIn(adminToken)
	b.waitLoad(0)
	for _, p := range b.takeProblems() { // the 401 that led to the prompt
		if !strings.Contains(p, "401") {
			t.Fatalf("unexpected problem during sign-in: %s", p)
		}
	}

	step(t, "a year of 300 projects: the tiles are the API's sums", func(t *testing.T) {
		b.t = t
		b.navigate(view)
		tile := func(id string) float64 {
			return eval[float64](b, fmt.Sprintf(`Number(document.getElementById(%q).dataset.value)`, id))
		}
		total, cost, prev := tile("tile-total"), tile("tile-cost"), tile("tile-previous")
		v := b.readView()
		if total != wantUsage || cost != wantCost || v.Total != wantUsage || prev != wantPrev {
			t.Fatalf("tiles: total %v core-hours, cost %v, previous %v; table total %v. The API's and the known data's: %v, %v, previous %v",
				total, cost, prev, v.Total, wantUsage, wantCost, wantPrev)
		}
		if n := eval[int](b, `document.querySelectorAll('.partial').length`); n != 0 {
			t.Fatalf("%d sums marked partial, none are", n)
		}
		checkScaleChart(t, v, first, scaleDays, start, end)
		b.clean("scale")
	})

	step(t, "totals come from the clusters' rows; a capped read says so", func(t *testing.T) {
		b.t = t
		// The platform's totals query: cluster_all, 3 rows a day.
		got := eval[string](b, `import('/console/totals.js').then((m) => JSON.stringify([
		  m.totalsQuery({project: '', name: ''}, {kind: 'project_all', name: ''}),
		  m.totalsQuery({project: 'p001', name: ''}, {kind: 'namespace_all', name: ''}),
		  m.totalsQuery({project: '', name: 'p001-app'}, {kind: 'namespace', name: 'p001-app'}),
		]))`)
		if want := `[{"kind":"cluster_all","name":""},{"kind":"project_all","name":""},{"kind":"namespace","name":"p001-app"}]`; got != want {
			t.Fatalf("totals queries %s, want %s", got, want)
		}
		// A read stopped at max tells so.
		got = eval[string](b, fmt.Sprintf(`import('/console/api.js').then(async (m) => {
		  const q = {start: %q, end: %q, kind: 'project_all', step: 'day', item: 'Cpu', method: 'Effective'};
		  const some = await m.allRows('', q, undefined, 1500);
		  const all = await m.allRows('', {...q, kind: 'cluster_all'});
		  return JSON.stringify([some.rows.length, some.total, some.capped, all.rows.length, all.total, all.capped]);
		})`, start.Format(time.DateOnly), end.Format(time.DateOnly)))
		if want := fmt.Sprintf("[1500,%d,true,%d,%d,false]", scaleProjects*viewDays/2, scaleClusters*viewDays, scaleClusters*viewDays); got != want {
			t.Fatalf("allRows: %s, want %s", got, want)
		}
		// Partial sums are marked on the tiles, the totals row and the
		// clusters' list.
		got = eval[string](b, `Promise.all([import('/console/views/tiles.js'), import('/console/views/table.js'), import('/console/views/breakdown.js')]).then(([tl, tb, bd]) => {
		  const tiles = document.createElement('div');
		  tl.renderTiles(tiles, {item: 'Cpu', method: 'Effective', total: 5, previous: 4, prevRange: ['2025-01-01', '2025-01-31'],
		    rangeLabel: 'x', top: null, aggLabel: 'project', cost: 2, priced: true, currency: 'CNY', partial: true, prevPartial: true});
		  const table = document.createElement('div');
		  new tb.Table(table, () => {}, () => {}, () => {}).show({state: {page: 1, size: 20, order: 'name', agg: 'project', item: 'Cpu', project: ''},
		    page: {total: 0, items: []}, total: 5, cost: null, currency: 'CNY', csvHref: '', incomplete: null, partial: true});
		  const list = document.createElement('div');
		  bd.renderBreakdown(list, [{name: 'east', usage: 1, row: {}}], 'Cpu', () => {}, true);
		  return JSON.stringify([...tiles.querySelectorAll('.partial')].map((e) => e.closest('.tile').id)
		    .concat(table.querySelectorAll('tfoot .partial').length, list.querySelectorAll('.partial').length));
		})`)
		if want := `["tile-total","tile-previous","tile-cost",1,1]`; got != want {
			t.Fatalf("partial marks %s, want %s", got, want)
		}
		b.clean("totals")
	})

	step(t, "at 390 px the chart is within the screen", func(t *testing.T) {
		b.t = t
		// A screen turned narrow under a drawn chart, then a page opened
		// narrow.
		b.do(chromedp.EmulateViewport(390, 844))
		testenv.Eventually(t, 10*time.Second, "the chart fits 390 px after the resize", func() (bool, string) {
			p := chartFit(b, 390)
			return p == "", p
		})
		b.navigate(view)
		b.chartDrawn()
		b.screenshot("console-phone-year.png")
		if p := chartFit(b, 390); p != "" {
			t.Fatal(p)
		}
		b.clean("phone")
	})
}

// checkScaleChart compares the chart with the known data, ranked by the
// test itself: the 10 projects of largest total over start..end (ties by
// name), one bar a day each, and "others" each day's total minus theirs.
func checkScaleChart(t *testing.T, v view, first time.Time, scaleDays int, start, end time.Time) {
	t.Helper()
	type ranked struct {
		i     int
		total float64
	}
	var all []ranked
	for i := range scaleProjects {
		r := ranked{i: i}
		for d := range scaleDays {
			if day := first.AddDate(0, 0, d); scaleActive(i, d) && !day.Before(start) && !day.After(end) {
				r.total += scaleCores(i, d) * 24
			}
		}
		all = append(all, r)
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].total > all[b].total })
	days := int(end.Sub(start).Hours()/24) + 1
	offset := int(start.Sub(first).Hours() / 24)
	others := make([]float64, days)
	for k := range days {
		for i := range scaleProjects {
			if scaleActive(i, offset+k) {
				others[k] += scaleCores(i, offset+k) * 24
			}
		}
	}
	var want []series
	for _, r := range all[:10] {
		project, _ := scaleName(r.i)
		data := make([]float64, days)
		for k := range days {
			if scaleActive(r.i, offset+k) {
				data[k] = scaleCores(r.i, offset+k) * 24
				others[k] -= data[k]
			}
		}
		want = append(want, series{ID: project + "//", Data: data})
	}
	want = append(want, series{ID: "__others", Data: others})
	if len(v.XAxis) != days || v.XAxis[0] != start.Format(time.DateOnly) || v.XAxis[days-1] != end.Format(time.DateOnly) {
		t.Fatalf("the chart's days: %d from %v, want %d from %s to %s", len(v.XAxis), v.XAxis[:1], days, start.Format(time.DateOnly), end.Format(time.DateOnly))
	}
	if len(v.Series) != len(want) {
		t.Fatalf("the chart has %d series, the known data %d", len(v.Series), len(want))
	}
	for i := range want {
		if v.Series[i].ID != want[i].ID || !sameFloats(v.Series[i].Data, want[i].Data) {
			t.Fatalf("series %d = %s %v, the known data's %s %v", i, v.Series[i].ID, v.Series[i].Data, want[i].ID, want[i].Data)
		}
	}
}

// chartFit tells how the chart does not fit a screen width px wide: its
// element, its drawing surface, its grid or the last bucket's bar
// outside the viewport, or the page wider than the screen; "" when it
// fits.
func chartFit(b *browser, width float64) string {
	b.t.Helper()
	var m struct {
		Viewport, Scroll     float64
		Left, Right          float64 // the chart element, page pixels
		GridLeft, GridRight  float64 // the grid, chart pixels
		LastLeft, LastRight  float64 // the last bar, chart pixels
		Canvas, Buckets, Bar float64
	}
	js := `(() => {
	  const el = document.getElementById('chart');
	  const c = echarts.getInstanceByDom(el);
	  const r = el.getBoundingClientRect();
	  const g = c.getModel().getComponent('grid').coordinateSystem.getRect();
	  const n = c.getOption().xAxis[0].data.length;
	  let last = [Infinity, -Infinity];
	  c.getModel().eachSeries((s) => {
	    const l = s.getData().getItemLayout(n - 1);
	    if (l) last = [Math.min(last[0], l.x, l.x + l.width), Math.max(last[1], l.x, l.x + l.width)];
	  });
	  return JSON.stringify({
	    viewport: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,
	    left: r.left, right: r.right, gridLeft: g.x, gridRight: g.x + g.width,
	    lastLeft: last[0], lastRight: last[1], canvas: el.querySelector('canvas').getBoundingClientRect().right, buckets: n,
	    bar: last[1] - last[0],
	  });
	})()`
	if err := json.Unmarshal([]byte(eval[string](b, js)), &m); err != nil {
		b.t.Fatal(err)
	}
	where := fmt.Sprintf("viewport %v px (page %v), chart %v..%v (canvas to %v), grid %v..%v, last bar %v..%v of %v buckets",
		m.Viewport, m.Scroll, m.Left, m.Right, m.Canvas, m.GridLeft, m.GridRight, m.LastLeft, m.LastRight, m.Buckets)
	switch {
	case m.Viewport != width:
		return fmt.Sprintf("the viewport is not %v px wide: %s", width, where)
	case m.Scroll > m.Viewport:
		return "the page is wider than the screen: " + where
	case m.Left < 0 || m.Right > m.Viewport || m.Canvas > m.Viewport:
		return "the chart runs off the screen: " + where
	case m.Bar <= 0 || m.Buckets < 2:
		return "no last bar drawn: " + where
	// A bar is at least a pixel wide: in a band narrower than that (365
	// days in 250 px) the last bar, centred on its band, may pass the
	// grid's end by less than half a pixel, never more.
	case m.LastLeft < m.GridLeft-0.5 || m.LastRight > m.GridRight+0.5 || m.Left+m.LastRight > m.Viewport:
		return "the last bar is outside the grid or the screen: " + where
	}
	return ""
}

func pageTotal(t *testing.T, code int, body []byte) int {
	t.Helper()
	var r struct{ Total int }
	if code != 200 {
		t.Fatalf("usage: %d %s", code, body)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	return r.Total
}
