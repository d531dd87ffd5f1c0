package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// cluster is a Redis Cluster of 3 masters and 3 replicas shared by the
// package's tests: every fixture is loaded into it as well, and every
// request to a fixture's server is answered from both and compared.
var cluster *testenv.RedisCluster

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	openapi3filter.RegisterBodyDecoder("text/event-stream", decodeEventStream)
	c, stop, err := testenv.StartRedisClusterForMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start redis cluster:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	stop()
	os.Exit(code)
}

// retention keeps 2024 and 2025 data alive whatever today is.
const retention = 20 * 365 * 24 * time.Hour

const gib = 1 << 30

// nsEntity is one namespace of the fixture. Project "team" and "team-a"
// share a prefix, "api" and "default" exist in several places, a cluster
// name holds a dot: the places where a prefix scan or a name index could
// leak.
var fixtureNamespaces = []rollup.Entity{
	{Project: "team", Cluster: "east", Namespace: "api"},
	{Project: "team", Cluster: "east.b", Namespace: "api"},
	{Project: "team", Cluster: "east", Namespace: "web"},
	{Project: "team-a", Cluster: "east", Namespace: "default"},
	{Project: "team-a", Cluster: "west", Namespace: "api-x"},
	{Project: "ops", Cluster: "west", Namespace: "default"},
	{Project: "ops", Cluster: "east.b", Namespace: "mon"},
	{Project: "ops", Cluster: "east", Namespace: "idle"},
}

// periods are the ranges samples are generated in: a leap day, a year
// end, and a month end.
var periods = [][2]string{
	{"2024-02-24T00:00:00Z", "2024-03-05T00:00:00Z"},
	{"2024-12-27T00:00:00Z", "2025-01-07T00:00:00Z"},
	{"2025-05-29T00:00:00Z", "2025-06-11T00:00:00Z"},
}

// fixture is Redis loaded through the real write path, and the expected
// usage computed from the same samples independently of rollup.Split.
type fixture struct {
	redis   *testenv.Redis
	rdb     *redis.Client
	store   *rollup.Store
	twin    *rollup.Store // the same data in the package's Redis Cluster
	samples []sample.Sample
	// hours[entity][day][field] in unit-hours.
	hours map[rollup.Entity]map[time.Time]*[rollup.Fields]float64
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	r := testenv.StartRedis(t)
	f := &fixture{redis: r, rdb: r.Client(), hours: map[rollup.Entity]map[time.Time]*[rollup.Fields]float64{}}
	var err error
	f.store, err = rollup.NewStore(f.rdb, time.UTC, retention)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.twin, err = rollup.NewStore(cluster.Client(), time.UTC, retention); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, e := range fixtureNamespaces {
		for _, p := range periods {
			from, _ := time.Parse(time.RFC3339, p[0])
			to, _ := time.Parse(time.RFC3339, p[1])
			for at := from.Add(time.Duration(rng.IntN(6*3600)) * time.Second); ; {
				length := time.Duration(600+rng.IntN(20*3600)) * time.Second
				end := at.Add(length)
				if end.After(to) {
					break
				}
				if e.Namespace != "idle" && rng.IntN(3) == 0 {
					at = end.Add(time.Duration(rng.IntN(30*3600)) * time.Second) // a gap: days without samples
					continue
				}
				s := sample.Sample{Cluster: e.Cluster, Project: e.Project, Namespace: e.Namespace, Start: at, End: end}
				if e.Namespace != "idle" { // idle: samples of zero still make rows
					s.CPU = sample.Resources{Usage: rng.Float64() * 8, Request: rng.Float64() * 8, Quota: 16}
					s.Memory = sample.Resources{Usage: rng.Float64() * 64 * gib, Request: 32 * gib, Quota: 128 * gib}
					eff := rng.Float64() * 100 * gib
					s.Storage = sample.Resources{Usage: rng.Float64() * 100 * gib, Request: 50 * gib, Quota: 200 * gib, Effective: &eff}
				}
				if err := s.Validate(); err != nil {
					t.Fatal(err)
				}
				f.samples = append(f.samples, s)
				at = end
			}
		}
	}
	f.apply(t, f.samples)
	return f
}

