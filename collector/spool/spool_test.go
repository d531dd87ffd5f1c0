package spool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/collector/spool"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func entry(i, size int) spool.Entry {
	data := bytes.Repeat([]byte{byte('a' + i%26)}, size)
	return spool.Entry{Subject: "cost.samples.c1", ID: fmt.Sprintf("id-%d", i), Samples: i + 1, Data: data}
}

func open(t *testing.T, dir string, max int64, opts ...spool.Option) *spool.Spool {
	t.Helper()
	s, err := spool.Open(spool.Config{Dir: dir, MaxBytes: max}, append([]spool.Option{spool.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	return s
}

func ids(es []spool.Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%d:%s ", e.Seq, e.ID)
	}
	return strings.TrimSpace(b.String())
}

func TestAppendReplayRemove(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir, 64<<20)
	if err := s.Append(ctx, []spool.Entry{entry(0, 10), entry(1, 20)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, []spool.Entry{entry(2, 30)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready did not signal after Append")
	}
	got, err := s.Oldest(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "1:id-0 2:id-1" {
		t.Fatalf("oldest 2 = %q", ids(got))
	}
	if want := entry(1, 20); !bytes.Equal(got[1].Data, want.Data) || got[1].Samples != 2 || got[1].Subject != want.Subject {
		t.Fatalf("entry 2 = %+v", got[1])
	}
	if err := s.Remove(1); err != nil {
		t.Fatal(err)
	}
	// An unfinished write from a crash is not a batch.
	if err := os.WriteFile(filepath.Join(dir, "00000000000000000009.batch.tmp"), []byte("CSPOOL1 half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Open(spool.Config{Dir: dir, MaxBytes: 64 << 20}); !errors.Is(err, spool.ErrLocked) {
		t.Fatalf("second open: err = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir, 64<<20)
	defer s.Close()
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready did not signal for a replayed spool")
	}
	if s.Len() != 2 || s.Bytes() <= 50 {
		t.Fatalf("reopened: len %d bytes %d", s.Len(), s.Bytes())
	}
	got, err = s.Oldest(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "2:id-1 3:id-2" {
		t.Fatalf("replay = %q", ids(got))
	}
	if err := s.Append(ctx, []spool.Entry{entry(3, 1)}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Oldest(ctx, 10)
	if ids(got) != "2:id-1 3:id-2 4:id-3" {
		t.Fatalf("sequence does not continue after reopen: %q", ids(got))
	}
	if _, err := os.Stat(filepath.Join(dir, "00000000000000000009.batch.tmp")); !os.IsNotExist(err) {
		t.Fatalf("unfinished write not removed: %v", err)
	}
	if err := s.Remove(2, 3, 4, 99); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 || s.Bytes() != 0 {
		t.Fatalf("after removing all: len %d bytes %d", s.Len(), s.Bytes())
	}
}

func TestFileFormat(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	defer s.Close()
	e := spool.Entry{Subject: "cost.samples.prod-east", ID: "abc", Samples: 2, Data: []byte(`[{"a":1},{"b":2}]`)}
	if err := s.Append(context.Background(), []spool.Entry{e}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "00000000000000000001.batch"))
	if err != nil {
		t.Fatal(err)
	}
	crc := crc32.Checksum(e.Data, crc32.MakeTable(crc32.Castagnoli))
	want := fmt.Sprintf("CSPOOL1 %08x 2 17 cost.samples.prod-east abc\n", crc) + `[{"a":1},{"b":2}]`
	if string(b) != want {
		t.Fatalf("file =\n%q\nwant\n%q", b, want)
	}
}

func droppedSamples(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	return counters(t, r, "cost.collector.spool.dropped")
}

func TestBound(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	var logs bytes.Buffer
	const max = spool.MinBytes // 1 MiB
	s, err := spool.Open(spool.Config{Dir: t.TempDir(), MaxBytes: max}, spool.WithMeter(mp.Meter("test")), spool.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Ten batches of ~200 KiB: only five fit.
	for i := range 10 {
		if err := s.Append(ctx, []spool.Entry{entry(i, 200<<10)}); err != nil {
			t.Fatal(err)
		}
		if s.Bytes() > max {
			t.Fatalf("after batch %d the spool holds %d bytes, above its bound %d", i, s.Bytes(), max)
		}
	}
	got, err := s.Oldest(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "6:id-5 7:id-6 8:id-7 9:id-8 10:id-9" {
		t.Fatalf("kept = %q, want the five newest", ids(got))
	}
	// Batches 0..4 held 1+2+3+4+5 samples.
	if d := droppedSamples(t, reader); d[spool.ReasonFull] != 15 {
		t.Fatalf("dropped = %v, want 15 for reason full", d)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 5 {
		t.Fatalf("%d error logs for 5 dropped batches:\n%s", n, logs.String())
	}

	// One batch larger than the whole spool is dropped by itself and
	// leaves the others alone.
	if err := s.Append(ctx, []spool.Entry{entry(20, max)}); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 5 {
		t.Fatalf("a too large batch evicted others: len %d", s.Len())
	}
	if d := droppedSamples(t, reader); d[spool.ReasonTooLarge] != 21 {
		t.Fatalf("dropped = %v, want 21 for reason too_large", d)
	}

	// One call with more than fits keeps its newest batches.
	batch := make([]spool.Entry, 0, 8)
	for i := 30; i < 38; i++ {
		batch = append(batch, entry(i, 300<<10))
	}
	if err := s.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Oldest(ctx, 100)
	if ids(got) != "11:id-35 12:id-36 13:id-37" {
		t.Fatalf("kept = %q", ids(got))
	}
	if d := droppedSamples(t, reader); d[spool.ReasonFull] != 15+(6+7+8+9+10)+(31+32+33+34+35) {
		t.Fatalf("dropped = %v", d)
	}
}

func TestCorruptBatchIsDroppedAndCounted(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	dir := t.TempDir()
	s := open(t, dir, 1<<20, spool.WithMeter(mp.Meter("test")))
	if err := s.Append(ctx, []spool.Entry{entry(0, 100), entry(1, 100), entry(2, 100)}); err != nil {
		t.Fatal(err)
	}
	// Flip a body byte of batch 2 (same size: only the checksum notices).
	p := filepath.Join(dir, "00000000000000000002.batch")
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Truncate batch 3 (its size no longer matches: noticed on open).
	p3 := filepath.Join(dir, "00000000000000000003.batch")
	st, _ := os.Stat(p3)
	if err := os.Truncate(p3, st.Size()-10); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 1<<20, spool.WithMeter(mp.Meter("test")))
	defer s.Close()
	if s.Len() != 2 {
		t.Fatalf("len %d after open, want 2 (truncated batch dropped)", s.Len())
	}
	got, err := s.Oldest(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if ids(got) != "1:id-0" {
		t.Fatalf("oldest = %q, want only the intact batch", ids(got))
	}
	if d := droppedSamples(t, reader); d[spool.ReasonCorrupt] != 2+3 {
		t.Fatalf("dropped = %v, want 5 corrupt", d)
	}
	if s.Len() != 1 {
		t.Fatalf("len %d, want 1", s.Len())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  spool.Config
		want []string
	}{
		{"ok", spool.Config{Dir: "x", MaxBytes: spool.MinBytes}, nil},
		{"no dir, small", spool.Config{MaxBytes: 10}, []string{"--spool-dir", "--spool-max-bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != (len(tt.want) > 0) {
				t.Fatalf("err = %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q does not name %s", err, w)
				}
			}
		})
	}
}

// BenchmarkAppend measures durable appends of 500-sample batches (~165 KB,
// one fsynced file each).
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	s, err := spool.Open(spool.Config{Dir: b.TempDir(), MaxBytes: 1 << 40}, spool.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := entry(0, 165_000)
	e.Samples = 500
	b.SetBytes(int64(len(e.Data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Append(ctx, []spool.Entry{e}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkReplay measures reading and removing spooled batches, as a
// relay draining a backlog does.
func BenchmarkReplay(b *testing.B) {
	ctx := context.Background()
	s, err := spool.Open(spool.Config{Dir: b.TempDir(), MaxBytes: 1 << 40}, spool.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := entry(0, 165_000)
	e.Samples = 500
	batch := make([]spool.Entry, 32)
	for i := range batch {
		batch[i] = e
	}
	b.SetBytes(int64(len(e.Data)))
	for n := 0; n < b.N; n += 32 {
		if err := s.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for n := 0; n < b.N; {
		got, err := s.Oldest(ctx, 32)
		if err != nil || len(got) == 0 {
			b.Fatal(err, len(got))
		}
		seqs := make([]uint64, len(got))
		for i, g := range got {
			seqs[i] = g.Seq
		}
		if err := s.Remove(seqs...); err != nil {
			b.Fatal(err)
		}
		n += len(got)
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "samples/s")
}

// TestReject: a rejected batch leaves the queue for rejected/, byte for
// byte, with a sidecar; the queue's length and size no longer count it,
// a reopened spool knows it and numbers new batches after it; a file
// moved back is queued again (first), and its stale sidecar removed.
func TestReject(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	dir := t.TempDir()
	at := time.Date(2026, 12, 2, 14, 3, 11, 0, time.UTC)
	clock := spool.WithClock(func() time.Time { return at })
	s := open(t, dir, 1<<20, spool.WithMeter(mp.Meter("test")), clock)
	if err := s.Append(ctx, []spool.Entry{entry(0, 100), entry(1, 200), entry(2, 300)}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "00000000000000000003.batch"))
	got, err := s.Oldest(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	bytesBefore := s.Bytes()
	if err := s.Reject(ctx, got[2], "max_msg_size", errors.New("message size exceeds maximum allowed")); err != nil {
		t.Fatal(err)
	}
	if err := s.Reject(ctx, spool.Entry{Seq: 99}, "no_stream", nil); err != nil {
		t.Fatalf("rejecting a batch not in the queue: %v", err)
	}
	if s.Len() != 2 || s.Rejected() != 1 || s.Bytes() != bytesBefore-int64(len(before)) {
		t.Fatalf("after reject: len %d, rejected %d, bytes %d (was %d, file %d)", s.Len(), s.Rejected(), s.Bytes(), bytesBefore, len(before))
	}
	if got, _ := s.Oldest(ctx, 10); ids(got) != "1:id-0 2:id-1" {
		t.Fatalf("queue after reject = %q", ids(got))
	}
	moved, err := os.ReadFile(filepath.Join(dir, spool.RejectedDir, "00000000000000000003.batch"))
	if err != nil || !bytes.Equal(moved, before) {
		t.Fatalf("rejected file differs from the spooled one (%v)", err)
	}
	sidecar, err := os.ReadFile(filepath.Join(dir, spool.RejectedDir, "00000000000000000003.reason"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("reason: max_msg_size\ntime: 2026-12-02T14:03:11Z\nsubject: cost.samples.c1\nid: id-2\nsamples: 3\nbytes: %d\nerror: message size exceeds maximum allowed\n", len(before))
	if string(sidecar) != want {
		t.Fatalf("sidecar =\n%s\nwant\n%s", sidecar, want)
	}
	if d := counters(t, reader, "cost.collector.rejected.batches"); len(d) != 1 || d["max_msg_size"] != 1 {
		t.Fatalf("rejected batches = %v", d)
	}
	if d := counters(t, reader, "cost.collector.rejected.samples"); len(d) != 1 || d["max_msg_size"] != 3 {
		t.Fatalf("rejected samples = %v", d)
	}
	if d := gauge(t, reader, "cost.collector.spool.rejected.batches"); d != 1 {
		t.Fatalf("rejected gauge = %d", d)
	}

	// Reopen with the queue emptied: new batches are numbered after the
	// rejected one.
	if err := s.Remove(1, 2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 1<<20, clock)
	if s.Len() != 0 || s.Rejected() != 1 {
		t.Fatalf("reopened: len %d, rejected %d", s.Len(), s.Rejected())
	}
	if err := s.Append(ctx, []spool.Entry{entry(5, 10)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Oldest(ctx, 10); ids(got) != "4:id-5" {
		t.Fatalf("after reopen = %q, want seq 4", ids(got))
	}
	s.Close()

	// The replay: the batch moved back is queued first, the sidecar goes.
	if err := os.Rename(filepath.Join(dir, spool.RejectedDir, "00000000000000000003.batch"), filepath.Join(dir, "00000000000000000003.batch")); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 1<<20, clock)
	defer s.Close()
	if got, _ := s.Oldest(ctx, 10); ids(got) != "3:id-2 4:id-5" || s.Rejected() != 0 {
		t.Fatalf("after moving back = %q, rejected %d", ids(got), s.Rejected())
	}
	if des, _ := os.ReadDir(filepath.Join(dir, spool.RejectedDir)); len(des) != 0 {
		t.Fatalf("rejected/ still holds %d files", len(des))
	}
}

// TestRejectedBound: rejected/ keeps at most MaxBytes; past it the oldest
// rejected batches are deleted (with their sidecars) and counted as
// dropped with reason "rejected".
func TestRejectedBound(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	dir := t.TempDir()
	const max = spool.MinBytes
	s := open(t, dir, max, spool.WithMeter(mp.Meter("test")))
	defer s.Close()
	// Ten batches of ~300 KiB, each rejected as soon as it is spooled:
	// three fit in rejected/.
	for i := range 10 {
		if err := s.Append(ctx, []spool.Entry{entry(i, 300<<10)}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Oldest(ctx, 1)
		if err != nil || len(got) != 1 {
			t.Fatalf("oldest: %v, %d", err, len(got))
		}
		if err := s.Reject(ctx, got[0], "no_stream", nil); err != nil {
			t.Fatal(err)
		}
	}
	if s.Rejected() != 3 || s.Len() != 0 {
		t.Fatalf("rejected %d, queued %d; want 3 and 0", s.Rejected(), s.Len())
	}
	des, _ := os.ReadDir(filepath.Join(dir, spool.RejectedDir))
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	if want := "00000000000000000008.batch 00000000000000000008.reason 00000000000000000009.batch 00000000000000000009.reason 00000000000000000010.batch 00000000000000000010.reason"; strings.Join(names, " ") != want {
		t.Fatalf("rejected/ = %v", names)
	}
	// Batches 0..6 held 1+…+7 samples.
	if d := droppedSamples(t, reader); len(d) != 1 || d[spool.ReasonRejected] != 28 {
		t.Fatalf("dropped = %v, want 28 for reason rejected", d)
	}
	if d := counters(t, reader, "cost.collector.rejected.samples"); d["no_stream"] != 55 {
		t.Fatalf("rejected samples = %v, want 55", d)
	}
}

func counters(t *testing.T, r *sdkmetric.ManualReader, name string) map[string]int64 {
	t.Helper()
	return testenv.CounterBy(t, r, name, "reason")
}

func gauge(t *testing.T, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				var v int64
				for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					v += dp.Value
				}
				return v
			}
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
