package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/kstatus"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// watchNow is the clock of the aggregator and the API in the watch tests:
// "today" is 2025-06-10 (UTC billing zone), and every sample lies in it.
var watchNow = time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)

// watchEntities are the namespaces of the watch tests: a project whose
// name prefixes another's (team, team-a), a cluster name with a dot
// (east.b, subject token east_b), a namespace name in several projects.
var watchEntities = []rollup.Entity{
	{Project: "team", Cluster: "east", Namespace: "api"},
	{Project: "team", Cluster: "east.b", Namespace: "api"},
	{Project: "team", Cluster: "east", Namespace: "web"},
	{Project: "team-a", Cluster: "east", Namespace: "default"},
	{Project: "ops", Cluster: "west", Namespace: "default"},
	{Project: "ops", Cluster: "west", Namespace: "api"},
}

// pipeline is the real write path: embedded NATS, redis-server, an
// in-process aggregator publishing rollup events, a collector publisher.
type pipeline struct {
	t     *testing.T
	js    jetstream.JetStream
	store *rollup.Store
	pub   *collector.Publisher
	// stop stops the aggregator (idempotent; also at the test's end).
	stop func()
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	log := slog.New(slog.DiscardHandler)
	nc, js, err := natsconn.Connect(n.URL(), "watch-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	store, err := rollup.NewStore(r.Client(), time.UTC, retention)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stream.Ensure(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	pub, err := collector.NewPublisher(js, collector.PublisherConfig{MaxBatch: 50}, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := aggregator.DefaultConfig()
	cfg.BatchSize = 64
	cfg.MaxWait = 20 * time.Millisecond
	agg, err := aggregator.New(cfg, js, store, aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return watchNow }))
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agg.Run(actx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("aggregator: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &pipeline{t: t, js: js, store: store, pub: pub, stop: stop}
}

// publish sends one sample per entity for the ten minutes from hh:mm of
// today, with usage that differs per call, and waits until the aggregator
// has applied (and so published the events of) all of them.
func (p *pipeline) publish(hhmm string, es ...rollup.Entity) {
	p.t.Helper()
	at, err := time.Parse("15:04", hhmm)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publishAt(time.Date(2025, 6, 10, at.Hour(), at.Minute(), 0, 0, time.UTC), es...)
}

// publishAt is publish at any start time.
func (p *pipeline) publishAt(start time.Time, es ...rollup.Entity) {
	p.t.Helper()
	at := start
	var ss []sample.Sample
	for i, e := range es {
		eff := 0.8 + float64(i)/10
		ss = append(ss, sample.Sample{
			Cluster: e.Cluster, Project: e.Project, Namespace: e.Namespace,
			Start: start, End: start.Add(10 * time.Minute),
			CPU:     sample.Resources{Usage: 0.25 + float64(at.Hour())/10 + float64(i)/100, Request: 0.5, Quota: 2, Effective: &eff},
			Memory:  sample.Resources{Usage: 1e9 + float64(at.Hour()), Request: 2e9, Quota: 8e9},
			Storage: sample.Resources{Usage: 5e9, Request: 2e10, Quota: 1e11},
		})
	}
	if err := p.pub.Publish(context.Background(), ss); err != nil {
		p.t.Fatal(err)
	}
	testenv.Eventually(p.t, 20*time.Second, "the aggregator applied every sample", func() (bool, string) {
		return pipelinetest.Drained(p.js)
	})
}

// want is the event the rollups in Redis say an entity (an event key, see
// keyOf) has now for item it; ok is false when it has nothing today.
func (p *pipeline) want(key string, it rollup.Item) (event.Event, bool) {
	p.t.Helper()
	parts := strings.Split(key, "|")
	kind, e := parts[0], rollup.Entity{Project: parts[1], Cluster: parts[2], Namespace: parts[3]}
	var sc rollup.Scope
	switch {
	case kind == event.KindProject:
		sc = rollup.ScopeProject
	case kind == event.KindNamespace:
		sc = rollup.ScopeNamespace
	case e.Project != "":
		sc = rollup.ScopeProjectCluster
	default:
		sc = rollup.ScopeCluster
	}
	day := rollup.DayOf(watchNow, time.UTC)
	v, ok, err := p.store.DayValues(context.Background(), day, sc, e.Member(sc))
	if err != nil {
		p.t.Fatal(err)
	}
	ev := event.New(rollup.Change{Scope: sc, Day: day, Member: e.Member(sc), Values: v}, it)
	return ev, ok && ev.Fixed != (event.Fixed{})
}

// keyOf names an event's entity: kind|project|cluster|namespace.
func keyOf(ev event.Event) string {
	return ev.Kind + "|" + ev.Project + "|" + ev.Cluster + "|" + ev.Namespace
}

// testAuth authenticates by the X-Test-Principal header: "platform", or
// "project:<name>" for a principal that sees one project.
func testAuth(c *gin.Context) {
	h := c.GetHeader("X-Test-Principal")
	p := &auth.Principal{Name: h}
	if h == "platform" {
		p.Platform = true
	} else if name, ok := strings.CutPrefix(h, "project:"); ok {
		p.Projects = []string{name}
	}
	c.Request = c.Request.WithContext(auth.WithPrincipal(c.Request.Context(), p))
}

// watchServer serves the API on an httptest server: over the pipeline's
// Redis with its events, or (p nil) over an empty Redis without events.
func watchServer(t *testing.T, p *pipeline, opts ...api.Option) *httptest.Server {
	t.Helper()
	base := []api.Option{api.WithAuthenticate(testAuth), api.WithClock(func() time.Time { return watchNow })}
	var rollups api.Rollups
	if p != nil {
		base = append(base, api.WithEvents(p.js))
		rollups = p.store
	} else {
		rollups = rollup.NewReader(testenv.StartRedis(t).Client())
	}
	srv, err := api.New(api.DefaultConfig(), rollups, time.UTC, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(conform(t, srv.Handler()))
	t.Cleanup(ts.Close)
	return ts
}

func watchURL(ts string, project string, q url.Values) string {
	path := "/platform/cost.alauda.io/v1beta1/costs/usage/watch"
	if project != "" {
		path = "/platform/cost.alauda.io/v1beta1/projects/" + project + "/costs/usage/watch"
	}
	return ts + path + "?" + q.Encode()
}

// frame is one Server-Sent Events block: an event, or a comment.
type frame struct {
	event, id, data, comment string
}

// sse is a watch stream read by a real HTTP client.
type sse struct {
	t      *testing.T
	resp   *http.Response
	cancel context.CancelFunc
	frames chan frame
	done   chan struct{}
}

// openWatch opens a stream as principal and fails the test unless it
// answers 200 text/event-stream.
func openWatch(t *testing.T, client *http.Client, u, principal string) *sse {
	t.Helper()
	return openWatchWith(t, client, u, http.Header{"X-Test-Principal": {principal}})
}

// openWatchWith is openWatch with the request headers h.
func openWatchWith(t *testing.T, client *http.Client, u string, h http.Header) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header = h
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s %s: %s", u, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	s := &sse{t: t, resp: resp, cancel: cancel, frames: make(chan frame, 1024), done: make(chan struct{})}
	go s.read(ctx)
	t.Cleanup(s.close)
	return s
}

func (s *sse) read(ctx context.Context) {
	defer close(s.done)
	defer close(s.frames)
	br := bufio.NewReader(s.resp.Body)
	var f frame
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			select {
			case s.frames <- f:
			case <-ctx.Done():
				return
			}
			f = frame{}
		case strings.HasPrefix(line, ": "):
			f.comment = line[2:]
		case strings.HasPrefix(line, "event: "):
			f.event = line[7:]
		case strings.HasPrefix(line, "id: "):
			f.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			f.data = line[6:]
		}
	}
}

