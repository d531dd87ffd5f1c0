package aggregator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/pipelinetest"
	"github.com/alauda/costmeter/internal/redisconn"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// testRetention keeps fixed 2025 dates alive in Redis: the default 400
// days would expire them at once against today's clock.
const testRetention = 20 * 365 * 24 * time.Hour

// testNow is the aggregator's clock in these tests.
var testNow = time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	testenv.RunChild(map[string]func([]string) int{"aggregator": func([]string) int { return runChild() }})
	goleak.VerifyTestMain(m)
}

// runChild is an aggregator process for kill -9 tests. COSTMETER_KILL_AT
// ("decoded:N" or "committed:N") makes it SIGKILL itself at that stage of
// its N-th batch; COSTMETER_WORKERS sets its number of workers.
func runChild() int {
	var logw io.Writer = io.Discard
	if os.Getenv("COSTMETER_CHILD_LOG") != "" {
		logw = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rdb, err := redisconn.Dial(os.Getenv("REDIS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var keys []string
	if k := os.Getenv("COSTMETER_GROUP_KEYS"); k != "" {
		keys = strings.Split(k, ",")
	}
	store, _ := rollup.NewStore(rdb, time.UTC, testRetention, rollup.WithGroupKeys(keys))
	if err := store.LoadScripts(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	nc, js, err := natsconn.Connect(os.Getenv("NATS_URL"), "child", log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer nc.Close()
	var opts []aggregator.Option
	if at := os.Getenv("COSTMETER_KILL_AT"); at != "" {
		var stage string
		var n int
		fmt.Sscanf(strings.Replace(at, ":", " ", 1), "%s %d", &stage, &n)
		var mu sync.Mutex
		seen := map[aggregator.Stage]int{}
		opts = append(opts, aggregator.WithStageHook(func(s aggregator.Stage) {
			mu.Lock()
			defer mu.Unlock()
			seen[s]++
			want := aggregator.StageDecoded
			if stage == "committed" {
				want = aggregator.StageCommitted
			}
			if s == want && seen[s] == n {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}))
	}
	cfg := aggregator.DefaultConfig()
	// Batches of one fetch each, so that the kill's stage count (the N-th
	// batch) falls mid-stream.
	cfg.BatchSize, cfg.MaxBatch = 20, 20
	cfg.Stream.AckWait = 2 * time.Second
	if w := os.Getenv("COSTMETER_WORKERS"); w != "" {
		if cfg.Workers, err = strconv.Atoi(w); err != nil {
			fmt.Fprintln(os.Stderr, "COSTMETER_WORKERS:", err)
			return 2
		}
	}
	opts = append(opts, aggregator.WithLogger(log), aggregator.WithClock(func() time.Time { return testNow }))
	agg, err := aggregator.New(cfg, js, store, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := agg.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// env is one test's servers and clients.
type env struct {
	t     *testing.T
	nats  *testenv.NATS
	redis *testenv.Redis
	nc    *nats.Conn
	js    jetstream.JetStream
	store *rollup.Store
	pub   *collector.Publisher
	log   *slog.Logger
}

func newEnv(t *testing.T, opts ...testenv.RedisOption) *env {
	t.Helper()
	e := &env{t: t, nats: testenv.StartNATS(t), redis: testenv.StartRedis(t, opts...)}
	e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	var err error
	e.nc, e.js, err = natsconn.Connect(e.nats.URL(), "test", e.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	e.store, err = rollup.NewStore(e.redis.Client(), time.UTC, testRetention)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.LoadScripts(context.Background()); err != nil {
		t.Fatal(err)
	}
	scfg := stream.DefaultConfig()
	scfg.AckWait = 2 * time.Second
	if err := stream.Ensure(context.Background(), e.js, scfg); err != nil {
		t.Fatal(err)
	}
	e.pub, err = collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 50}, e.log)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startAggregator runs an in-process aggregator until the test ends or
// the returned stop is called.
func (e *env) startAggregator(batch int) (stop func()) {
	e.t.Helper()
	cfg := aggregator.DefaultConfig()
	cfg.BatchSize = batch
	cfg.HealInterval = 100 * time.Millisecond
	cfg.Stream.AckWait = 2 * time.Second
	agg, err := aggregator.New(cfg, e.js, e.store, aggregator.WithLogger(e.log), aggregator.WithClock(func() time.Time { return testNow }))
	if err != nil {
		e.t.Fatal(err)
	}
	return pipelinetest.Start(e.t, agg)
}

// TestGatherBacklog: while a backlog waits, a batch gathers consecutive
// full fetches up to --batch-max messages, and stops early at
// --batch-max-pieces namespace-days; totals stay exact either way.
func TestGatherBacklog(t *testing.T) {
	cases := []struct {
		name                  string
		namespaces, windows   int
		maxBatch, pieces      int
		wantBatches, batchMsg int
	}{
		// 6 namespaces × 50 windows = 300 samples in 60 messages of 5;
		// fetches of 10: the first batch gathers 50 messages, the second
		// the last 10.
		{"up to --batch-max", 6, 50, 50, 0, 2, 50},
		// 100 namespaces × 3 windows = 300 samples: a fetch of 10 messages
		// holds 50 namespaces, so a budget of 80 namespace-days stops the
		// gathering after the second fetch: three batches of 20 messages.
		{"up to --batch-max-pieces", 100, 3, 50, 80, 3, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			samples := gen("east", tc.namespaces, time.Date(2025, 6, 5, 8, 0, 0, 0, time.UTC), tc.windows, time.Minute)
			l := pipelinetest.NewLedger()
			l.Add(samples...)
			pub, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 5}, e.log)
			if err := pub.Publish(ctx, samples); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			batches := 0
			cfg := aggregator.DefaultConfig()
			cfg.BatchSize, cfg.MaxBatch, cfg.MaxBatchPieces, cfg.Workers = 10, tc.maxBatch, tc.pieces, 1
			hook := aggregator.WithStageHook(func(s aggregator.Stage) {
				if s == aggregator.StageDecoded {
					mu.Lock()
					batches++
					mu.Unlock()
				}
			})
			agg, err := aggregator.New(cfg, e.js, e.store, aggregator.WithLogger(e.log), aggregator.WithClock(func() time.Time { return testNow }), hook)
			if err != nil {
				t.Fatal(err)
			}
			pipelinetest.Start(t, agg)
			e.waitExact(l, 30*time.Second)
			testenv.Eventually(t, 10*time.Second, "every message acknowledged", func() (bool, string) {
				info, err := e.consumerInfo()
				if err != nil {
					return false, err.Error()
				}
				return info.AckFloor.Stream == 60, fmt.Sprint("ack floor ", info.AckFloor.Stream)
			})
			mu.Lock()
			defer mu.Unlock()
			if batches != tc.wantBatches {
				t.Errorf("%d batches, want %d (60 messages: batches of %d)", batches, tc.wantBatches, tc.batchMsg)
			}
		})
	}
}

// ledger is the test's own account of what must be in Redis.
type ledger = pipelinetest.Ledger

var gen = pipelinetest.Gen

// diff compares the ledger with Redis and returns the first mismatch.
func (e *env) diff(l *ledger) string { return l.Diff(context.Background(), e.store) }

// waitExact waits until the stream is drained and Redis equals the ledger.
func (e *env) waitExact(l *ledger, within time.Duration) {
	e.t.Helper()
	pipelinetest.WaitExact(e.t, e.js, e.store, l, within)
}

// deadLetters counts the dead-letter stream's messages by reason.
func (e *env) deadLetters() map[string]int { return pipelinetest.MustDeadLetters(e.t, e.js) }

func TestPipelineExactlyOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Two clusters, windows crossing midnight, the same namespace name in
	// both clusters.
	start := time.Date(2025, 6, 1, 23, 50, 0, 0, time.UTC)
	east := gen("east", 12, start, 25, time.Minute)
	west := gen("west.example", 5, start, 25, time.Minute)
	l := pipelinetest.NewLedger()
	l.Add(east...)
	l.Add(west...)
	if err := e.pub.Publish(ctx, append(append([]sample.Sample{}, east...), west...)); err != nil {
		t.Fatal(err)
	}
	e.startAggregator(16)
	e.waitExact(l, 30*time.Second)

	// A collector retrying and a file imported twice: new messages (other
	// batching, so other ids), same windows: nothing counts twice.
	pub2, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 7}, e.log)
	if err := pub2.Publish(ctx, east[:100]); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Publish(ctx, east); err != nil { // same ids: deduplicated by JetStream
		t.Fatal(err)
	}

	// A window straddling counted and uncounted time: refused as overlap.
	over := east[0]
	over.Start, over.End = start.Add(24*time.Minute+30*time.Second), start.Add(25*time.Minute+30*time.Second)
	// Bad input on the samples subject, none of which may disturb the rest.
	bad := []struct{ subj, body string }{
		{"cost.samples.east", `{"cluster":"east"`},
		{"cost.samples.east", `not json at all`},
		{"cost.samples.east", `[{"cluster":"east","project":"p","namespace":"BAD NAME","start":"2025-06-02T00:00:00Z","end":"2025-06-02T00:01:00Z"}]`},
		{"cost.samples.east", `{"cluster":"east","project":"p","namespace":"n","start":"2025-06-02T00:00:00Z","end":"2025-06-02T00:01:00Z","cpu":{"usage":-1}}`},
		{"cost.samples.east", `{"cluster":"east","project":"p","namespace":"n","start":"2025-06-02T00:00:00Z","end":"2025-06-03T00:01:00Z"}`},
		{"cost.samples.east", `{"cluster":"west","project":"p","namespace":"n","start":"2025-06-02T00:00:00Z","end":"2025-06-02T00:01:00Z"}`},
		{"cost.samples.east", `{"cluster":"east","project":"p","namespace":"n","start":"2004-01-02T00:00:00Z","end":"2004-01-02T00:01:00Z"}`},
		{"cost.samples.east", `{"cluster":"east","project":"p","namespace":"n","start":"2025-07-02T00:00:00Z","end":"2025-07-02T00:01:00Z"}`},
		{"cost.samples.east", `{"cluster":"east","project":"a:b{c}*","namespace":"n","start":"2025-06-02T00:00:00Z","end":"2025-06-02T00:01:00Z"}`},
		{"cost.samples.east", `{"cluster":"east","project":"p","namespace":"n","start":"2025-06-02T00:00:00Z","end":"2025-06-02T00:01:00Z","cpu":{"usage":1},"cpuz":{}}`},
	}
	for _, b := range bad {
		if _, err := e.js.Publish(ctx, b.subj, []byte(b.body)); err != nil {
			t.Fatal(err)
		}
	}
	// A message mixing a good and a bad sample: the good one counts.
	good := gen("east", 1, time.Date(2025, 6, 3, 8, 0, 0, 0, time.UTC), 1, time.Hour)
	l.Add(good...)
	mixed := "[" + string(sample.AppendJSON(nil, &good[0])) + `,{"cluster":"east"}]`
	if _, err := e.js.Publish(ctx, "cost.samples.east", []byte(mixed)); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Publish(ctx, []sample.Sample{over}); err != nil {
		t.Fatal(err)
	}
	e.waitExact(l, 30*time.Second)
	want := map[string]int{"decode": 2, "invalid": 6, "subject": 1, "expired": 1, "future": 1, "overlap": 1}
	testenv.Eventually(t, 10*time.Second, "dead letters by reason", func() (bool, string) {
		got := e.deadLetters()
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("got %v, want %v", got, want)
	})
	// Every dead letter names its reason.
	st, _ := e.js.Stream(ctx, stream.DeadLetter)
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(stream.HeaderReason) == "" || m.Header.Get(stream.HeaderSubject) != "cost.samples.east" {
		t.Errorf("dead letter headers %v lack the reason or subject", m.Header)
	}
}

func TestTwoAggregatorsAtOnce(t *testing.T) {
	e := newEnv(t)
	samples := gen("east", 40, time.Date(2025, 6, 4, 22, 0, 0, 0, time.UTC), 30, 5*time.Minute)
	l := pipelinetest.NewLedger()
	l.Add(samples...)
	// Publish duplicates too, so both replicas race on the same windows.
	pub2, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 13}, e.log)
	e.startAggregator(8)
	e.startAggregator(8)
	if err := e.pub.Publish(context.Background(), samples); err != nil {
		t.Fatal(err)
	}
	if err := pub2.Publish(context.Background(), samples); err != nil {
		t.Fatal(err)
	}
	e.waitExact(l, 60*time.Second)
}

