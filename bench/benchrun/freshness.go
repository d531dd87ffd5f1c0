package benchrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/alauda/costmeter/api"
	"github.com/alauda/costmeter/collector"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
	"github.com/alauda/costmeter/internal/sample"
	"github.com/alauda/costmeter/internal/stream"
)

// The backlog test (once called freshness): how long after a collector's
// publish was acknowledged its sample shows, while samples are offered
// at a steady rate above what ingest of distinct namespaces' windows
// sustains on a small machine. Its figures measure the backlog that
// builds, not the pipeline's latency: the live phase (live.go) measures
// freshness under the traffic collectors really send.
const (
	// FreshnessRate is the steady load of the freshness phase.
	FreshnessRate = 50_000 // samples/s
	// freshnessTick is how often the load publishes (rate/10 samples each).
	freshnessTick = 100 * time.Millisecond
	// probeEvery is how often a probe sample is sent.
	probeEvery = 500 * time.Millisecond
	// apiPoll is how often the API is asked whether a probe shows yet:
	// the API figures are accurate to this.
	apiPoll = 25 * time.Millisecond
	// probeWait is how long a probe waits for its event and its API
	// answer. One that sees neither in time counts as probeWait (the
	// figures become lower bounds, and the notes say how many did): when
	// the offered load outruns ingest, the wait is the backlog's and
	// would otherwise grow without end.
	probeWait = 2 * time.Minute
	// probeProject holds the probe namespaces, one per probe.
	probeProject = "probe"
)

// freshnessSize is the load's rate and duration: FreshnessRate for 30 s,
// or 5,000 samples/s for 5 s in quick mode.
func freshnessSize(quick bool) (rate int, d time.Duration) {
	if quick {
		return 5_000, 5 * time.Second
	}
	return FreshnessRate, 30 * time.Second
}

// probe is one measured sample: when JetStream acknowledged its message,
// when its rollup event arrived, when the API first answered with it.
type probe struct {
	acked, evented, answered time.Time
	// late: no event (or no API answer) within probeWait.
	lateEvent, lateAPI bool
}

// delays are the probe's times to its event and to its API answer, in ms,
// probeWait where it was late.
func (p probe) delays() (toEvent, toAPI float64) {
	ms := func(late bool, at time.Time) float64 {
		if late {
			return float64(probeWait.Milliseconds())
		}
		return float64(at.Sub(p.acked).Microseconds()) / 1000
	}
	return ms(p.lateEvent, p.evented), ms(p.lateAPI, p.answered)
}

// runFreshness runs an aggregator (rollup events on) and the API, loads
// the pipeline at a steady rate of one-minute windows of distinct
// namespaces, and meanwhile sends probes: each a one-sample message of a
// namespace of its own, published by collector.Publisher like any other.
// From the probe's acknowledgement it waits for the rollup event of that
// namespace (a core NATS subscription to the event's subject, made
// before the publish) and polls the API's namespace query for the day
// until the namespace's row appears.
func runFreshness(ctx context.Context, srv *servers, cfg Config, rep *Report, log *slog.Logger) error {
	rate, dur := freshnessSize(cfg.Quick)
	store, err := newStore(ctx, srv, rollup.DefaultRetention)
	if err != nil {
		return err
	}
	if err := stream.Ensure(ctx, srv.js, stream.DefaultConfig()); err != nil {
		return err
	}
	stop, err := startAggregator(ctx, srv, store, log, sdkmetric.NewManualReader(), cfg)
	if err != nil {
		return err
	}
	defer stop()
	for { // until the aggregator created its consumer and the events stream
		_, _, derr := drained(ctx, srv.js)
		_, serr := srv.js.Stream(ctx, stream.Rollups)
		if derr == nil && serr == nil {
			break
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	addr, stopAPI, err := serveAPI(srv.rdb)
	if err != nil {
		return err
	}
	defer stopAPI()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + addr + api.PlatformPath

	pub, err := collector.NewPublisher(srv.js, collector.PublisherConfig{}, log)
	if err != nil {
		return err
	}
	// Windows are one minute of data each, published one per
	// rate-namespaces second: time runs 60 times fast, all in the past.
	namespaces := rate
	windows := int(dur/time.Second) + 1
	start := time.Now().UTC().Truncate(time.Minute).Add(-time.Duration(windows+1) * time.Minute)
	day := rollup.DayOf(start, time.UTC)

	lctx, lcancel := context.WithTimeout(ctx, dur)
	defer lcancel()
	var (
		wg      sync.WaitGroup
		loadErr error
		sent    int
	)
	t0 := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent, loadErr = steadyLoad(lctx, pub, rate, namespaces, start)
	}()
	// Probes go out every probeEvery whatever the earlier ones wait for.
	var (
		pmu      sync.Mutex
		probes   []probe
		probeErr error
		pwg      sync.WaitGroup
	)
	for k := 0; lctx.Err() == nil; k++ {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			p, err := sendProbe(ctx, srv, pub, client, base, k, start, day)
			pmu.Lock()
			defer pmu.Unlock()
			if err != nil {
				probeErr = errors.Join(probeErr, err)
				return
			}
			probes = append(probes, p)
		}()
		if err := sleepCtx(lctx, probeEvery); err != nil {
			break
		}
	}
	lcancel()
	wg.Wait()
	el := time.Since(t0).Seconds()
	pwg.Wait()
	if probeErr != nil {
		return probeErr
	}
	if loadErr != nil && !errors.Is(loadErr, context.DeadlineExceeded) && !errors.Is(loadErr, context.Canceled) {
		return loadErr
	}
	if len(probes) == 0 {
		return errors.New("no probe finished")
	}
	var toEvent, toAPI []float64
	lateEvent, lateAPI := 0, 0
	for _, p := range probes {
		e, a := p.delays()
		toEvent, toAPI = append(toEvent, e), append(toAPI, a)
		if p.lateEvent {
			lateEvent++
		}
		if p.lateAPI {
			lateAPI++
		}
	}
	load := float64(sent) / el
	note := fmt.Sprintf("%d probes, one every %s, while %d samples/s were published (target %d; %d samples in %.1f s); %d saw no event within %s (counted as %s: a lower bound)",
		len(probes), probeEvery, int(load), rate, sent, el, lateEvent, probeWait, probeWait)
	rep.add(Row{Section: secIngest, Name: "backlog test: publish ack to rollup event, p50", Value: percentile(toEvent, 0.50), Unit: "ms", Note: note})
	rep.add(Row{Section: secIngest, Name: "backlog test: publish ack to rollup event, p99", Value: percentile(toEvent, 0.99), Unit: "ms"})
	rep.add(Row{Section: secIngest, Name: "backlog test: publish ack to API answer, p50", Value: percentile(toAPI, 0.50), Unit: "ms",
		Note: fmt.Sprintf("the API polled every %s from the acknowledgement: accurate to that; %d probes not shown within %s", apiPoll, lateAPI, probeWait)})
	rep.add(Row{Section: secIngest, Name: "backlog test: publish ack to API answer, p99", Value: percentile(toAPI, 0.99), Unit: "ms"})
	return stop()
}

