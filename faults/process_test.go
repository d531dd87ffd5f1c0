package faults_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/aggregator"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestSIGSTOPPastAckWait stops an aggregator process (SIGSTOP, at the
// worst moments of a batch) for longer than the ack wait, lets a second
// aggregator take its messages over, then resumes it (SIGCONT): the
// stale batch it finishes must count nothing twice.
func TestSIGSTOPPastAckWait(t *testing.T) {
	for _, stage := range []string{"decoded", "committed"} {
		t.Run(stage, func(t *testing.T) {
			e := newEnv(t, testenv.StartNATS(t).URL())
			l := newLedger()
			first := gen("east", 20, time.Date(2025, 6, 7, 23, 0, 0, 0, time.UTC), 15, 3*time.Minute)
			if err := e.pub.Publish(context.Background(), first); err != nil {
				t.Fatal(err)
			}
			l.Add(first...)
			child := e.startChild(envStopAt + "=" + stage + ":2")
			pid := child.Process.Pid
			testenv.Eventually(t, 30*time.Second, "the child stopped itself mid-batch", func() (bool, string) {
				s := procState(pid)
				return s == 'T', fmt.Sprintf("state %q", s)
			})
			stopped := time.Now()
			e.startAggregator()
			// Drained means the stopped child's batch was redelivered to the
			// other aggregator after the ack wait and acknowledged by it.
			e.waitExact(l, 60*time.Second)
			if d := time.Since(stopped); d < ackWait {
				t.Fatalf("drained %s after the stop, before the ack wait %s: the child held nothing", d, ackWait)
			}
			if err := child.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 10*time.Second, "the child runs again", func() (bool, string) {
				s := procState(pid)
				return s != 'T' && s != 0, fmt.Sprintf("state %q", s)
			})
			// Both work on: more samples, and the resumed child's stale batch.
			second := gen("east", 20, time.Date(2025, 6, 8, 1, 0, 0, 0, time.UTC), 10, 3*time.Minute)
			if err := e.pub.Publish(context.Background(), second); err != nil {
				t.Fatal(err)
			}
			l.Add(second...)
			e.waitExact(l, 60*time.Second)
			if s := procState(pid); s == 0 || s == 'Z' {
				t.Fatalf("the resumed child exited (state %q)", s)
			}
		})
	}
}

// TestKill9NATSDuringPublishBurst kills nats-server -9 while a collector
// publishes bursts and an aggregator consumes, and restarts it on the same
// store: every burst the collector saw acknowledged is counted once.
func TestKill9NATSDuringPublishBurst(t *testing.T) {
	n := startNATSChild(t)
	e := newEnv(t, n.url())
	e.startAggregator()
	l := newLedger()
	pub := e.publisher(collector.PublisherConfig{MaxBatch: 10, AckTimeout: 500 * time.Millisecond})
	const bursts = 200
	var (
		mu    sync.Mutex
		acked int
		err   error
		done  bool
	)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var perr error
		for b := range bursts {
			// Windows from June 1st on, all before the aggregators' clock.
			s := gen("east", 25, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(b)*10*time.Minute), 4, time.Minute)
			if perr = pub.Publish(ctx, s); perr != nil {
				break
			}
			l.Add(s...)
			mu.Lock()
			acked++
			mu.Unlock()
		}
		mu.Lock()
		err, done = perr, true
		mu.Unlock()
	}()
	testenv.Eventually(t, 30*time.Second, "some bursts acknowledged", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return acked >= 5, fmt.Sprint(acked, " bursts")
	})
	mu.Lock()
	before := acked
	mu.Unlock()
	n.kill()
	n.start()
	testenv.Eventually(t, 2*time.Minute, "every burst acknowledged after the restart", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return done, fmt.Sprint(acked, " bursts")
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if before >= bursts-1 {
		t.Fatalf("the kill came after %d of %d bursts: not during the burst", before, bursts)
	}
	e.waitExact(l, 90*time.Second)
}

