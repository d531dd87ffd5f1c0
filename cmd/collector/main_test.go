package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestMain lets the test binary run the collector itself as a child
// (startChild), so that a test can kill it with SIGKILL.
func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func([]string) int{"collector": func(args []string) int { return run(args, os.Stdin, os.Stderr) }})
	goleak.VerifyTestMain(m)
}

// child is a collector subprocess.
type child struct {
	cmd *exec.Cmd
	log *testenv.LockedBuffer
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := testenv.ChildCommand("collector", args...)
	log := &testenv.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start collector: %v", err)
	}
	c := &child{cmd: cmd, log: log}
	t.Cleanup(func() { c.kill() })
	return c
}

// kill sends SIGKILL and waits for the process (idempotent).
func (c *child) kill() {
	if c.cmd.ProcessState == nil {
		_ = c.cmd.Process.Signal(syscall.SIGKILL)
		_ = c.cmd.Wait()
	}
}

func spooled(dir string) int {
	m, _ := filepath.Glob(filepath.Join(dir, "*"+spool.Ext))
	return len(m)
}

// TestKill9WithFullSpool: a collector spools a two-hour backfill while NATS
// is down and is killed with SIGKILL; a second one is killed while it
// publishes the spool; a third finishes. Every spooled sample reaches the
// stream exactly once.
func TestKill9WithFullSpool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	n := testenv.StartNATS(t)
	url := n.URL()
	n.Stop()
	dir := t.TempDir()
	common := []string{"--nats-url", url, "--spool-dir", dir, "--listen", "", "--log-level", "debug",
		"--source", "simulate", "--sim-clusters", "kill-test", "--sim-namespaces", "20", "--sim-projects", "3",
		"--interval", "1m", "--max-batch", "4"}

	// 1: NATS down; 120 windows × 20 namespaces in batches of 4 → at least
	// 600 batches (more if a minute turns meanwhile).
	first := startChild(t, append(common, "--backfill", "2h")...)
	testenv.Eventually(t, 40*time.Second, "backfill spooled", func() (bool, string) {
		return spooled(dir) >= 600, fmt.Sprintf("%d batches spooled; log:\n%s", spooled(dir), first.log)
	})
	first.kill()

	// What is in the spool now is what must arrive, once each.
	sp, err := spool.Open(spool.Config{Dir: dir, MaxBytes: 1 << 40}, spool.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := sp.Oldest(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	sp.Close()
	want := map[string]bool{}
	for _, e := range entries {
		rs, err := sample.Decode(e.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			want[key(r.Sample)] = true
		}
	}
	if len(want) < 2400 {
		t.Fatalf("spool holds %d samples after kill -9, want the whole backfill (2400)", len(want))
	}

	// 2: NATS back; killed while it publishes, if it is not done first.
	n.Restart()
	nc, js, err := natsconn.Connect(url, "kill-test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	second := startChild(t, append(common, "--backfill", "0s")...)
	testenv.Eventually(t, 30*time.Second, "publishing under way", func() (bool, string) {
		got, err := streamMsgs(ctx, js)
		return got >= 64 || spooled(dir) == 0, fmt.Sprintf("stream: %d (%v); log:\n%s", got, err, second.log)
	})
	second.kill()
	left := spooled(dir)
	t.Logf("second collector killed with %d of %d batches still spooled", left, len(entries))

	// 3: finishes the spool.
	third := startChild(t, append(common, "--backfill", "0s")...)
	testenv.Eventually(t, 30*time.Second, "spool drained", func() (bool, string) {
		return spooled(dir) == 0, fmt.Sprintf("%d batches spooled; log:\n%s", spooled(dir), third.log)
	})
	_ = third.cmd.Process.Signal(syscall.SIGTERM)
	if err := third.cmd.Wait(); err != nil {
		t.Fatalf("collector after SIGTERM: %v\n%s", err, third.log)
	}

	// Every message once, every spooled sample once.
	s, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	copies := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		ids[m.Header.Get(jetstream.MsgIDHeader)]++
		rs, err := sample.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			copies[key(r.Sample)]++
		}
	}
	if int(info.State.Msgs) != len(ids) {
		t.Fatalf("stream holds %d messages but %d distinct ids", info.State.Msgs, len(ids))
	}
	for k, c := range copies {
		if c != 1 {
			t.Errorf("sample %s arrived %d times", k, c)
		}
	}
	for k := range want {
		if copies[k] != 1 {
			t.Errorf("spooled sample %s arrived %d times", k, copies[k])
		}
	}
	t.Logf("%d messages, %d samples in the stream; %d spooled before the kill", len(ids), len(copies), len(want))
}

