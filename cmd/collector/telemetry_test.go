package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// scrape reads the metrics a collector serves on addr.
func scrape(addr string) (testenv.Metrics, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return testenv.ParseMetrics(resp.Body)
}

// TestMetricsEndpoint: the collector's probe server serves /metrics. While
// NATS is down a backfill larger than the spool fills it (depth gauges up)
// and pushes the oldest batches out (drops counted by reason); once NATS is
// back the spool empties and the published-samples counter equals what
// reached the stream.
func TestMetricsEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	n := testenv.StartNATS(t)
	url := n.URL()
	n.Stop()
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	c := startChild(t, "--nats-url", url, "--spool-dir", t.TempDir(), "--spool-max-bytes", strconv.Itoa(spool.MinBytes), "--listen", addr,
		"--source", "simulate", "--sim-clusters", "metrics-test", "--sim-namespaces", "20", "--sim-projects", "3",
		"--interval", "1m", "--max-batch", "50", "--backfill", "6h")

	const (
		batches = "cost_collector_spool_batches"
		size    = "cost_collector_spool_size_bytes"
		dropped = "cost_collector_spool_dropped_total"
		samples = "cost_collector_samples_published_total"
	)
	var lost float64
	testenv.Eventually(t, 30*time.Second, "spool full and dropping", func() (bool, string) {
		m, err := scrape(addr)
		if err != nil {
			return false, fmt.Sprintf("%v; log:\n%s", err, c.log)
		}
		b, _ := m.Value(batches)
		sz, _ := m.Value(size)
		lost, _ = m.Value(dropped, "reason", spool.ReasonFull)
		return b > 0 && sz > spool.MinBytes/2 && lost > 0, fmt.Sprintf("%v batches, %v bytes, %v samples dropped", b, sz, lost)
	})

	n.Restart()
	nc, js, err := natsconn.Connect(url, "metrics-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.Eventually(t, 30*time.Second, "spool drained and every published sample counted", func() (bool, string) {
		m, err := scrape(addr)
		if err != nil {
			return false, err.Error()
		}
		b, _ := m.Value(batches)
		pub, _ := m.Value(samples)
		inStream, err := streamSamples(ctx, js)
		return err == nil && b == 0 && pub > 0 && pub == float64(inStream), fmt.Sprintf("%v batches spooled, %v samples published, %d in the stream (%v)", b, pub, inStream, err)
	})
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("collector after SIGTERM: %v\n%s", err, c.log)
	}
}

// streamSamples counts the samples in the stream.
func streamSamples(ctx context.Context, js jetstream.JetStream) (int, error) {
	s, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return 0, fmt.Errorf("get message %d: %w", seq, err)
		}
		rs, err := sample.Decode(m.Data)
		if err != nil {
			return 0, err
		}
		total += len(rs)
	}
	return total, nil
}