// close ends the stream from the client's side and waits for the reader.
func (s *sse) close() {
	s.cancel()
	s.resp.Body.Close()
	<-s.done
}

// next returns the next frame; ok is false when the stream ended. It
// fails the test when none comes within d.
func (s *sse) next(d time.Duration) (frame, bool) {
	s.t.Helper()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f, ok := <-s.frames:
		return f, ok
	case <-t.C:
		s.t.Fatalf("no frame within %s", d)
		return frame{}, false
	}
}

// rollupEvent decodes a rollup frame.
func (s *sse) rollupEvent(f frame) event.Event {
	s.t.Helper()
	var ev event.Event
	if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
		s.t.Fatalf("rollup data %q: %v", f.data, err)
	}
	if ev.ID != f.id {
		s.t.Fatalf("frame id %q, event id %q", f.id, ev.ID)
	}
	return ev
}

// snapshot reads the initial totals up to the synced event.
func (s *sse) snapshot() (map[string]event.Event, map[string]any, []string) {
	s.t.Helper()
	got := map[string]event.Event{}
	var comments []string
	for {
		f, ok := s.next(10 * time.Second)
		if !ok {
			s.t.Fatal("stream ended before synced")
		}
		switch f.event {
		case "rollup":
			ev := s.rollupEvent(f)
			got[keyOf(ev)] = ev
		case "synced":
			var sy map[string]any
			if err := json.Unmarshal([]byte(f.data), &sy); err != nil {
				s.t.Fatal(err)
			}
			return got, sy, comments
		case "":
			comments = append(comments, f.comment)
		default:
			s.t.Fatalf("unexpected event %q", f.event)
		}
	}
}