// TestKill9Redis kills redis-server -9 while batches are applied and
// restarts it from its AOF: the aggregator reloads its scripts, retries,
// and the totals are exact. The kill comes from the aggregator's own
// stage hook, once part of the second set is acknowledged, right after a
// batch is decoded: that batch's commit meets a dead Redis, so the fault
// always interrupts work in flight.
func TestKill9Redis(t *testing.T) {
	e := newEnv(t, testenv.StartNATS(t).URL(), testenv.WithAOF())
	armed, killed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.startAggregator(aggregator.WithStageHook(func(s aggregator.Stage) {
		if s != aggregator.StageDecoded {
			return
		}
		select {
		case <-armed:
			once.Do(func() {
				e.redis.Kill()
				close(killed)
			})
		default:
		}
	}))
	l := newLedger()
	first := gen("east", 10, time.Date(2025, 6, 5, 10, 0, 0, 0, time.UTC), 10, time.Minute)
	if err := e.pub.Publish(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	l.Add(first...)
	e.waitExact(l, 30*time.Second)
	base, err := e.consumerInfo()
	if err != nil {
		t.Fatal(err)
	}
	second := gen("east", 10, time.Date(2025, 6, 5, 12, 0, 0, 0, time.UTC), 60, time.Minute)
	if err := e.pub.Publish(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	l.Add(second...)
	testenv.Eventually(t, 30*time.Second, "part of the second set applied", func() (bool, string) {
		info, err := e.consumerInfo()
		if err != nil {
			return false, err.Error()
		}
		return info.AckFloor.Stream > base.AckFloor.Stream+10, fmt.Sprint("ack floor ", info.AckFloor.Stream)
	})
	close(armed)
	select {
	case <-killed:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch was decoded after part of the second set was applied: the kill interrupted nothing; the test proves nothing")
	}
	// Redis is down and the decoded batch cannot commit: work is left.
	info, err := e.consumerInfo()
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending+uint64(info.NumAckPending) == 0 {
		t.Fatalf("nothing pending after the kill (ack floor %d): the test proves nothing", info.AckFloor.Stream)
	}
	e.redis.Restart()
	e.waitExact(l, 60*time.Second)
}

// TestRedisAOFTailCut restarts Redis from an AOF whose last bytes were
// cut mid-command, as a crash loses the last second with appendfsync
// everysec: Redis drops the incomplete transaction, and the aggregator
// replays what Redis lost from the stream.
func TestRedisAOFTailCut(t *testing.T) {
	e := newEnv(t, testenv.StartNATS(t).URL(), testenv.WithAOF())
	l := newLedger()
	s := gen("east", 10, time.Date(2025, 6, 4, 10, 0, 0, 0, time.UTC), 30, time.Minute)
	stop := e.startAggregator()
	if err := e.pub.Publish(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	l.Add(s...)
	e.waitExact(l, 30*time.Second)
	stop()
	e.redis.Kill()
	// Cut inside the transaction of the last rollup write: the tail
	// holds that write and the applied marks written after it.
	if err := e.redis.AOFTruncateToCommand("BITFIELD", 1); err != nil {
		t.Fatal(err)
	}
	e.redis.Restart()
	if d := e.diff(l); d == "" {
		t.Fatal("cutting the AOF tail lost nothing; the test proves nothing")
	}
	e.startAggregator()
	e.waitExact(l, 60*time.Second)
}

// TestCollectorRetryAndReimport: a collector whose publishes time out
// while NATS is down retries until acknowledged; a whole NDJSON file
// imported again (same batching, then other batching, so other message
// ids) counts nothing twice.
func TestCollectorRetryAndReimport(t *testing.T) {
	n := testenv.StartNATS(t)
	e := newEnv(t, n.URL())
	e.startAggregator()
	l := newLedger()
	ctx := context.Background()

	retries := &countHandler{match: "publish failed; retrying"}
	pub, err := collector.NewPublisher(e.js, collector.PublisherConfig{MaxBatch: 5, AckTimeout: 200 * time.Millisecond}, slogWith(retries))
	if err != nil {
		t.Fatal(err)
	}
	down := gen("west", 8, time.Date(2025, 6, 3, 8, 0, 0, 0, time.UTC), 10, time.Minute)
	n.Stop()
	errc := make(chan error, 1)
	go func() { errc <- pub.Publish(ctx, down) }()
	testenv.Eventually(t, 30*time.Second, "the collector retried after timeouts", func() (bool, string) {
		return retries.count() >= 2, fmt.Sprint(retries.count(), " retries")
	})
	n.Restart()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("publish did not finish after NATS came back")
	}
	l.Add(down...)
	e.waitExact(l, 60*time.Second)

	file := gen("east", 12, time.Date(2025, 6, 3, 22, 0, 0, 0, time.UTC), 30, 5*time.Minute)
	var ndjson []byte
	for i := range file {
		ndjson = append(sample.AppendJSON(ndjson, &file[i]), '\n')
	}
	ndjson = append(ndjson, "{\"cluster\":\"east\",\"project\":\"p\",\"namespace\":\"BAD\"}\n"...)
	l.Add(file...)
	for i, p := range []*collector.Publisher{e.pub, e.pub, e.publisher(collector.PublisherConfig{MaxBatch: 7})} {
		var report bytesBuffer
		sum, err := collector.Import(ctx, bytesReader(ndjson), p, &report)
		if err != nil {
			t.Fatalf("import %d: %v", i+1, err)
		}
		if sum.Accepted != len(file) || sum.Rejected != 1 {
			t.Fatalf("import %d: %+v, report %s", i+1, sum, report.String())
		}
		e.waitExact(l, 60*time.Second)
	}
}