// apply writes samples through rollup.Split and Store.Apply and adds them
// to the expectation.
func (f *fixture) apply(t testing.TB, ss []sample.Sample) {
	t.Helper()
	var cs []rollup.Contribution
	for i := range ss {
		s := &ss[i]
		e := rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}
		for _, p := range rollup.Split(s, time.UTC) {
			cs = append(cs, rollup.Contribution{Entity: e, Piece: p})
		}
		f.expect(s)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	rng.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] }) // order must not matter
	for len(cs) > 0 {
		n := min(len(cs), 300)
		res, err := f.store.Apply(context.Background(), cs[:n], "test", nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.twin.Apply(context.Background(), cs[:n], "test", nil, false); err != nil {
			t.Fatal(err)
		}
		for _, x := range res.Verdicts {
			if x != rollup.Applied {
				t.Fatalf("verdict %c, want applied", x)
			}
		}
		cs = cs[n:]
	}
}

// expect adds a sample to the expected hours, cutting it at UTC midnights.
func (f *fixture) expect(s *sample.Sample) {
	e := rollup.Entity{Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}
	if f.hours[e] == nil {
		f.hours[e] = map[time.Time]*[rollup.Fields]float64{}
	}
	for t := s.Start; t.Before(s.End); {
		day := t.Truncate(24 * time.Hour)
		next := day.Add(24 * time.Hour)
		if next.After(s.End) {
			next = s.End
		}
		h := next.Sub(t).Hours()
		v := f.hours[e][day]
		if v == nil {
			v = new([rollup.Fields]float64)
			f.hours[e][day] = v
		}
		add := func(it rollup.Item, r sample.Resources, unit float64) {
			v[rollup.Field(it, rollup.Usage)] += r.Usage / unit * h
			v[rollup.Field(it, rollup.Request)] += r.Request / unit * h
			v[rollup.Field(it, rollup.ProjectQuota)] += r.Quota / unit * h
			eff := math.Max(r.Usage, r.Request)
			if r.Effective != nil {
				eff = *r.Effective
			}
			v[rollup.Field(it, rollup.Effective)] += eff / unit * h
		}
		add(rollup.Cpu, s.CPU, 1)
		add(rollup.Memory, s.Memory, gib)
		add(rollup.Storage, s.Storage, gib)
		t = next
	}
}

// want is a query as the model understands it.
type want struct {
	project    string // the project route's project, "" for the platform route
	kind, name string
	step       string
	start, end string
	item       rollup.Item
	method     rollup.Method
}

type modelRow struct {
	api.Row
	bucketStart time.Time
}

// rows computes the expected rows of q from the samples alone; prices, when
// set, is the price of a unit-hour on a cluster and day.
func (f *fixture) rows(q want, prices func(cluster string, day time.Time) float64) []api.Row {
	start, _ := time.Parse(time.DateOnly, q.start)
	end, _ := time.Parse(time.DateOnly, q.end)
	bucketOf := func(d time.Time) string {
		switch q.step {
		case "day":
			return d.Format(time.DateOnly)
		case "week":
			y, w := d.ISOWeek()
			return fmt.Sprintf("%d-W%02d", y, w)
		default:
			return d.Format("2006-01")
		}
	}
	// Clipped bucket bounds: the first and last day of the range with the
	// bucket's key.
	first, last := map[string]time.Time{}, map[string]time.Time{}
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		k := bucketOf(d)
		if _, ok := first[k]; !ok {
			first[k] = d
		}
		last[k] = d
	}
	field := rollup.Field(q.item, q.method)
	type key struct {
		bucket string
		e      rollup.Entity
	}
	acc := map[key]*modelRow{}
	for ns, days := range f.hours {
		if q.project != "" && ns.Project != q.project {
			continue
		}
		var e rollup.Entity
		switch q.kind {
		case "project", "project_all":
			e = rollup.Entity{Project: ns.Project}
			if q.kind == "project" && ns.Project != q.name {
				continue
			}
		case "cluster", "cluster_all":
			e = rollup.Entity{Cluster: ns.Cluster}
			if q.project != "" {
				e.Project = ns.Project
			}
			if q.kind == "cluster" && ns.Cluster != q.name {
				continue
			}
		default:
			e = ns
			if q.kind == "namespace" && ns.Namespace != q.name {
				continue
			}
		}
		for d, v := range days {
			if d.Before(start) || d.After(end) {
				continue
			}
			k := key{bucketOf(d), e}
			r := acc[k]
			if r == nil {
				r = &modelRow{bucketStart: first[k.bucket], Row: api.Row{
					Project: e.Project, Cluster: e.Cluster, Namespace: e.Namespace,
					Item: q.item.String(), Method: q.method.String(), Currency: "CNY",
					Start: first[k.bucket].Format("20060102"), End: last[k.bucket].Format("20060102"),
				}}
				if prices != nil {
					r.Cost = new(float64)
				}
				acc[k] = r
			}
			r.Usage += v[field]
			if prices != nil {
				*r.Cost += v[field] * prices(ns.Cluster, d)
			}
		}
	}
	list := make([]*modelRow, 0, len(acc))
	for _, r := range acc {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if !a.bucketStart.Equal(b.bucketStart) {
			return a.bucketStart.Before(b.bucketStart)
		}
		if a.Project != b.Project {
			return a.Project < b.Project
		}
		if a.Cluster != b.Cluster {
			return a.Cluster < b.Cluster
		}
		return a.Namespace < b.Namespace
	})
	out := make([]api.Row, len(list))
	for i, r := range list {
		out[i] = r.Row
	}
	return out
}

