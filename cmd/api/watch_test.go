package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

const watchPath = "/platform/cost.alauda.io/v1beta1/costs/usage/watch"

// serve runs the binary with args until the test stops it with SIGINT.
func serve(t *testing.T, args ...string) (base string, stop func()) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	var logs testenv.LockedBuffer
	done := make(chan int, 1)
	go func() { done <- run(append(args, "--listen", addr, "--auth", "none"), &logs) }()
	base = "http://" + addr
	testenv.Eventually(t, 20*time.Second, "api ready", func() (bool, string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	return base, func() {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("exit %d: %s", code, logs.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatal("api did not stop on SIGINT")
		}
	}
}

func TestWatchNeedsNATSURL(t *testing.T) {
	r := testenv.StartRedis(t)
	base, stop := serve(t, "--redis-url", r.URL())
	defer stop()
	resp, err := http.Get(base + watchPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&st)
	if resp.StatusCode != 503 || st["message"] != "watch needs NATS (--nats-url)" {
		t.Fatalf("%s %v", resp.Status, st)
	}
}

// TestWatchThroughBinary: with --nats-url the watch streams the rollup
// events, and it is exempt from --request-timeout (1 ms here: a usage
// query cannot finish in it, a stream must not be cut by it).
func TestWatchThroughBinary(t *testing.T) {
	r := testenv.StartRedis(t)
	n := testenv.StartNATS(t)
	nc, js, err := natsconn.Connect(n.URL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	if err := stream.EnsureRollups(ctx, js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	base, stop := serve(t, "--redis-url", r.URL(), "--nats-url", n.URL(), "--request-timeout", "1ms")
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	resp, err := http.Get(base + watchPath + "?kind=project&name=payments")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s", resp.Status, b)
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
			lines <- strings.TrimSuffix(l, "\n")
		}
	}()
	next := func(prefix string) string {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream ended before %q", prefix)
				}
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-deadline:
				t.Fatalf("no %q within 10 s", prefix)
			}
		}
	}
	next("event: synced")
	for _, ev := range []event.Event{
		{ID: "other", Kind: event.KindProject, Project: "billing", Day: "20250610", Item: "Cpu", Unit: "core-hours", Fixed: event.Fixed{Usage: 1}},
		{ID: "mine", Kind: event.KindProject, Project: "payments", Day: "20250610", Item: "Cpu", Unit: "core-hours", Fixed: event.Fixed{Usage: 2}},
	} {
		if _, err := js.Publish(ctx, ev.Subject(), ev.Marshal()); err != nil {
			t.Fatal(err)
		}
	}
	if got := next("id: "); got != "id: mine" {
		t.Fatalf("first event %q, want mine", got)
	}
	stop()
	stopped = true
	next(": server shutting down")
}

func TestNATSSecurityFlagsChecked(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"--auth", "none", "--nats-url", "nats://127.0.0.1:1", "--nats-ca", "/does/not/exist.pem"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "--nats-ca") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}
