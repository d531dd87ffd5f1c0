package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
	"github.com/alauda/costmeter/notifier"
)

func notificationsPath(project string) string {
	if project == "" {
		return "/platform/cost.alauda.io/v1beta1/notifications"
	}
	return "/platform/cost.alauda.io/v1beta1/projects/" + project + "/notifications"
}

// firedNotifications runs a real notifier (embedded NATS, a redis-server
// child, a webhook answering 204) and publishes, one after the other,
// events that fire for project payments, namespace payments/east/api,
// cluster east and project billing. It returns the Redis holding the four
// notifications, fired in that order.
func firedNotifications(t *testing.T) *testenv.Redis {
	t.Helper()
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	log := slog.New(slog.DiscardHandler)
	nc, js, err := natsconn.Connect(n.URL(), "notifications-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(hook.Close)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("whsec_"+base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(dir, "rules.yaml")
	var rules string
	for _, kind := range []string{"project", "namespace", "cluster"} {
		rules += fmt.Sprintf("- {name: %s-cpu, kind: %s, item: Cpu, method: Usage, period: month, thresholds: [1], webhook: %q, secretFile: %q}\n", kind, kind, hook.URL, secret)
	}
	if err := os.WriteFile(rulesFile, []byte("rules:\n"+rules), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := notifier.LoadRules(rulesFile, time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := notifier.DefaultConfig()
	cfg.Retention = 20 * 365 * 24 * time.Hour
	nt, err := notifier.New(cfg, js, nc, r.Client(), loaded, notifier.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := stream.EnsureRollups(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	pipelinetest.Start(t, nt)
	log2 := notifier.NewLog(r.Client())
	for i, c := range []struct {
		scope rollup.Scope
		ent   rollup.Entity
	}{
		{rollup.ScopeProject, rollup.Entity{Project: "payments"}},
		{rollup.ScopeNamespace, rollup.Entity{Project: "payments", Cluster: "east", Namespace: "api"}},
		{rollup.ScopeCluster, rollup.Entity{Cluster: "east"}},
		{rollup.ScopeProject, rollup.Entity{Project: "billing"}},
	} {
		var v rollup.Values
		v[rollup.Field(rollup.Cpu, rollup.Usage)] = 2 * rollup.Scale * rollup.UnitSecondsPerHour
		ev := event.New(rollup.Change{Scope: c.scope, Day: rollup.DayFromDate(2026, 3, 1), Member: c.ent.Member(c.scope), Values: v}, rollup.Cpu)
		msg := nats.NewMsg(ev.Subject())
		msg.Data = ev.Marshal()
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		// One at a time, so that each fires at its own instant.
		testenv.Eventually(t, 30*time.Second, "notification delivered", func() (bool, string) {
			items, total, err := log2.List(ctx, "", 0, 10)
			if err != nil {
				return false, err.Error()
			}
			return total == i+1 && items[0].Delivery.State == notifier.StateDelivered, fmt.Sprintf("%d notifications", total)
		})
	}
	return r
}

func TestNotificationRoutes(t *testing.T) {
	r := firedNotifications(t)
	h := newServer(t, r.Client(), api.WithAuthenticate(testAuth), api.WithNotifications(notifier.NewLog(r.Client())))
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid spec: %v", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	call := func(t *testing.T, path, query, principal string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path+"?"+query, nil)
		req.Header.Set("X-Test-Principal", principal)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("route: %v", err)
		}
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
			Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		out.SetBodyBytes(rec.Body.Bytes())
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			t.Fatalf("response %d %s does not match the spec: %v", rec.Code, rec.Body.String(), err)
		}
		return rec
	}
	type page struct {
		PageSize, CurrentPage, Total int
		Items                        []struct {
			Event    notifier.CloudEvent
			Delivery notifier.Delivery
		}
	}
	subjects := func(t *testing.T, rec *httptest.ResponseRecorder) (page, []string) {
		t.Helper()
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var p page
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, it := range p.Items {
			out = append(out, it.Event.Subject)
			if it.Delivery.State != notifier.StateDelivered || it.Delivery.StatusCode != 204 || it.Delivery.Attempts != 1 {
				t.Errorf("%s: delivery %+v", it.Event.ID, it.Delivery)
			}
		}
		return p, out
	}
	newestFirst := []string{"project/billing", "cluster/east", "namespace/payments/east/api", "project/payments"}
	for _, c := range []struct {
		name, path, query, principal string
		total                        int
		want                         []string
	}{
		{"platform, default page", notificationsPath(""), "", "platform", 4, newestFirst},
		{"platform, page 2 of 3", notificationsPath(""), "currentPage=2&pageSize=3", "platform", 4, newestFirst[3:]},
		{"platform, past the end", notificationsPath(""), "currentPage=9&pageSize=3", "platform", 4, nil},
		{"a project's own", notificationsPath("payments"), "", "project:payments", 2, newestFirst[2:]},
		{"a project by a platform caller", notificationsPath("billing"), "pageSize=1", "platform", 1, newestFirst[:1]},
		{"a project without any", notificationsPath("quiet"), "", "project:quiet", 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, got := subjects(t, call(t, c.path, c.query, c.principal))
			if p.Total != c.total || fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("total %d items %v, want %d %v", p.Total, got, c.total, c.want)
			}
		})
	}
	for _, c := range []struct {
		name, path, query, principal string
		code                         int
		message                      string
	}{
		{"platform route, project caller", notificationsPath(""), "", "project:payments", 403, `"project:payments" may not see platform-wide usage`},
		{"another project", notificationsPath("billing"), "", "project:payments", 403, `"project:payments" may not see project "billing"`},
		{"bad project name", notificationsPath("Bad"), "", "platform", 400, `project: "Bad" is not a lowercase DNS label`},
		{"currentPage 0", notificationsPath(""), "currentPage=0", "platform", 400, "currentPage: must be at least 1, got 0"},
		{"pageSize too large", notificationsPath(""), "pageSize=1001", "platform", 400, "pageSize: must be at most 1000, got 1001"},
		{"pageSize not a number", notificationsPath("payments"), "pageSize=ten", "platform", 400, `pageSize: "ten" is not an integer`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := call(t, c.path, c.query, c.principal)
			var st struct {
				Kind, Message string
				Code          int
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &st)
			if rec.Code != c.code || st.Kind != "Status" || st.Code != c.code || !strings.Contains(st.Message, c.message) {
				t.Errorf("%d %s, want %d with %q", rec.Code, rec.Body, c.code, c.message)
			}
		})
	}

	// Without a notification store the routes answer 503; Redis down too.
	bare := newServer(t, r.Client(), api.WithAuthenticate(testAuth))
	req := httptest.NewRequest(http.MethodGet, notificationsPath(""), nil)
	req.Header.Set("X-Test-Principal", "platform")
	rec := httptest.NewRecorder()
	bare.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("without notifications: %d %s", rec.Code, rec.Body)
	}
	r.Stop()
	rec = call(t, notificationsPath(""), "", "platform")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "redis") {
		t.Errorf("redis down: %d %s", rec.Code, rec.Body)
	}
}
