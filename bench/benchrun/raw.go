package benchrun

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// rawStream is a stream configured like the samples stream, on its own
// subjects, for the raw JetStream stages.
const (
	rawStream   = "BENCH_RAW"
	rawSubject  = "bench.raw.sim"
	rawConsumer = "bench"
)

// Section names of the report.
const (
	secRaw     = "raw"
	secIngest  = "ingest"
	secQuery   = "query"
	secMemory  = "memory"
	secLoad    = "load"
	secLive    = "live"
	rawPublish = "jetstream publish (async, acked), batches of 500"
	rawConsume = "jetstream consume + ack (2 pull workers, fetch as the aggregator), batches of 500"
	rawIncr    = "redis BITFIELD INCRBY i64 ×12 fields, pipelined 1000, 2 conns"
)

func runRaw(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	msgs, err := rawMessages(20)
	if err != nil {
		return err
	}
	sc := stream.DefaultConfig()
	if _, err := srv.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{"bench.raw.>"}, Retention: jetstream.LimitsPolicy,
		MaxAge: sc.SamplesMaxAge, Duplicates: sc.DuplicateWindow, Storage: jetstream.FileStorage, Discard: jetstream.DiscardOld,
	}); err != nil {
		return fmt.Errorf("create raw stream: %w", err)
	}
	n := cfg.Sizes.RawMessages
	bytes := 0
	for i := range n {
		bytes += len(msgs[i%len(msgs)].Data)
	}

	// Publish: every message asynchronously with its own id, then wait for
	// every acknowledgement.
	t0 := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		m := nats.NewMsg(rawSubject)
		m.Data = msgs[i%len(msgs)].Data
		m.Header.Set(jetstream.MsgIDHeader, "raw-"+strconv.Itoa(i))
		f, err := srv.js.PublishMsgAsync(m, jetstream.WithExpectStream(rawStream))
		if err != nil {
			return fmt.Errorf("raw publish: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("raw publish: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	el := time.Since(t0).Seconds()
	rep.add(Row{Section: secRaw, Name: rawPublish, Value: float64(n*defaultBatch) / el, Unit: "samples/s",
		Note: fmt.Sprintf("%d messages, %.0f msgs/s, %.0f MiB/s", n, float64(n)/el, float64(bytes)/mib/el)})
	log.Info("raw publish", "samples_per_s", int(float64(n*defaultBatch)/el))

	// Consume with acknowledgement, as the aggregator fetches.
	cons, err := srv.js.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{
		Durable: rawConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: sc.AckWait, MaxAckPending: 100_000, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("create raw consumer: %w", err)
	}
	t0 = time.Now()
	var (
		mu   sync.Mutex
		got  int
		errs []error
		wg   sync.WaitGroup
	)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				left := n - got
				mu.Unlock()
				if left <= 0 || ctx.Err() != nil {
					return
				}
				// Never more than is left: a fetch waits to fill itself.
				batch, err := cons.Fetch(min(cfg.AggregatorBatch, left), jetstream.FetchMaxWait(100*time.Millisecond))
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				k := 0
				for m := range batch.Messages() {
					_ = m.Ack()
					k++
				}
				mu.Lock()
				got += k
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("raw consume: %w", errs[0])
	}
	for {
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("raw consumer info: %w", err)
		}
		if ci.AckFloor.Stream >= uint64(n) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	el = time.Since(t0).Seconds()
	rep.add(Row{Section: secRaw, Name: rawConsume, Value: float64(n*defaultBatch) / el, Unit: "samples/s",
		Note: fmt.Sprintf("%.0f msgs/s, timed until the ack floor reached the last message", float64(n)/el)})
	log.Info("raw consume", "samples_per_s", int(float64(n*defaultBatch)/el))

	if err := rawRedis(ctx, srv.rdb, cfg.Sizes.RawIncrements, rep); err != nil {
		return err
	}
	rawDecode(msgs, rep)
	return nil
}

// rawMessages encodes k messages of the collector's default batch size
// from simulated clusters, as the Publisher does.
func rawMessages(k int) ([]collector.Message, error) {
	now := time.Date(2025, 7, 15, 12, 0, 0, 0, time.UTC)
	sim, err := collector.NewSimulator(collector.SimConfig{Clusters: []string{"sim"}, Projects: 200, Namespaces: k * defaultBatch, Interval: time.Minute, Backfill: time.Minute}, func() time.Time { return now })
	if err != nil {
		return nil, err
	}
	var all []sample.Sample
	if err := sim.Run(context.Background(), func(_ context.Context, s []sample.Sample) error {
		all = append(all, s...)
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]collector.Message, 0, k)
	for i := 0; i+defaultBatch <= len(all); i += defaultBatch {
		out = append(out, collector.Message{Subject: rawSubject, Data: sample.EncodeBatch(nil, all[i:i+defaultBatch]), Samples: defaultBatch})
	}
	return out, nil
}

// rawRedis sends n BITFIELD commands of 12 INCRBY i64 each, on day-rollup
// keys of the layout, from 2 connections with pipelines of 1000: what the
// aggregator's script issues per namespace-day, without the script.
func rawRedis(ctx context.Context, rdb *redis.Client, n int, rep *Report) error {
	const (
		conns    = 2
		pipeLen  = 1000
		entities = 10_000
	)
	first := rollup.DayFromDate(2025, time.July, 1)
	t0 := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipe := rdb.Pipeline()
			for i := c; i < n; i += conns {
				e := rollup.Entity{Project: "p" + strconv.Itoa(i%200), Cluster: "c" + strconv.Itoa(i%3), Namespace: "ns-" + strconv.Itoa(i%entities)}
				// Keys shaped like day rollups, outside the layout.
				key := "bench:raw:" + (first + rollup.Day(i/entities%31)).String() + ":" + e.Member(rollup.ScopeNamespace)
				args := make([]any, 0, 4+4*rollup.Fields)
				args = append(args, "BITFIELD", key, "OVERFLOW", "FAIL")
				for f := range rollup.Fields {
					args = append(args, "INCRBY", "i64", "#"+strconv.Itoa(f), 60_000_000+i%1000)
				}
				pipe.Do(ctx, args...)
				if pipe.Len() == pipeLen || i+conns >= n {
					if _, err := pipe.Exec(ctx); err != nil {
						errc <- fmt.Errorf("raw redis pipeline: %w", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	el := time.Since(t0).Seconds()
	rep.add(Row{Section: secRaw, Name: rawIncr, Value: float64(n) / el, Unit: "cmds/s",
		Note: "one command per sample is the least the aggregator needs (its namespace-day key)"})
	return nil
}

// rawDecode is the CPU cost of what the aggregator does per sample before
// Redis: sample.Decode and rollup.Split, on one core. Not a limit of the
// servers, but the figure the profile is read against.
func rawDecode(msgs []collector.Message, rep *Report) {
	t0 := time.Now()
	n := 0
	for time.Since(t0) < time.Second || n < len(msgs)*defaultBatch {
		for _, m := range msgs {
			res, _ := sample.Decode(m.Data)
			for i := range res {
				_ = rollup.Split(&res[i].Sample, time.UTC)
			}
			n += len(res)
		}
	}
	el := time.Since(t0).Seconds()
	rep.add(Row{Section: secRaw, Name: "cpu: sample.Decode + rollup.Split, 1 goroutine", Value: float64(n) / el, Unit: "samples/s",
		Note: "in-process CPU cost, not a server limit; not counted as a raw stage"})
}