// until reads rollup events until stop holds for one, and returns them
// all, the last included.
func (s *sse) until(stop func(event.Event) bool) []event.Event {
	s.t.Helper()
	var out []event.Event
	for {
		f, ok := s.next(15 * time.Second)
		if !ok {
			s.t.Fatal("stream ended")
		}
		if f.event != "rollup" {
			continue
		}
		ev := s.rollupEvent(f)
		out = append(out, ev)
		if stop(ev) {
			return out
		}
	}
}

func nsKey(e rollup.Entity) string {
	return "namespace|" + e.Project + "|" + e.Cluster + "|" + e.Namespace
}

// TestWatchStreams opens one stream per filter, checks its snapshot
// against the rollups, then lets the aggregator commit a wave of samples
// touching every entity and a second wave touching one entity of each
// filter (the marker). Events of the first wave are all in the stream
// before any of the second, so once a stream delivered its marker's new
// totals it delivered everything of the first wave it ever will: what it
// sent must be exactly its entities, with the totals now in Redis.
func TestWatchStreams(t *testing.T) {
	p := newPipeline(t)
	ts := watchServer(t, p)
	p.publish("08:00", watchEntities...)
	e := func(i int) rollup.Entity { return watchEntities[i] }
	cases := []struct {
		name      string
		project   string
		principal string
		q         url.Values
		item      rollup.Item
		want      []string
		marker    rollup.Entity
	}{
		{name: "projects by default", q: url.Values{}, item: rollup.Cpu,
			want: []string{"project|team||", "project|team-a||", "project|ops||"}, marker: e(2)},
		{name: "one project", q: url.Values{"kind": {"project"}, "name": {"team"}}, item: rollup.Cpu,
			want: []string{"project|team||"}, marker: e(0)},
		{name: "clusters, memory", q: url.Values{"kind": {"cluster_all"}, "item": {"Memory"}}, item: rollup.Memory,
			want: []string{"cluster||east|", "cluster||east.b|", "cluster||west|"}, marker: e(4)},
		{name: "one dotted cluster", q: url.Values{"kind": {"cluster"}, "name": {"east.b"}}, item: rollup.Cpu,
			want: []string{"cluster||east.b|"}, marker: e(1)},
		{name: "namespaces", q: url.Values{"kind": {"namespace_all"}}, item: rollup.Cpu,
			want: []string{nsKey(e(0)), nsKey(e(1)), nsKey(e(2)), nsKey(e(3)), nsKey(e(4)), nsKey(e(5))}, marker: e(3)},
		{name: "namespaces by name, storage", q: url.Values{"kind": {"namespace"}, "name": {"api"}, "item": {"Storage"}}, item: rollup.Storage,
			want: []string{nsKey(e(0)), nsKey(e(1)), nsKey(e(5))}, marker: e(5)},
		{name: "project route", project: "team", principal: "project:team", q: url.Values{}, item: rollup.Cpu,
			want: []string{"project|team||"}, marker: e(2)},
		{name: "project route namespaces", project: "team", principal: "project:team", q: url.Values{"kind": {"namespace_all"}}, item: rollup.Cpu,
			want: []string{nsKey(e(0)), nsKey(e(1)), nsKey(e(2))}, marker: e(0)},
		{name: "project route namespaces by name", project: "team", principal: "project:team", q: url.Values{"kind": {"namespace"}, "name": {"api"}}, item: rollup.Cpu,
			want: []string{nsKey(e(0)), nsKey(e(1))}, marker: e(1)},
		{name: "project route clusters", project: "team", principal: "project:team", q: url.Values{"kind": {"cluster_all"}, "item": {"Memory"}}, item: rollup.Memory,
			want: []string{"cluster|team|east|", "cluster|team|east.b|"}, marker: e(2)},
		{name: "project route one cluster", project: "team", principal: "project:team", q: url.Values{"kind": {"cluster"}, "name": {"east.b"}}, item: rollup.Cpu,
			want: []string{"cluster|team|east.b|"}, marker: e(1)},
		{name: "prefixed project route", project: "team-a", principal: "project:team-a", q: url.Values{"kind": {"namespace_all"}}, item: rollup.Cpu,
			want: []string{nsKey(e(3))}, marker: e(3)},
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	streams := make([]*sse, len(cases))
	for i, c := range cases {
		principal := c.principal
		if principal == "" {
			principal = "platform"
		}
		streams[i] = openWatch(t, client, watchURL(ts.URL, c.project, c.q), principal)
		got, synced, _ := streams[i].snapshot()
		if len(got) != len(c.want) || synced["sent"] != float64(len(c.want)) || synced["truncated"] != false || synced["day"] != "20250610" {
			t.Fatalf("%s: snapshot %v, synced %v, want %v", c.name, keys(got), synced, c.want)
		}
		for _, k := range c.want {
			w, _ := p.want(k, c.item)
			if got[k].Fixed != w.Fixed || got[k].ID != w.ID || got[k].Item != c.item.String() || got[k].Day != "20250610" {
				t.Errorf("%s: snapshot %s = %+v, rollups say %+v", c.name, k, got[k], w)
			}
		}
	}

	p.publish("09:00", watchEntities...)
	afterFirst := map[string]event.Fixed{}
	for _, c := range cases {
		for _, k := range c.want {
			w, _ := p.want(k, c.item)
			afterFirst[c.item.String()+k] = w.Fixed
		}
	}
	markers := map[rollup.Entity]bool{}
	for _, c := range cases {
		markers[c.marker] = true
	}
	var second []rollup.Entity
	for m := range markers {
		second = append(second, m)
	}
	p.publish("10:00", second...)

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := streams[i]
			s.t = t
			// The marker's entity among the stream's: the one whose key
			// the marker namespace rolls up into.
			var markerKey string
			for _, k := range c.want {
				parts := strings.Split(k, "|")
				if parts[1] != "" && parts[1] != c.marker.Project || parts[2] != "" && parts[2] != c.marker.Cluster || parts[3] != "" && parts[3] != c.marker.Namespace {
					continue
				}
				markerKey = k
			}
			final, _ := p.want(markerKey, c.item)
			evs := s.until(func(ev event.Event) bool { return keyOf(ev) == markerKey && ev.Fixed == final.Fixed })
			last := map[string]event.Event{}
			for _, ev := range evs {
				k := keyOf(ev)
				if !contains(c.want, k) {
					t.Fatalf("event of %s on a stream of %v", k, c.want)
				}
				if ev.Item != c.item.String() {
					t.Fatalf("event of item %s on a %s stream", ev.Item, c.item)
				}
				if c.project != "" && ev.Project != c.project {
					t.Fatalf("project %q's stream sent %+v", c.project, ev)
				}
				last[k] = ev
			}
			// The stream stopped reading at its marker: other entities
			// the second wave touched may have their new totals still
			// on the way.
			for _, k := range c.want {
				w, _ := p.want(k, c.item)
				if last[k].Fixed != w.Fixed && (k == markerKey || last[k].Fixed != afterFirst[c.item.String()+k]) {
					t.Errorf("last event of %s: %+v; rollups say %+v", k, last[k], w)
				}
			}
		})
	}
}