func key(s sample.Sample) string { return s.Key() + "@" + s.Start.Format(time.RFC3339) }

func streamMsgs(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// TestInvalidConfiguration: bad flags exit with status 2 before anything
// connects.
func TestInvalidConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"kubernetes without cluster", []string{"--source", "kubernetes"}, []string{"--cluster: required"}},
		{"kubernetes bad scrape", []string{"--source", "kubernetes", "--cluster", "c1", "--scrape-interval", "7s"}, []string{"--scrape-interval"}},
		{"small spool", []string{"--source", "simulate", "--spool-max-bytes", "1000"}, []string{"--spool-max-bytes"}},
		{"empty spool dir", []string{"--source", "kubernetes", "--cluster", "c1", "--spool-dir", ""}, []string{"--spool-dir"}},
		{"unknown source", []string{"--source", "carrier-pigeon"}, []string{"--source"}},
		{"prometheus without url and cluster", []string{"--source", "prometheus"}, []string{"--prometheus-url: required", "--cluster: required"}},
		{"prometheus half a range", []string{"--source", "prometheus", "--prometheus-url", "http://127.0.0.1:1", "--cluster", "c1", "--from", "2025-06-01"}, []string{"--from, --to: give both"}},
		{"prometheus bad dates", []string{"--source", "prometheus", "--prometheus-url", "http://127.0.0.1:1", "--cluster", "c1", "--from", "2025-06-02", "--to", "2025-06-01"}, []string{"--to: 2025-06-01 is before --from"}},
		{"prometheus fill-gaps live", []string{"--source", "prometheus", "--prometheus-url", "http://127.0.0.1:1", "--cluster", "c1", "--fill-gaps"}, []string{"--fill-gaps: needs --from and --to"}},
		{"bad label key", []string{"--source", "simulate", "--allocation-labels", "team,Bad Key"}, []string{`--allocation-labels: label key "Bad Key"`}},
		{"too many label keys", []string{"--source", "simulate", "--allocation-labels", "a,b,c,d,e,f,g,h,i"}, []string{"--allocation-labels: 9 label keys, at most 8"}},
		{"label map without keys", []string{"--source", "simulate", "--allocation-label-map", "/nonexistent.yaml"}, []string{"--allocation-label-map: a label map needs --allocation-labels"}},
		{"label map missing", []string{"--source", "simulate", "--allocation-labels", "team", "--allocation-label-map", "/nonexistent.yaml"}, []string{"--allocation-label-map: open /nonexistent.yaml"}},
		{"prometheus keys sanitised alike", []string{"--source", "prometheus", "--prometheus-url", "http://127.0.0.1:1", "--cluster", "c1", "--allocation-labels", "example.com/env,example-com.env"},
			[]string{`--allocation-labels: "example.com/env" and "example-com.env" are both label_example_com_env`}},
		{"prometheus unreachable", []string{"--source", "prometheus", "--prometheus-url", "http://127.0.0.1:1", "--cluster", "c1", "--from", "2025-06-01", "--to", "2025-06-01"}, []string{"prometheus at http://127.0.0.1:1 does not answer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(append(tt.args, "--nats-url", "nats://127.0.0.1:1"), nil, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}