// steadyLoad publishes rate samples per second, in ticks of a tenth of a
// second, until ctx ends, and returns how many JetStream acknowledged.
// Window w of every namespace is published in second w.
func steadyLoad(ctx context.Context, pub *collector.Publisher, rate, namespaces int, start time.Time) (int, error) {
	perTick := rate / int(time.Second/freshnessTick)
	t := time.NewTicker(freshnessTick)
	defer t.Stop()
	sent, next := 0, 0
	buf := make([]sample.Sample, 0, perTick)
	cl := clusters(2)
	for {
		buf = buf[:0]
		for range perTick {
			w, n := next/namespaces, next%namespaces
			buf = append(buf, loadSample(cl[n%2], n, start.Add(time.Duration(w)*time.Minute)))
			next++
		}
		if err := pub.Publish(ctx, buf); err != nil {
			return sent, err
		}
		sent += len(buf)
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-t.C:
		}
	}
}

// loadSample is namespace n's one-minute window from at in cluster, in one
// of a hundred projects.
func loadSample(cluster string, n int, at time.Time) sample.Sample {
	return sample.Sample{
		Cluster: cluster, Project: fmt.Sprintf("project-%d", n%100), Namespace: fmt.Sprintf("ns-%d", n),
		Start: at, End: at.Add(time.Minute),
		CPU:    sample.Resources{Usage: 0.25 + float64(n%7)*0.1, Request: 0.5, Quota: 2},
		Memory: sample.Resources{Usage: 1e9, Request: 2e9, Quota: 8e9},
	}
}

// sendProbe publishes probe k and waits for its event and its API row.
func sendProbe(ctx context.Context, srv *servers, pub *collector.Publisher, client *http.Client, base string, k int, at time.Time, day rollup.Day) (probe, error) {
	var p probe
	s := sample.Sample{Cluster: clusters(1)[0], Project: probeProject, Namespace: fmt.Sprintf("probe-%d", k),
		Start: at, End: at.Add(time.Minute), CPU: sample.Resources{Usage: 1, Request: 1, Quota: 1}}
	subject := event.Event{Kind: event.KindNamespace, Project: s.Project, Cluster: s.Cluster, Namespace: s.Namespace}.Subject()
	sub, err := srv.nc.SubscribeSync(subject)
	if err != nil {
		return p, fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := srv.nc.Flush(); err != nil {
		return p, fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	if err := pub.Publish(ctx, []sample.Sample{s}); err != nil {
		return p, fmt.Errorf("publish probe %d: %w", k, err)
	}
	p.acked = time.Now()
	apiDone := make(chan error, 1)
	go func() { apiDone <- pollAPI(ctx, client, base, s.Namespace, day, &p.answered) }()
	_, err = sub.NextMsgWithContext(withTimeout(ctx, probeWait))
	switch {
	case err == nil:
		p.evented = time.Now()
	case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		p.lateEvent = true
	default:
		return p, fmt.Errorf("probe %d: no rollup event on %s: %w", k, subject, err)
	}
	err = <-apiDone
	switch {
	case err == nil:
	case errors.Is(err, errNotShown):
		p.lateAPI = true
	default:
		return p, fmt.Errorf("probe %d: %w", k, err)
	}
	return p, nil
}

// pollAPI asks the API for the namespace's day every apiPoll until a row
// shows, and records when.
func pollAPI(ctx context.Context, client *http.Client, base, namespace string, day rollup.Day, at *time.Time) error {
	d := day.Start(time.UTC).Format(time.DateOnly)
	q := url.Values{"kind": {"namespace"}, "name": {namespace}, "step": {"day"}, "start": {d}, "end": {d}}
	deadline := time.Now().Add(probeWait)
	for time.Now().Before(deadline) {
		var resp api.Response
		if _, err := get(ctx, client, base+"?"+q.Encode(), &resp); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		if len(resp.Items) > 0 {
			*at = time.Now()
			return nil
		}
		if err := sleepCtx(ctx, apiPoll); err != nil {
			return err
		}
	}
	return fmt.Errorf("api: namespace %s: %w", namespace, errNotShown)
}

// errNotShown: the API did not show a probe within probeWait.
var errNotShown = fmt.Errorf("not shown within %s", probeWait)

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// withTimeout is ctx bounded by d; the bound ends with ctx.
func withTimeout(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	context.AfterFunc(c, cancel)
	return c
}