func near(got, want float64) bool {
	return math.Abs(got-want) <= math.Max(1e-6*math.Abs(want), 0.001)
}

// server returns the API over f's single Redis, checking that every
// request gets the very same answer (status, headers that matter, body)
// from the same API over the fixture's twin in the Redis Cluster.
func (f *fixture) server(t testing.TB, opts ...api.Option) http.Handler {
	t.Helper()
	single := newServer(t, f.rdb, opts...)
	srv, err := api.New(api.DefaultConfig(), f.twin, time.UTC, opts...)
	if err != nil {
		t.Fatal(err)
	}
	twin := srv.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, b := httptest.NewRecorder(), httptest.NewRecorder()
		single.ServeHTTP(a, r.Clone(r.Context()))
		twin.ServeHTTP(b, r.Clone(r.Context()))
		if a.Code != b.Code || a.Body.String() != b.Body.String() || a.Header().Get("Content-Type") != b.Header().Get("Content-Type") {
			t.Errorf("%s: a single Redis answers %d %.300s; the Redis Cluster %d %.300s", r.URL, a.Code, a.Body, b.Code, b.Body)
		}
		for k, v := range a.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(a.Code)
		w.Write(a.Body.Bytes())
	})
}

// newServer returns the API over rdb, every answer checked against
// openapi.yaml (conform).
func newServer(t testing.TB, rdb redis.UniversalClient, opts ...api.Option) http.Handler {
	t.Helper()
	return conform(t, newEngine(t, rdb, opts...))
}

// newEngine returns the API's own handler over rdb, its Gin engine.
func newEngine(t testing.TB, rdb redis.UniversalClient, opts ...api.Option) *gin.Engine {
	t.Helper()
	srv, err := api.New(api.DefaultConfig(), rollup.NewReader(rdb), time.UTC, opts...)
	if err != nil {
		t.Fatal(err)
	}
	engine, ok := srv.Handler().(*gin.Engine)
	if !ok {
		t.Fatalf("handler is a %T, not a *gin.Engine", srv.Handler())
	}
	return engine
}

func usagePath(project string) string {
	if project == "" {
		return "/platform/cost.alauda.io/v1beta1/costs/usage"
	}
	return "/platform/cost.alauda.io/v1beta1/projects/" + project + "/costs/usage"
}

func get(h http.Handler, path string, q url.Values) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path+"?"+q.Encode(), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode(t testing.TB, rec *httptest.ResponseRecorder) api.Response {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var r api.Response
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	return r
}

func (q want) values() url.Values {
	v := url.Values{"start": {q.start}, "end": {q.end}, "step": {q.step}, "kind": {q.kind}, "item": {q.item.String()}, "method": {q.method.String()}}
	if q.name != "" {
		v.Set("name", q.name)
	}
	return v
}

// all reads every row of q, page by page.
func all(t testing.TB, h http.Handler, q want, pageSize int) ([]api.Row, int) {
	t.Helper()
	var rows []api.Row
	total := -1
	for page := 1; ; page++ {
		v := q.values()
		v.Set("pageSize", strconv.Itoa(pageSize))
		v.Set("currentPage", strconv.Itoa(page))
		r := decode(t, get(h, usagePath(q.project), v))
		if total >= 0 && r.Total != total {
			t.Fatalf("total changed between pages: %d then %d", total, r.Total)
		}
		total = r.Total
		if r.Items == nil {
			t.Fatalf("items is null on page %d", page)
		}
		rows = append(rows, r.Items...)
		if len(r.Items) < pageSize {
			return rows, total
		}
	}
}
