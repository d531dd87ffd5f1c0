package faults_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// importer publishes bursts of samples one after the other, as an import
// does, until stopped, and books every burst JetStream acknowledged in the
// ledger with the time of its acknowledgement. It never runs out: after
// 1000 bursts of a cluster it goes on with the next cluster.
type importer struct {
	mu    sync.Mutex
	acked []time.Time
	err   error
	done  bool
}

func (im *importer) run(ctx context.Context, stop <-chan struct{}, pub *collector.Publisher, l *ledger) {
	var err error
	for b := 0; ; b++ {
		select {
		case <-stop:
		default:
			// Windows from June 1st on, all before the aggregators' clock.
			cluster := fmt.Sprintf("east-%d", b/1000)
			s := gen(cluster, 25, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(b%1000)*5*time.Minute), 4, time.Minute)
			if err = pub.Publish(ctx, s); err == nil {
				l.Add(s...)
				im.mu.Lock()
				im.acked = append(im.acked, time.Now())
				im.mu.Unlock()
				if err = sleepCtx(ctx, 10*time.Millisecond); err == nil {
					continue
				}
			}
		}
		break
	}
	im.mu.Lock()
	im.err, im.done = err, true
	im.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (im *importer) count() int {
	im.mu.Lock()
	defer im.mu.Unlock()
	return len(im.acked)
}

func (im *importer) finished() (bool, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.done, im.err
}

