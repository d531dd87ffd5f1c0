package exporter_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/exporter"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func([]string) int{"exporter": childExporter})
	os.Exit(m.Run())
}

// filesPut is what the child prints once the files of its last day are
// put and the manifest is not yet written.
const filesPut = "files-put"

// childExporter backfills the fixture's days to a target and, at the
// day-put hook of its stopAfter-th day (files put, manifest not
// written), prints filesPut and blocks until it is killed. Its args:
// redis address, NATS URL, price list path, target URL, stopAfter.
func childExporter(args []string) int {
	if len(args) != 5 {
		fmt.Fprintf(os.Stderr, "child exporter: %d args, want redis nats prices target stopAfter\n", len(args))
		return 2
	}
	stopAfter, err := strconv.Atoi(args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, "child exporter: stopAfter:", err)
		return 2
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: args[0]})
	defer rdb.Close()
	nc, err := nats.Connect(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "child exporter: connect to NATS:", err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child exporter: jetstream:", err)
		return 1
	}
	prices, err := pricing.Load(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "child exporter:", err)
		return 1
	}
	cfg := exporter.DefaultConfig()
	cfg.URL, cfg.CSV, cfg.LeaseTTL = args[3], true, 3*time.Second
	puts := 0
	hook := func(point string) {
		if point != "day-put" {
			return
		}
		if puts++; puts == stopAfter {
			fmt.Println(filesPut)
			select {} // until SIGKILL
		}
	}
	x, err := exporter.New(ctx, cfg, rollup.NewReader(rdb), js, time.UTC, "EUR",
		exporter.WithClock(func() time.Time { return now }), exporter.WithPrices(prices), exporter.WithHook(hook))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child exporter:", err)
		return 1
	}
	if err := x.Backfill(ctx, firstDay, lastDay); err != nil {
		fmt.Fprintln(os.Stderr, "child exporter: backfill:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "child exporter: finished without reaching its stop point")
	return 3
}

// TestKillBetweenFilesAndManifest: an exporter child process is killed
// with SIGKILL after putting all seven days' files of the period and
// before writing its manifest. No manifest exists then (a reader that
// starts from the manifest sees no half export); the next run, once the
// dead child's lease has expired, completes the period: a manifest whose
// files all exist with matching SHA-256, and every file byte for byte an
// uninterrupted export's.
func TestKillBetweenFilesAndManifest(t *testing.T) {
	e := newEnv(t)
	target := "file://" + e.dir
	cmd := testenv.ChildCommand("exporter", e.redis.Addr(), e.natsURL, e.pricesPath, target, "7")
	var stderr testenv.LockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if s.Text() == filesPut {
				line <- s.Text()
				return
			}
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if !ok || l != filesPut {
			t.Fatalf("the child exited before its files were put:\n%s", stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the child did not put its files within 2m:\n%s", stderr.String())
	}

	// Prove the fault: all data files are there, the manifest is not.
	day := rollup.DayFromDate(2026, time.November, 2)
	before := files(t, e.dir)
	var data int
	for p := range before {
		if strings.HasSuffix(p, "/focus.parquet") || strings.HasSuffix(p, "/focus.csv.gz") {
			data++
		}
	}
	if data != 14 {
		t.Fatalf("proves nothing: %d data files when killed, want 14 (7 days × Parquet + CSV): %v", data, keys(before))
	}
	if _, ok := before[exporter.ManifestPath(day)]; ok {
		t.Fatal("proves nothing: the manifest was written before the kill")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	_ = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL", cmd.ProcessState)
	}
	after := files(t, e.dir)
	if len(after) != len(before) {
		t.Fatalf("%d files after the kill, %d before: %v", len(after), len(before), keys(after))
	}
	if _, err := os.Stat(filepath.Join(e.dir, exporter.ManifestPath(day))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("manifest after the kill: %v, want none", err)
	}

	// The next run completes it once the dead child's lease expires
	// (LeaseTTL 3s): poll with a deadline.
	x := e.exporter(t, e.config(target))
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := x.Backfill(context.Background(), firstDay, lastDay)
		if err == nil {
			break
		}
		if !errors.Is(err, exporter.ErrLeaseHeld) || time.Now().After(deadline) {
			t.Fatalf("next run: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // polling the lease's expiry
	}
	checkManifest(t, e.dir, day, 7)

	clean := t.TempDir()
	if err := e.exporter(t, e.config("file://"+clean)).Backfill(context.Background(), firstDay, lastDay); err != nil {
		t.Fatal(err)
	}
	got, want := files(t, e.dir), files(t, clean)
	if len(got) != len(want) || len(got) != 15 {
		t.Fatalf("%d files after the completing run, %d in an uninterrupted export, want 15", len(got), len(want))
	}
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Errorf("%s differs from the uninterrupted export's", p)
		}
	}
}

func keys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