func keys(m map[string]event.Event) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestWatchRefused: the answers before a stream starts, each a Status.
func TestWatchRefused(t *testing.T) {
	disabled := watchServer(t, nil)
	// NATS without the COST_ROLLUPS stream: no aggregator ran yet.
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "watch-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	noStream := watchServer(t, nil, api.WithEvents(js))
	cases := []struct {
		name      string
		server    *httptest.Server
		project   string
		principal string
		q         url.Values
		code      int
		message   string
	}{
		{name: "bad kind", q: url.Values{"kind": {"pods"}}, code: 400, message: `kind: "pods" is not project, namespace, cluster, project_all, namespace_all or cluster_all`},
		{name: "group kind", q: url.Values{"kind": {"group_all"}}, code: 400, message: `kind: "group_all" is not project, namespace, cluster, project_all, namespace_all or cluster_all`},
		{name: "groupBy", q: url.Values{"groupBy": {"team"}}, code: 400, message: `groupBy: not a parameter of the watch route`},
		{name: "name missing", q: url.Values{"kind": {"namespace"}}, code: 400, message: "name: required for kind=namespace"},
		{name: "bad name", q: url.Values{"kind": {"cluster"}, "name": {"East"}}, code: 400, message: `name: "East" is not a lowercase DNS label`},
		{name: "bad item", q: url.Values{"item": {"Gpu"}}, code: 400, message: `item: "Gpu" is not Cpu, Memory or Storage`},
		{name: "usage-only parameter", q: url.Values{"start": {"2025-06-01"}}, code: 400, message: "start: not a parameter of the watch route"},
		{name: "method", q: url.Values{"method": {"Usage"}}, code: 400, message: "method: not a parameter of the watch route"},
		{name: "bad project", project: "Team_1", code: 400, message: `project: "Team_1" is not a lowercase DNS label`},
		{name: "platform route, project principal", principal: "project:team", code: 403, message: `"project:team" may not see platform-wide usage`},
		{name: "other project", project: "ops", principal: "project:team", code: 403, message: `"project:team" may not see project "ops"`},
		{name: "other project by name", project: "team", principal: "project:team", q: url.Values{"kind": {"project"}, "name": {"ops"}}, code: 403, message: `kind=project: "ops" is not the route's project "team"`},
		{name: "no principal scope", project: "team", principal: "nobody", code: 403, message: `"nobody" may not see project "team"`},
		{name: "without nats", code: 503, message: "watch needs NATS (--nats-url)"},
		{name: "without nats, project route", project: "team", principal: "project:team", code: 503, message: "watch needs NATS (--nats-url)"},
		{name: "without the events stream", server: noStream, code: 503, message: "the rollup events (nats stream COST_ROLLUPS) are unavailable; retry later"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := c.server
			if srv == nil {
				srv = disabled
			}
			principal := c.principal
			if principal == "" {
				principal = "platform"
			}
			req, _ := http.NewRequest(http.MethodGet, watchURL(srv.URL, c.project, c.q), nil)
			req.Header.Set("X-Test-Principal", principal)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st kstatus.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.code || st.Kind != "Status" || st.Code != c.code || !strings.HasPrefix(st.Message, c.message) {
				t.Fatalf("%s: %+v; want %d %q", resp.Status, st, c.code, c.message)
			}
		})
	}
}

