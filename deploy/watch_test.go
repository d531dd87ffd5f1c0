package deploy_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestNATSAPIWatch runs the API's watch route as the sample config's api
// user: it streams rollup events with exactly those rights, and the user
// can neither read samples nor touch the streams.
func TestNATSAPIWatch(t *testing.T) {
	srv := startConfiguredNATS(t)
	red := testenv.StartRedis(t)
	admin := connectAs(t, srv, "admin", natsPasswords["ADMIN_PASSWORD"], "")
	ctx := t.Context()
	if err := stream.EnsureRollups(ctx, admin.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	apiUser := connectAs(t, srv, "api", natsPasswords["API_PASSWORD"], "_INBOX_api")
	s, err := api.New(api.DefaultConfig(), rollup.NewReader(red.Client()), time.UTC, api.WithEvents(apiUser.js))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, ts.URL+"/platform/cost.alauda.io/v1beta1/projects/payments/costs/usage/watch", nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch as the api user: %s", resp.Status)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		br := bufio.NewReader(resp.Body)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	waitFor := func(prefix string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream ended before %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within 10 s", prefix)
			}
		}
	}
	waitFor("event: synced")
	ev := event.Event{ID: "e1", Kind: event.KindProject, Project: "payments", Day: "20250610", Item: "Cpu", Unit: "core-hours", Fixed: event.Fixed{Usage: 1}}
	if _, err := admin.js.Publish(ctx, ev.Subject(), ev.Marshal()); err != nil {
		t.Fatal(err)
	}
	waitFor("id: e1")
	cancel()
	for len(apiUser.errs) > 0 {
		if err := <-apiUser.errs; err != nil {
			t.Fatalf("the api hit a permission: %v", err)
		}
	}

	apiUser.denied(t, "api publishing samples", func() error { return apiUser.nc.Publish("cost.samples.sim-east", []byte("{}")) })
	apiUser.denied(t, "api publishing events", func() error { return apiUser.nc.Publish(ev.Subject(), []byte("{}")) })
	apiUser.denied(t, "api reading samples", func() error {
		return apiUser.nc.Publish("$JS.API.CONSUMER.CREATE.COST_SAMPLES.x", []byte("{}"))
	})
	apiUser.denied(t, "api deleting the events stream", func() error { return apiUser.nc.Publish("$JS.API.STREAM.DELETE.COST_ROLLUPS", nil) })
	apiUser.denied(t, "api reading other inboxes", func() error { _, err := apiUser.nc.SubscribeSync("_INBOX_aggregator.>"); return err })
}