// longestGap is the longest time between two acknowledged bursts (or
// from `from` to the first one) between from and until: how long the
// import stalled.
func (im *importer) longestGap(from, until time.Time) time.Duration {
	im.mu.Lock()
	defer im.mu.Unlock()
	var gap time.Duration
	prev := from
	for _, at := range im.acked {
		if at.Before(from) {
			continue
		}
		if at.After(until) {
			break
		}
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return gap
}

// progress samples the aggregators' ack floor to measure how long
// applying stalled.
type progress struct {
	mu     sync.Mutex
	points []progressPoint
}

type progressPoint struct {
	at    time.Time
	floor uint64
}

func (p *progress) run(ctx context.Context, e *env, done chan<- struct{}) {
	defer close(done)
	for ctx.Err() == nil {
		if info, err := e.consumerInfo(); err == nil {
			p.mu.Lock()
			p.points = append(p.points, progressPoint{time.Now(), info.AckFloor.Stream})
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// longestStall is the longest time the ack floor stood still, of the
// stalls that ended between from and until (the import publishes all the
// time, so a standing floor is a stall).
func (p *progress) longestStall(from, until time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		stall time.Duration
		last  time.Time
		floor uint64
	)
	for _, pt := range p.points {
		if pt.at.After(until) {
			break
		}
		if pt.floor > floor {
			if !last.IsZero() && !pt.at.Before(from) {
				stall = max(stall, pt.at.Sub(last))
			}
			last, floor = pt.at, pt.floor
		}
	}
	return stall
}

// killed9 reports whether cmd ended by SIGKILL.
func killed9(cmd *exec.Cmd) bool {
	var exit *exec.ExitError
	err := cmd.Wait()
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// writesOn is how many Lua script calls (the rollup writes) node served.
func writesOn(t *testing.T, node *testenv.Redis) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := node.Info(ctx, "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, k := range []string{"cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall"} {
		var calls int
		if _, err := fmt.Sscanf(info[k], "calls=%d", &calls); err == nil {
			n += calls
		}
	}
	return n
}

// slotOf returns a slot node serves now.
func slotOf(t *testing.T, c *testenv.RedisCluster, node *testenv.Redis) int {
	t.Helper()
	for slot := 0; slot < 16384; slot += 64 {
		if c.MasterOfSlot(slot) == node {
			return slot
		}
	}
	t.Fatalf("%s serves no slot", node.Addr())
	return -1
}

// TestHAFailover is the production topology under every fault at once: a
// 3-node JetStream cluster with streams of 3 replicas, a Redis Cluster of
// 3 masters and 3 replicas (AOF), two aggregator processes and an import
// publishing all the time. During the import a Redis master that took
// rollup writes is SIGKILLed and its replica takes over, the NATS server
// leading COST_SAMPLES is stopped, one aggregator is SIGKILLed (a
// replacement starts, as a Deployment would), then the NATS server and
// the Redis node start again. Nothing is lost, nothing counted twice, no
// manual step; each fault is proven to have happened.
func TestHAFailover(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	rc := testenv.StartRedisCluster(t, testenv.WithAOF())
	e := newEnvOn(t, c.URL(), rc.Client(), rc.URL())
	scfg := stream.DefaultConfig()
	scfg.AckWait = ackWait
	scfg.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stream.Ensure(ctx, e.js, scfg, stream.WithLogger(e.log)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "three current replicas of "+stream.Samples, func() (bool, string) {
		n := c.StreamPeers(stream.Samples)
		return n == 3, fmt.Sprint(n, " replicas")
	})
	replicas := "COST_STREAM_REPLICAS=3"
	agg1, agg2 := e.startChild(replicas), e.startChild(replicas)

	l := newLedger()
	pub := e.publisher(collector.PublisherConfig{MaxBatch: 10, AckTimeout: 500 * time.Millisecond})
	var im importer
	ictx, icancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer icancel()
	stopImport := make(chan struct{})
	go im.run(ictx, stopImport, pub, l)
	var prog progress
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	progDone := make(chan struct{})
	go prog.run(pctx, e, progDone)
	floor := func() uint64 {
		info, err := e.consumerInfo()
		if err != nil {
			return 0
		}
		return info.AckFloor.Stream
	}
	applying := func(what string, from uint64) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, what, func() (bool, string) {
			f := floor()
			return f > from+10, fmt.Sprint("ack floor ", f, " from ", from)
		})
	}
	testenv.Eventually(t, 60*time.Second, "bursts acknowledged and applied before the faults", func() (bool, string) {
		return im.count() >= 20 && floor() >= 10, fmt.Sprint(im.count(), " bursts, ack floor ", floor())
	})

	// Fault 1: SIGKILL a Redis master that took rollup writes.
	var master *testenv.Redis
	for _, m := range rc.Masters() {
		if writesOn(t, m) > 0 {
			master = m
			break
		}
	}
	if master == nil {
		t.Fatal("no Redis master took a rollup write: the test proves nothing")
	}
	slot := slotOf(t, rc, master)
	redisKilled := time.Now()
	before, publishedBefore := floor(), im.count()
	killed := rc.KillMaster(slot)
	promoted := time.Since(redisKilled)
	if killed != master || killed.Running() || rc.MasterOfSlot(slot) == master {
		t.Fatalf("slot %d: killed %s, master now %s: the test proves nothing", slot, killed.Addr(), rc.MasterOfSlot(slot).Addr())
	}
	applying("the aggregators apply after the Redis failover", before)
	redisResumed := time.Since(redisKilled)
	testenv.Eventually(t, 60*time.Second, "the import goes on after the Redis failover", func() (bool, string) {
		return im.count() >= publishedBefore+10, fmt.Sprint(im.count()-publishedBefore, " bursts since the kill")
	})

	// Fault 2: stop the NATS server that leads the samples stream.
	leader := c.WaitStreamLeader(stream.Samples, 10*time.Second)
	natsStopped := time.Now()
	published := im.count()
	leader.Stop()
	var next *testenv.NATSNode
	testenv.Eventually(t, 30*time.Second, "another node leads "+stream.Samples, func() (bool, string) {
		next = c.StreamLeader(stream.Samples)
		return next != nil && next != leader, fmt.Sprint("leader ", next)
	})
	testenv.Eventually(t, 60*time.Second, "the import goes on without the old leader", func() (bool, string) {
		return im.count() >= published+10, fmt.Sprint(im.count()-published, " bursts since the stop")
	})
	natsResumed := time.Since(natsStopped)

	// Fault 3: SIGKILL an aggregator; a replacement starts.
	if err := agg1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !killed9(agg1) {
		t.Fatal("the aggregator did not die of SIGKILL: the test proves nothing")
	}
	e.startChild(replicas)
	applying("the aggregators apply with one NATS server and one Redis master down", floor())

	// Both servers come back and catch up.
	leader.Start()
	rc.Restart(killed)
	testenv.Eventually(t, 60*time.Second, leader.Name()+" current again", func() (bool, string) {
		n := c.StreamPeers(stream.Samples)
		return n == 3, fmt.Sprint(n, " current replicas")
	})
	// The import ends only now: every fault happened during it.
	close(stopImport)
	testenv.Eventually(t, 2*time.Minute, "the import finished", func() (bool, string) {
		done, _ := im.finished()
		return done, fmt.Sprint(im.count(), " bursts")
	})
	if _, err := im.finished(); err != nil {
		t.Fatalf("import: %v", err)
	}
	e.waitExact(l, 3*time.Minute)
	if s := procState(agg2.Process.Pid); s == 0 || s == 'Z' {
		t.Fatalf("the aggregator that was not killed exited (state %q)", s)
	}
	pcancel()
	<-progDone
	t.Logf("redis master %s killed: replica promoted after %s, 10 more messages applied %s after the kill; "+
		"nats leader %s stopped: 10 more bursts acknowledged %s after the stop, publishing stalled at most %s, applying at most %s (%d progress samples)",
		killed.Addr(), promoted.Round(time.Millisecond), redisResumed.Round(time.Millisecond),
		leader.Name(), natsResumed.Round(time.Millisecond), im.longestGap(natsStopped, time.Now()).Round(time.Millisecond),
		prog.longestStall(natsStopped, time.Now()).Round(time.Millisecond), len(prog.points))
}