// TestWatchHeartbeatAndDisconnect: an idle stream pings; a client that
// leaves ends the handler, its goroutines and its NATS consumer, and frees
// its slot.
func TestWatchHeartbeatAndDisconnect(t *testing.T) {
	p := newPipeline(t)
	p.publish("08:00", watchEntities...)
	ts := watchServer(t, p, api.WithHeartbeat(20*time.Millisecond), api.WithMaxWatches(1))
	client := &http.Client{Transport: &http.Transport{}}
	p.stop() // its fetches come and go
	ignore := goleak.IgnoreCurrent()
	s := openWatch(t, client, watchURL(ts.URL, "", url.Values{"kind": {"namespace_all"}}), "platform")
	s.snapshot()
	req, _ := http.NewRequest(http.MethodGet, watchURL(ts.URL, "", nil), nil)
	req.Header.Set("X-Test-Principal", "platform")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "too many watch streams: at most 1 at once") {
		t.Fatalf("a second stream: %s %s", resp.Status, body)
	}
	for pings := 0; pings < 2; {
		f, ok := s.next(5 * time.Second)
		if !ok {
			t.Fatal("stream ended")
		}
		if f.comment == "ping" && f.event == "" {
			pings++
		}
	}
	consumers := func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := p.js.Stream(ctx, stream.Rollups)
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Consumers == 0, fmt.Sprintf("%d consumers", info.State.Consumers)
	}
	if ok, _ := consumers(); ok {
		t.Fatal("a watching stream has no consumer")
	}
	s.close()
	client.CloseIdleConnections()
	testenv.Eventually(t, 5*time.Second, "the watch's consumer is deleted", consumers)
	// The embedded server winds a deleted consumer's goroutines down on
	// its own time; they are the server's, not the API's, and the
	// consumer is gone (above).
	goleak.VerifyNone(t, ignore,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*consumer).loopAndGatherMsgs"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*consumer).processInboundNextMsgReqs"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*consumer).processInboundAcks"))
	again := openWatch(t, client, watchURL(ts.URL, "", nil), "platform")
	again.snapshot()
	again.close()
	client.CloseIdleConnections()
}

