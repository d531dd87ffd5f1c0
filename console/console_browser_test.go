package console_test

import (
	"encoding/csv"
	"fmt"
	"maps"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestConsole drives the console in headless Chromium against a real stack
// (embedded NATS, a redis-server child, the aggregator, the API with
// --auth token) loaded with known data. One browser and one stack for
// every step, in order: sign-in, chart against the API, every control,
// reload and back, CSV, drill-down, a live change, then a project token.
func TestConsole(t *testing.T) {
	s := startStack(t)
	b := newBrowser(t)
	home := s.base + "/"

	step(t, "401 asks for a token; a bad one is refused", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(home))
		waitTrue(b, `document.getElementById('login').open`, "sign-in dialog")
		b.screenshot("console-signin.png")
		b.signIn("not-a-token")
		waitTrue(b, `document.getElementById('login').open && document.getElementById('login-msg').textContent.includes('refused')`, "refusal shown")
		before := b.loads()
		b.signIn(adminToken)
		b.waitLoad(before)
		if got := eval[string](b, `document.getElementById('scope').textContent`); !strings.Contains(got, "admin") || !strings.Contains(got, "platform") {
			t.Fatalf("scope shown %q, want admin · platform", got)
		}
		// The only problems: the 401s that led to the prompt.
		for _, p := range b.takeProblems() {
			if !strings.Contains(p, "401") {
				t.Fatalf("unexpected problem during sign-in: %s", p)
			}
		}
	})

	step(t, "first meaningful paint", func(t *testing.T) {
		b.t = t
		b.navigate(home) // the token stays in session storage
		ms := eval[float64](b, `performance.getEntriesByName('costmeter:first-paint')[0]?.startTime ?? -1`)
		if ms < 0 {
			t.Fatal("no costmeter:first-paint mark")
		}
		t.Logf("first meaningful paint: %.0f ms", ms)
		fmt.Fprintf(os.Stderr, "console first meaningful paint: %.0f ms (navigation start to the first chart and table)\n", ms)
		b.clean("load")
	})

	step(t, "the chart's option is a pure function of API rows", func(t *testing.T) {
		b.t = t
		got := eval[string](b, `import('/console/chartoption.js').then((m) => JSON.stringify(m.chartOption({
		  item: 'Cpu', top: 2,
		  rows: [
		    {project: 'a', cluster: '', namespace: '', usage: 5, start: '20250601', end: '20250601'},
		    {project: 'a', cluster: '', namespace: '', usage: 7, start: '20250602', end: '20250602'},
		    {project: 'b', cluster: '', namespace: '', usage: 4, start: '20250602', end: '20250602'},
		    {project: 'c', cluster: '', namespace: '', usage: 1, start: '20250601', end: '20250601'},
		  ],
		  totals: [{start: '20250601', end: '20250601', usage: 6.5}, {start: '20250602', end: '20250602', usage: 11}],
		}).series.map((s) => [s.id, s.name, s.data])))`)
		want := `[["a//","a",[5,7]],["b//","b",[0,4]],["__others","others",[1.5,0]]]`
		if got != want {
			t.Fatalf("series %s, want %s", got, want)
		}
	})

	step(t, "chart equals the API", func(t *testing.T) {
		b.t = t
		v := b.readView()
		q := v.query()
		if q.Get("agg") != "project" || q.Get("range") != "this-month" || q.Get("item") != "Cpu" || q.Get("method") != "Effective" || q.Get("step") != "day" {
			t.Fatalf("default view %s, want this month by project, Cpu, Effective, by day", v.Search)
		}
		s.checkChart(t, b, v)
		// The cost tile: the API's costs of the period (two prices, the
		// second from ten days ago).
		var cost float64
		for _, r := range s.rows(t, "", url.Values{"start": {v.Ctl["ctl-start"]}, "end": {v.Ctl["ctl-end"]}, "kind": {"project_all"}, "step": {"day"}}) {
			if r.Cost == nil {
				t.Fatalf("row without cost: %+v", r)
			}
			cost += *r.Cost
		}
		got := eval[float64](b, `Number(document.getElementById('tile-cost').dataset.value)`)
		text := eval[string](b, `document.getElementById('tile-cost').textContent`)
		if cost == 0 || !near(got, cost) || !strings.Contains(text, "CN¥") {
			t.Fatalf("cost tile %v %q, the API's cost %v CNY", got, text, cost)
		}
		b.chartDrawn()
		if n := eval[int](b, `(() => {
			const c = document.querySelector('#chart canvas');
			const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
			const colors = new Set();
			for (let i = 0; i < d.length; i += 16) if (d[i + 3] > 0) colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
			return colors.size;
		})()`); n < 8 {
			t.Fatalf("the chart's canvas has %d colours: blank", n)
		}
		b.screenshot("console-overview.png")
		b.clean("chart")
	})

	step(t, "incomplete days: read from the coverage route, marked in the table", func(t *testing.T) {
		b.t = t
		// Only today is partly counted (up to split), in both clusters.
		got := eval[string](b, fmt.Sprintf(`import('/console/api.js').then(async (m) => JSON.stringify([...(await m.incompleteDays('%s', '%s', '')).entries()]))`,
			s.today.AddDate(0, 0, -5).Format(time.DateOnly), s.today.Format(time.DateOnly)))
		ratio := math.Round(s.split.Sub(s.today).Seconds()/86400*1e6) / 1e6
		want := fmt.Sprintf(`[["%s",[{"cluster":"east","ratio":%v},{"cluster":"west","ratio":%v}]]]`, s.today.Format("20060102"), ratio, ratio)
		if got != want {
			t.Fatalf("incomplete days %s, want %s", got, want)
		}
		// A daily row is marked when its own cluster (any, for rows without
		// one) missed part of the day; the cell's text stays the date.
		got = eval[string](b, `import('/console/views/table.js').then((m) => {
		  const root = document.createElement('div');
		  const tb = new m.Table(root, () => {}, () => {}, () => {});
		  const row = (cluster, day) => ({project: 'alpha', cluster, namespace: '', usage: 1, start: day, end: day});
		  tb.show({state: {page: 1, size: 20, order: 'name', agg: 'cluster', item: 'Cpu', project: 'alpha'},
		    page: {total: 4, items: [row('east', '20250601'), row('west', '20250601'), row('west', '20250602'), {...row('west', '20250601'), end: '20250607'}]},
		    total: 4, cost: null, currency: 'CNY', csvHref: '',
		    incomplete: new Map([['20250601', [{cluster: 'west', ratio: 0.5}]]])});
		  return JSON.stringify([...root.querySelectorAll('td.incomplete')].map((c) => [c.textContent, c.title]));
		})`)
		if want := `[["2025-06-01","Incomplete day: counted west 50.0% of the day"]]`; got != want {
			t.Fatalf("marked cells %s, want %s", got, want)
		}
	})

	step(t, "every control changes the URL and the data; reload and back restore", func(t *testing.T) {
		b.t = t
		today := s.today
		views := []view{b.readView()}
		for _, c := range []struct {
			id, value, param, want string
		}{
			{"ctl-range", "last-30", "range", "last-30"},
			{"ctl-item", "Memory", "item", "Memory"},
			{"ctl-method", "Request", "method", "Request"},
			{"ctl-step", "week", "step", "week"},
			{"ctl-agg", "namespace", "agg", "namespace"},
			{"ctl-order", "usage", "order", "usage"},
			{"ctl-size", "50", "size", "50"},
			{"page-next", "", "page", "2"},
			{"ctl-start", today.AddDate(0, 0, -20).Format(time.DateOnly), "start", today.AddDate(0, 0, -20).Format(time.DateOnly)},
			{"ctl-end", today.AddDate(0, 0, -3).Format(time.DateOnly), "end", today.AddDate(0, 0, -3).Format(time.DateOnly)},
			{"ctl-name", "alpha-db", "name", "alpha-db"},
		} {
			if c.value == "" {
				b.click(c.id)
			} else {
				b.setControl(c.id, c.value)
			}
			v := b.readView()
			prev := views[len(views)-1]
			if got := v.query().Get(c.param); got != c.want || v.Search == prev.Search {
				t.Fatalf("%s=%s: URL %s, want %s=%s", c.id, c.value, v.Search, c.param, c.want)
			}
			if sameData(v, prev) {
				t.Fatalf("%s=%s: the chart and table did not change", c.id, c.value)
			}
			if c.id == "ctl-agg" {
				s.checkChart(t, b, v) // 14 namespaces: the top 10 and others
			}
			views = append(views, v)
		}
		last := views[len(views)-1]
		if q := last.query(); q.Get("range") != "custom" {
			t.Fatalf("editing the dates did not choose a custom range: %s", last.Search)
		}
		for _, row := range last.Table {
			if !strings.Contains(strings.Join(row, " "), "alpha-db") {
				t.Fatalf("kind=namespace name=alpha-db shows row %v", row)
			}
		}
		s.checkChart(t, b, last)

		b.navigate(b.url())
		if got := b.readView(); !sameData(got, last) || got.Search != last.Search || fmt.Sprint(got.Ctl) != fmt.Sprint(last.Ctl) {
			t.Fatalf("reload did not restore the view:\n got %s %v\nwant %s %v", got.Search, got.Ctl, last.Search, last.Ctl)
		}
		prev := b.loads()
		eval[bool](b, `(history.back(), true)`)
		b.waitLoad(prev)
		if got, want := b.readView(), views[len(views)-2]; got.Search != want.Search || !sameData(got, want) {
			t.Fatalf("back: %s, want %s", got.Search, want.Search)
		}
		b.clean("controls")
	})

	step(t, "the CSV link returns the rows shown", func(t *testing.T) {
		b.t = t
		b.navigate(s.base + "/console/?agg=namespace&item=Cpu&method=Usage&step=week&range=last-30&order=usage&size=20&page=1")
		v := b.readView()
		href := eval[string](b, `document.getElementById('csv').href`)
		u, err := url.Parse(href)
		if err != nil {
			t.Fatal(err)
		}
		code, body := s.get(t, adminToken, u.Path, u.Query())
		if code != 200 {
			t.Fatalf("CSV link %s: %d %s", href, code, body)
		}
		recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		total, _ := strconv.Atoi(strings.Fields(strings.SplitN(v.Info, "·", 2)[1])[0])
		if len(recs)-1 != total || total < len(v.Table) {
			t.Fatalf("CSV has %d rows, the page says %q", len(recs)-1, v.Info)
		}
		for i, row := range v.Table {
			r := recs[i+1] // project, cluster, namespace, item, method, usage, currency, start, end
			usage, _ := strconv.ParseFloat(r[5], 64)
			if row[0] != r[0] || row[1] != r[2] || row[2] != r[1] || !near(v.Exact[i], usage) {
				t.Fatalf("row %d shown %v (%v), CSV %v", i, row, v.Exact[i], r)
			}
		}
		b.clean("csv")
	})

	step(t, "drill-down: project, its namespaces and clusters, a namespace's days", func(t *testing.T) {
		b.t = t
		b.navigate(s.base + "/console/?agg=project&range=last-30&step=week")
		b.clickText("#rows button.link", "alpha")
		v := b.readView()
		if q := v.query(); q.Get("project") != "alpha" || q.Get("agg") != "namespace" {
			t.Fatalf("clicking alpha: %s", v.Search)
		}
		for _, row := range v.Table {
			if !strings.HasPrefix(row[0], "alpha-") {
				t.Fatalf("alpha's namespaces show %v", row)
			}
		}
		clusters := eval[string](b, `document.getElementById('clusters-card').hidden ? '' : document.getElementById('clusters').textContent`)
		if !strings.Contains(clusters, "east") || !strings.Contains(clusters, "west") {
			t.Fatalf("alpha's clusters: %q", clusters)
		}
		b.screenshot("console-project.png")
		b.clickText("#rows button.link", "alpha-web")
		v = b.readView()
		if q := v.query(); q.Get("project") != "alpha" || q.Get("name") != "alpha-web" || q.Get("step") != "day" {
			t.Fatalf("clicking alpha-web: %s", v.Search)
		}
		if len(v.Table) != 20 || !strings.Contains(v.Info, "30 rows") {
			t.Fatalf("alpha-web's 30 days: %q, %d rows shown", v.Info, len(v.Table))
		}
		for _, row := range v.Table {
			if row[0] != "alpha-web" {
				t.Fatalf("alpha-web's days show %v", row)
			}
		}
		s.checkChart(t, b, v)
		b.screenshot("console-namespace.png")
		b.clean("drill-down")
	})

	step(t, "a new sample for today appears without a reload", func(t *testing.T) {
		b.t = t
		b.navigate(home)
		waitTrue(b, `document.getElementById('live').dataset.status === 'live'`, "live stream open")
		eval[bool](b, `(window.__sameDocument = true)`)
		before := b.readView().Total
		i := 0 // alpha-web
		end := s.split.Add(time.Duration(time.Now().UTC().Sub(s.split).Seconds()/2) * time.Second)
		if !end.After(s.split) {
			end = s.split.Add(time.Second)
		}
		s.publish(t, namespaces[i].cluster, []sample.Sample{s.sample(i, s.split, end, 500)})
		var want float64
		testenv.Eventually(t, 10*time.Second, "the API counts the new sample", func() (bool, string) {
			want = 0
			q := url.Values{"start": {s.today.Format("2006-01") + "-01"}, "end": {s.today.Format(time.DateOnly)}, "kind": {"project_all"}, "step": {"day"}}
			for _, r := range s.rows(t, "", q) {
				want += r.Usage
			}
			return !near(want, before), fmt.Sprintf("total %v", want)
		})
		testenv.Eventually(t, 10*time.Second, "the page shows the new total", func() (bool, string) {
			got := eval[float64](b, `Number(document.getElementById('total-usage').title)`)
			return near(got, want), fmt.Sprintf("page %v, API %v", got, want)
		})
		if !eval[bool](b, `window.__sameDocument === true`) {
			t.Fatal("the page reloaded")
		}
		b.clean("live")
	})

	step(t, "a project token sees only its project", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Click(chromedp.ID("signout")))
		waitTrue(b, `document.getElementById('login').open`, "sign-in dialog after signing out")
		b.signIn("still-not-a-token")
		waitTrue(b, `document.getElementById('login-msg').textContent.includes('refused')`, "bad token refused")
		before := b.loads()
		b.signIn(betaToken)
		b.waitLoad(before)
		b.takeProblems() // the 401s of signing out and of the bad token
		for _, u := range []string{b.url(), s.base + "/console/?project=alpha&agg=namespace", s.base + "/console/?agg=project"} {
			b.navigate(u)
			v := b.readView()
			if v.query().Get("project") != "beta" {
				t.Fatalf("%s: landed on %s, want project beta", u, v.Search)
			}
			if len(v.Table) == 0 {
				t.Fatalf("%s: beta's view is empty", u)
			}
			html := eval[string](b, `document.documentElement.outerHTML + JSON.stringify(echarts.getInstanceByDom(document.getElementById('chart')).getOption().series.map((s) => s.name))`)
			for _, ns := range namespaces {
				if ns.project == "beta" {
					continue
				}
				for _, name := range []string{ns.project, ns.namespace} {
					if strings.Contains(html, name) {
						t.Fatalf("%s: a beta token's page holds %q", u, name)
					}
				}
			}
			if got := eval[string](b, `document.getElementById('scope').textContent`); !strings.Contains(got, "project beta") {
				t.Fatalf("scope shown %q", got)
			}
			b.clean("project token " + u)
		}
		// The administrator takes beta away: the next load shows 403 as
		// such, not an empty chart.
		file := fmt.Sprintf("tokens:\n- name: beta-member\n  sha256: %q\n  projects: [gamma]\n", auth.HashToken(betaToken))
		if err := os.WriteFile(s.tokens, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "403 shown", func() (bool, string) {
			b.setControl("ctl-item", map[bool]string{true: "Memory", false: "Storage"}[eval[string](b, `document.getElementById('ctl-item').value`) != "Memory"])
			got := eval[string](b, `(document.getElementById('notice').hidden ? 'hidden ' : '') + (document.getElementById('main').hidden ? 'no-main ' : '') + document.getElementById('notice').textContent`)
			return strings.HasPrefix(got, "no-main 403 Forbidden"), got
		})
		for _, p := range b.takeProblems() {
			if !strings.Contains(p, "403") {
				t.Fatalf("unexpected problem: %s", p)
			}
		}
	})

	if os.Getenv(screenshotsEnv) != "" {
		b.t = t
		b.do(chromedp.EmulateViewport(390, 844))
		b.navigate(s.base + "/console/?agg=namespace&range=last-30")
		b.screenshot("console-phone.png")
	}
}