// startChild runs an aggregator child process (runChild) that kills
// itself at killAt; extra is more of its environment
// (COSTMETER_WORKERS=n).
func (e *env) startChild(killAt string, extra ...string) *exec.Cmd {
	e.t.Helper()
	cmd := testenv.ChildCommand("aggregator")
	cmd.Env = append(cmd.Env, "NATS_URL="+e.nats.URL(), "REDIS_URL="+e.redis.URL(), "COSTMETER_KILL_AT="+killAt)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestKill9MidBatch(t *testing.T) {
	e := newEnv(t)
	samples := gen("east", 30, time.Date(2025, 6, 5, 23, 0, 0, 0, time.UTC), 40, 3*time.Minute)
	l := pipelinetest.NewLedger()
	l.Add(samples...)
	small, _ := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 5}, e.log)
	if err := small.Publish(context.Background(), samples); err != nil {
		t.Fatal(err)
	}
	// Killed by itself before its 3rd batch's Redis write, then between a
	// write and its ack, then at a moment of our choosing, mid-stream.
	for _, at := range []string{"decoded:3", "committed:2", "committed:5", "decoded:1"} {
		cmd := e.startChild(at)
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("child with kill at %s ended with %v, want SIGKILL", at, err)
		}
	}
	cmd := e.startChild("")
	testenv.Eventually(t, 30*time.Second, "progress before the external kill", func() (bool, string) {
		info, err := e.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		return info.AckFloor.Stream > 8, fmt.Sprint("ack floor ", info.AckFloor.Stream)
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	e.startChild("")
	e.waitExact(l, 60*time.Second)
}

func (e *env) consumerInfo() (*jetstream.ConsumerInfo, error) { return pipelinetest.ConsumerInfo(e.js) }

func TestHealsRedisTailLoss(t *testing.T) {
	e := newEnv(t, testenv.WithAOF())
	ctx := context.Background()
	first := gen("east", 10, time.Date(2025, 6, 6, 10, 0, 0, 0, time.UTC), 10, time.Minute)
	second := gen("east", 10, time.Date(2025, 6, 6, 11, 0, 0, 0, time.UTC), 10, time.Minute)
	l := pipelinetest.NewLedger()
	l.Add(first...)
	stop := e.startAggregator(50)
	if err := e.pub.Publish(ctx, first); err != nil {
		t.Fatal(err)
	}
	e.waitExact(l, 30*time.Second)
	stop()
	files := e.redis.AOFFiles()
	if len(files) == 0 {
		t.Fatal("no AOF file")
	}
	st, err := os.Stat(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	kept := st.Size()

	stop = e.startAggregator(50)
	if err := e.pub.Publish(ctx, second); err != nil {
		t.Fatal(err)
	}
	l.Add(second...)
	e.waitExact(l, 30*time.Second)
	stop()
	// The crash loses every write since `kept`: the second batch's rollups
	// and its applied marks, although JetStream saw it acknowledged.
	e.redis.Kill()
	if err := os.Truncate(files[len(files)-1], kept); err != nil {
		t.Fatal(err)
	}
	e.redis.Restart()
	if d := e.diff(l); d == "" {
		t.Fatal("truncating the AOF lost nothing; the test proves nothing")
	}
	e.startAggregator(50)
	e.waitExact(l, 30*time.Second)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*aggregator.Config)
		want string
	}{
		{"defaults", func(*aggregator.Config) {}, ""},
		{"batch", func(c *aggregator.Config) { c.BatchSize = 0 }, "--batch-size"},
		{"workers", func(c *aggregator.Config) { c.Workers = 0 }, "--workers"},
		{"max age", func(c *aggregator.Config) { c.Stream.SamplesMaxAge = time.Minute }, "--stream-max-age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := aggregator.DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}