// TestWatchEndsOnShutdown: Run's shutdown ends open streams at once
// rather than waiting for them until its grace period runs out.
func TestWatchEndsOnShutdown(t *testing.T) {
	p := newPipeline(t)
	p.publish("08:00", watchEntities...)
	cfg := api.DefaultConfig()
	cfg.Listen = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	srv, err := api.New(cfg, p.store, time.UTC, api.WithEvents(p.js), api.WithClock(func() time.Time { return watchNow }))
	if err != nil {
		t.Fatal(err)
	}
	client := newConformingClient(t)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, "the API answers", func() (bool, string) {
		resp, err := client.Get("http://" + cfg.Listen + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	s := openWatch(t, client, watchURL("http://"+cfg.Listen, "", nil), "anonymous")
	s.snapshot()
	cancel()
	var last frame
	for {
		f, ok := s.next(5 * time.Second)
		if !ok {
			break
		}
		last = f
	}
	if last.comment != "server shutting down; reconnect" {
		t.Errorf("last frame %+v", last)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of shutdown")
	}
}

// TestWatchSnapshotBounded: a selection larger than MaxWatchSnapshot
// opens with its first entities and says so; later changes of any of them
// stream.
func TestWatchSnapshotBounded(t *testing.T) {
	p := newPipeline(t)
	n := api.MaxWatchSnapshot + 3
	es := make([]rollup.Entity, n)
	for i := range es {
		es[i] = rollup.Entity{Project: "bulk", Cluster: "east", Namespace: fmt.Sprintf("ns-%04d", i)}
	}
	p.publish("08:00", es...)
	ts := watchServer(t, p)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	s := openWatch(t, client, watchURL(ts.URL, "bulk", url.Values{"kind": {"namespace_all"}}), "project:bulk")
	got, synced, comments := s.snapshot()
	if len(got) != api.MaxWatchSnapshot || synced["truncated"] != true || synced["total"] != float64(n) || synced["entities"] != float64(api.MaxWatchSnapshot) {
		t.Fatalf("%d snapshot events, synced %v", len(got), synced)
	}
	if _, ok := got[nsKey(es[n-1])]; ok {
		t.Fatalf("the last entity is in the snapshot: not the first %d in order", api.MaxWatchSnapshot)
	}
	want := fmt.Sprintf("snapshot truncated: the first %d of %d entities", api.MaxWatchSnapshot, n)
	if !contains(comments, want) {
		t.Fatalf("comments %q, want %q", comments, want)
	}
	p.publish("09:00", es[n-1])
	final, _ := p.want(nsKey(es[n-1]), rollup.Cpu)
	s.until(func(ev event.Event) bool { return keyOf(ev) == nsKey(es[n-1]) && ev.Fixed == final.Fixed })

	// A late sample of yesterday streams too, with its day.
	p.publishAt(time.Date(2025, 6, 9, 23, 0, 0, 0, time.UTC), es[0])
	s.until(func(ev event.Event) bool { return keyOf(ev) == nsKey(es[0]) && ev.Day == "20250609" })
}

// TestWatchOpenAPI checks the watch routes' answers against the spec: the
// Status errors, and the event stream's content type.
func TestWatchOpenAPI(t *testing.T) {
	p := newPipeline(t)
	p.publish("08:00", watchEntities[0])
	ts := watchServer(t, p)
	disabled := watchServer(t, nil)
	ctx := context.Background()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for _, c := range []struct {
		name      string
		server    *httptest.Server
		project   string
		principal string
		q         url.Values
		code      int
	}{
		{name: "stream", server: ts, q: url.Values{"kind": {"namespace_all"}, "item": {"Memory"}}, code: 200},
		{name: "project stream", server: ts, project: "team", principal: "project:team", q: url.Values{"kind": {"cluster"}, "name": {"east"}}, code: 200},
		{name: "bad item", server: ts, q: url.Values{"item": {"Gpu"}}, code: 400},
		{name: "forbidden", server: ts, project: "ops", principal: "project:team", code: 403},
		{name: "disabled", server: disabled, code: 503},
	} {
		t.Run(c.name, func(t *testing.T) {
			principal := c.principal
			if principal == "" {
				principal = "platform"
			}
			u := watchURL(c.server.URL, c.project, c.q)
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
			req.Header.Set("X-Test-Principal", principal)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Fatalf("%s: %s", u, resp.Status)
			}
			var body []byte
			if c.code != 200 {
				body, _ = io.ReadAll(resp.Body) // a stream never ends by itself
			}
			// The document's server is relative ("/"): route the path.
			local := req.Clone(ctx)
			local.URL.Scheme, local.URL.Host = "", ""
			route, params, err := router.FindRoute(local)
			if err != nil {
				t.Fatalf("route: %v", err)
			}
			in := &openapi3filter.RequestValidationInput{Request: local, PathParams: params, Route: route}
			out := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
				Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: c.code == 200},
			}
			out.SetBodyBytes(body)
			if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
				t.Fatalf("response %s does not match the spec: %v", resp.Status, err)
			}
		})
	}
}

// TestWatchOutlivesWriteTimeout: a stream is not cut by the HTTP
// server's write timeout (Run sets one for ordinary requests).
func TestWatchOutlivesWriteTimeout(t *testing.T) {
	p := newPipeline(t)
	p.publish("08:00", watchEntities[0])
	srv, err := api.New(api.DefaultConfig(), p.store, time.UTC, api.WithEvents(p.js),
		api.WithClock(func() time.Time { return watchNow }), api.WithHeartbeat(25*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(conform(t, srv.Handler()))
	ts.Config.WriteTimeout = 100 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close) // after the stream's own cleanup
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	s := openWatch(t, client, watchURL(ts.URL, "", nil), "anonymous")
	s.snapshot()
	start := time.Now()
	for pings := 0; pings < 20; {
		f, ok := s.next(5 * time.Second)
		if !ok {
			t.Fatalf("the stream ended after %s, %d pings", time.Since(start), pings)
		}
		if f.comment == "ping" {
			pings++
		}
	}
	if time.Since(start) < 4*ts.Config.WriteTimeout {
		t.Fatalf("20 pings in %s: the heartbeat is not what was set", time.Since(start))
	}
}
