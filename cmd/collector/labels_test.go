package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// streamContents decodes every sample in the stream, with the subject of
// its message.
func streamContents(ctx context.Context, js jetstream.JetStream) ([]sample.Sample, []string, error) {
	s, err := js.Stream(ctx, stream.Samples)
	if err != nil {
		return nil, nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	var out []sample.Sample
	var subjects []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			return nil, nil, fmt.Errorf("get message %d: %w", seq, err)
		}
		rs, err := sample.Decode(m.Data)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range rs {
			if r.Err != nil {
				return nil, nil, fmt.Errorf("message %d: %w", seq, r.Err)
			}
			out = append(out, r.Sample)
			subjects = append(subjects, m.Subject)
		}
	}
	return out, subjects, nil
}

// TestSimulateLabelsAndCapacity: a simulated cluster's samples, as they
// reach the stream, carry the teams of its namespaces for the configured
// keys (the label map covering one unlabelled namespace), and each window
// has one capacity sample, on the cluster's subject, above what the
// namespaces use.
func TestSimulateLabelsAndCapacity(t *testing.T) {
	n := testenv.StartNATS(t)
	dir := t.TempDir()
	mapFile := filepath.Join(dir, "map.yaml")
	if err := os.WriteFile(mapFile, []byte("namespaces:\n  - namespace: ns-5\n    labels: {team: platform}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "--nats-url", n.URL(), "--spool-dir", filepath.Join(dir, "spool"), "--listen", "",
		"--source", "simulate", "--sim-clusters", "lab", "--sim-namespaces", "12", "--sim-projects", "3",
		"--interval", "1m", "--backfill", "10m", "--sim-capacity",
		"--allocation-labels", "team,cost-center,example.com/env", "--allocation-label-map", mapFile)
	nc, js, err := natsconn.Connect(n.URL(), "labels-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	const windows = 10
	var got []sample.Sample
	var subjects []string
	testenv.Eventually(t, 30*time.Second, "ten windows in the stream", func() (bool, string) {
		got, subjects, err = streamContents(ctx, js)
		return err == nil && len(got) >= windows*13, fmt.Sprintf("%d samples (%v); log:\n%s", len(got), err, c.log)
	})
	c.kill()

	// The teams, written out: two neighbouring namespaces per team, every
	// sixth namespace unlabelled; ns-5 is covered by the map.
	type labels = map[string]string
	want := map[string]labels{
		"ns-0":  {"team": "payments", "cost-center": "cc-100", "example.com/env": "prod"},
		"ns-1":  {"team": "payments", "cost-center": "cc-100", "example.com/env": "staging"},
		"ns-2":  {"team": "search", "cost-center": "cc-200", "example.com/env": "prod"},
		"ns-3":  {"team": "search", "cost-center": "cc-200", "example.com/env": "staging"},
		"ns-4":  {"team": "data", "cost-center": "cc-300", "example.com/env": "prod"},
		"ns-5":  {"team": "platform"},
		"ns-6":  {"team": "web", "cost-center": "cc-100", "example.com/env": "prod"},
		"ns-7":  {"team": "web", "cost-center": "cc-100", "example.com/env": "staging"},
		"ns-8":  {"team": "mobile", "cost-center": "cc-200", "example.com/env": "prod"},
		"ns-9":  {"team": "mobile", "cost-center": "cc-200", "example.com/env": "staging"},
		"ns-10": {"team": "platform", "cost-center": "cc-300", "example.com/env": "prod"},
		"ns-11": nil,
	}
	type win struct {
		cpu, mem, storage float64 // the namespaces' effective sums
		capacity          *sample.Capacity
	}
	byWindow := map[time.Time]*win{}
	for i, s := range got {
		if subjects[i] != stream.SamplesPrefix+"lab" {
			t.Fatalf("sample on subject %s", subjects[i])
		}
		w := byWindow[s.Start]
		if w == nil {
			w = &win{}
			byWindow[s.Start] = w
		}
		if s.IsCapacity() {
			if w.capacity != nil {
				t.Fatalf("two capacity samples for the window %s", s.Start)
			}
			w.capacity = s.Capacity
			continue
		}
		if !reflect.DeepEqual(s.Labels, want[s.Namespace]) && !(len(s.Labels) == 0 && want[s.Namespace] == nil) {
			t.Errorf("%s labels %v, want %v", s.Namespace, s.Labels, want[s.Namespace])
		}
		w.cpu += s.CPU.EffectiveValue()
		w.mem += s.Memory.EffectiveValue()
		w.storage += s.Storage.Request
	}
	if len(byWindow) < windows {
		t.Fatalf("%d windows, want at least %d", len(byWindow), windows)
	}
	var first *sample.Capacity
	for start, w := range byWindow {
		if w.capacity == nil {
			t.Fatalf("window %s has no capacity sample", start)
		}
		if first == nil {
			first = w.capacity
		}
		if *w.capacity != *first {
			t.Errorf("window %s capacity %+v, want the cluster's constant %+v", start, *w.capacity, *first)
		}
		if !(w.capacity.CPU > w.cpu && w.capacity.Memory > w.mem && w.capacity.Storage > w.storage) {
			t.Errorf("window %s: capacity %+v is not above the namespaces' effective cpu %g, memory %g, storage requests %g", start, *w.capacity, w.cpu, w.mem, w.storage)
		}
	}
}

// TestImportLabelsAsSent: the file source passes labels and capacity
// samples through as sent; a label that breaks the rules is a rejected
// line.
func TestImportLabelsAsSent(t *testing.T) {
	n := testenv.StartNATS(t)
	lines := []string{
		`{"cluster":"east","project":"p","namespace":"a","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","labels":{"team":"payments","example.com/env":"prod"}}`,
		`{"cluster":"east","project":"p","namespace":"b","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","labels":{"team":""}}`,
		`{"cluster":"east","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","capacity":{"cpu":64,"memory":2.5e11,"storage":1e12}}`,
	}
	file := filepath.Join(t.TempDir(), "samples.ndjson")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"--source", "file", "--file", file, "--nats-url", n.URL(), "--allocation-labels", "other"}, nil, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, stderr.String())
	}
	for _, w := range []string{`line 2: invalid sample: labels: label "team": the value is empty`, "imported 2 of 3 lines (1 rejected)"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
		}
	}
	nc, js, err := natsconn.Connect(n.URL(), "import-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	got, _, err := streamContents(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !reflect.DeepEqual(got[0].Labels, map[string]string{"team": "payments", "example.com/env": "prod"}) ||
		got[1].Capacity == nil || *got[1].Capacity != (sample.Capacity{CPU: 64, Memory: 2.5e11, Storage: 1e12}) {
		t.Fatalf("stream holds %+v", got)
	}
}