// step runs a subtest; the later ones build on it, so its failure ends the test.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// checkChart compares the chart's series with the API's answer for the
// view's query: the first 10 entities of orderBy=usage, and per bucket
// the scope's total minus theirs as "others".
func (s *stack) checkChart(t *testing.T, b *browser, v view) {
	t.Helper()
	q := v.query()
	project, agg, name := q.Get("project"), q.Get("agg"), q.Get("name")
	start, end := v.Ctl["ctl-start"], v.Ctl["ctl-end"]
	base := url.Values{"start": {start}, "end": {end}, "step": {q.Get("step")}, "item": {q.Get("item")}, "method": {q.Get("method")}}
	switch {
	case project != "" && agg == "project":
		base.Set("kind", "project_all")
	case name != "":
		base.Set("kind", agg)
		base.Set("name", name)
	default:
		base.Set("kind", agg+"_all")
	}
	ranked := url.Values{}
	for k, vs := range base {
		ranked[k] = vs
	}
	ranked.Set("orderBy", "usage")
	rows := s.rows(t, project, ranked)
	totals := map[string]float64{}
	var buckets []string
	scope := rows
	if name == "" {
		tq := url.Values{}
		for k, vs := range base {
			tq[k] = vs
		}
		tq.Set("kind", "project_all")
		tq.Del("name")
		scope = s.rows(t, project, tq)
	}
	for _, r := range scope {
		totals[r.Start] += r.Usage
	}
	buckets = slices.Sorted(maps.Keys(totals))
	index := map[string]int{}
	for i, k := range buckets {
		index[k] = i
	}
	var want []series
	seen := map[string]int{}
	for _, r := range rows {
		key := r.Project + "/" + r.Cluster + "/" + r.Namespace
		i, ok := seen[key]
		if !ok {
			if len(seen) == 10 {
				continue
			}
			i = len(want)
			seen[key] = i
			want = append(want, series{ID: key, Data: make([]float64, len(buckets))})
		}
		want[i].Data[index[r.Start]] += r.Usage
	}
	if name == "" {
		others := make([]float64, len(buckets))
		anyOther := false
		for i, k := range buckets {
			others[i] = totals[k]
			for _, w := range want {
				others[i] -= w.Data[i]
			}
			if others[i] < 1e-9 {
				others[i] = 0
			}
			anyOther = anyOther || others[i] > 0
		}
		if anyOther {
			want = append(want, series{ID: "__others", Data: others})
		}
	}
	if len(v.XAxis) != len(buckets) {
		t.Fatalf("%s: chart has %d buckets %v, the API %d %v", v.Search, len(v.XAxis), v.XAxis, len(buckets), buckets)
	}
	if len(v.Series) != len(want) {
		t.Fatalf("%s: chart has %d series, the API's answer %d", v.Search, len(v.Series), len(want))
	}
	for i := range want {
		if v.Series[i].ID != want[i].ID || !sameFloats(v.Series[i].Data, want[i].Data) {
			t.Fatalf("%s: series %d = %s %v, the API's %s %v", v.Search, i, v.Series[i].ID, v.Series[i].Data, want[i].ID, want[i].Data)
		}
	}
	if agg == "namespace" && name == "" && (len(want) != 11 || want[10].ID != "__others") {
		t.Fatalf("%s: 14 namespaces must give the top 10 and others, got %d series", v.Search, len(want))
	}
}
