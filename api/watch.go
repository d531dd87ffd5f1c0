package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/rollup"
)

// Paths of the watch routes: Server-Sent Events of rollup changes.
const (
	PlatformWatchPath = PlatformPath + "/watch"
	ProjectWatchPath  = ProjectPath + "/watch"
)

// Limits of a watch stream.
const (
	// MaxWatchSnapshot is the most entities whose day totals open a
	// stream; a larger selection sends the first ones (in the usage
	// route's order) and says so in a comment line and in the synced
	// event.
	MaxWatchSnapshot = 1000
	// DefaultMaxWatches bounds the streams one Server serves at once (each
	// holds a NATS consumer); more answer 429.
	DefaultMaxWatches = 1000
	// DefaultHeartbeat is how often an idle stream sends ": ping", so that
	// proxies keep it open and a vanished client is noticed.
	DefaultHeartbeat = 15 * time.Second
	// watchBuffer is how many events wait between NATS and a slow
	// client (event.WithBuffer), and the most written between flushes.
	watchBuffer = event.DefaultBuffer
)

// ErrWatchDisabled is returned by the watch routes of a Server without
// rollup events (WithEvents).
var ErrWatchDisabled = errors.New("watch needs NATS (--nats-url)")

// ErrEventsUnavailable is returned when the rollup events cannot be
// subscribed to: NATS does not answer, or no aggregator created the
// COST_ROLLUPS stream yet.
var ErrEventsUnavailable = errors.New("rollup events unavailable")

// ErrTooManyWatches is returned when the Server already serves its most
// watch streams.
var ErrTooManyWatches = errors.New("too many watch streams")

// IsWatch reports whether r asks for a watch stream: the request guards
// give those no deadline and no heavy query slot
// (httpguard.WithStreaming).
func IsWatch(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/watch") }

// WithEvents turns the watch routes on: they subscribe to the rollup
// events (stream COST_ROLLUPS) through js.
func WithEvents(js jetstream.JetStream) Option { return func(s *Server) { s.watch.js = js } }

// WithClock sets the clock that tells the watch routes what today is in
// the billing zone (default: time.Now).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.watch.now = now } }

// WithHeartbeat sets how often an idle watch stream sends ": ping"
// (default DefaultHeartbeat).
func WithHeartbeat(d time.Duration) Option { return func(s *Server) { s.watch.heartbeat = d } }

// WithMaxWatches sets how many watch streams the Server serves at once
// (default DefaultMaxWatches).
func WithMaxWatches(n int) Option { return func(s *Server) { s.watch.max = n } }

// watchState is the Server's share of the watch routes; its zero value
// has them disabled.
type watchState struct {
	js        jetstream.JetStream
	now       func() time.Time
	heartbeat time.Duration
	max       int

	mu      sync.Mutex
	active  int
	stop    chan struct{} // closed when the HTTP server shuts down
	stopped bool
}

// stopping is closed when the server shuts down: http.Server.Shutdown
// waits for requests to finish, and a stream would never.
func (w *watchState) stopping() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop == nil {
		w.stop = make(chan struct{})
		if w.stopped {
			close(w.stop)
		}
	}
	return w.stop
}

// enter counts a new stream in; false when there are too many.
func (w *watchState) enter() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active >= w.limit() {
		return false
	}
	w.active++
	return true
}

func (w *watchState) limit() int {
	if w.max <= 0 {
		return DefaultMaxWatches
	}
	return w.max
}

func (w *watchState) leave() {
	w.mu.Lock()
	w.active--
	w.mu.Unlock()
}

// shutdown ends every stream (http.Server.RegisterOnShutdown).
func (w *watchState) shutdown() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	if w.stop != nil {
		close(w.stop)
	}
}

// watchQuery is a parsed, valid watch query.
type watchQuery struct {
	Kind Kind
	Name string
	Item rollup.Item
}

// usageOnly are the usage route's parameters that mean nothing to a watch:
// it streams today and what follows, with every method's totals.
var usageOnly = []string{"start", "end", "step", "method", "currentPage", "pageSize", "format", "orderBy", "groupBy"}

// parseWatchQuery checks the watch parameters: kind, name and item as the
// usage route checks them (same defaults, same messages); the usage
// route's other parameters are refused rather than silently ignored.
func parseWatchQuery(v url.Values) (watchQuery, error) {
	var q watchQuery
	var err error
	if q.Kind, q.Name, err = parseKind(v, false); err != nil {
		return watchQuery{}, err
	}
	if q.Item, err = parseItem(v); err != nil {
		return watchQuery{}, err
	}
	for _, p := range usageOnly {
		if _, ok := one(v, p); ok {
			return watchQuery{}, badParam(p, "not a parameter of the watch route (it streams today's totals and later changes, with every method)")
		}
	}
	return q, nil
}

// watchPlan is what one stream reads and subscribes to.
type watchPlan struct {
	q       watchQuery
	project string           // the project route's project, "" on the platform route
	sel     rollup.Selection // today's snapshot
	events  event.Selection  // what streams after it
}

// eventSelection is the rollup events of a watch query: the query's kind
// and name in internal/event's terms, confined to the project route's
// project (internal/event owns the subjects they map to).
func eventSelection(q watchQuery, project string) event.Selection {
	sel := event.Selection{Project: project, Item: q.Item.String()}
	switch q.Kind {
	case KindProject, KindProjectAll:
		sel.Kind = event.KindProject
	case KindCluster, KindClusterAll:
		sel.Kind = event.KindCluster
	default:
		sel.Kind = event.KindNamespace
	}
	if q.Kind == KindProject || q.Kind == KindCluster || q.Kind == KindNamespace {
		sel.Name = q.Name
	}
	return sel
}

// watchEvent turns an entity's day rollup into the event of item it; a
// project's share of a cluster is reported as kind cluster with its
// project, as the usage route's project-scoped cluster rows are. Its id is
// the content hash of event.New, so a snapshot event and a stream event
// with the same totals carry the same id.
func watchEvent(sc rollup.Scope, d rollup.Day, member string, v rollup.Values, it rollup.Item) event.Event {
	ev := event.New(rollup.Change{Scope: sc, Day: d, Member: member, Values: v}, it)
	if sc == rollup.ScopeProjectCluster {
		ev.Kind = event.KindCluster
	}
	return ev
}

func (s *Server) watchRoute(c *gin.Context, project string) {
	ctx := c.Request.Context()
	if err := s.serveWatch(c, project); err != nil {
		if ctx.Err() != nil {
			c.Abort() // the client left (or the server stopped) while opening
			return
		}
		code, msg := statusOf(err)
		if code == http.StatusTooManyRequests {
			c.Header("Retry-After", "5")
		}
		if code >= 500 {
			s.log.ErrorContext(ctx, "watch", "path", c.Request.URL.Path, "query", c.Request.URL.RawQuery, "code", code, "err", err)
		}
		if c.Writer.Written() {
			c.Abort()
			return
		}
		abort(c, code, msg)
	}
}

// serveWatch checks the request, subscribes, sends the snapshot, then
// streams until the client leaves or the server stops. Errors before the
// first byte become a Status; after it the stream ends with a comment
// saying why.
func (s *Server) serveWatch(c *gin.Context, project string) error {
	ctx := c.Request.Context()
	if err := authorize(ctx, project); err != nil {
		return err
	}
	q, err := parseWatchQuery(c.Request.URL.Query())
	if err != nil {
		return err
	}
	sel, err := selectionOf(Query{Kind: q.Kind, Name: q.Name}, project)
	if err != nil {
		return err
	}
	plan := watchPlan{q: q, project: project, sel: sel, events: eventSelection(q, project)}
	if s.watch.js == nil {
		return ErrWatchDisabled
	}
	if !s.watch.enter() {
		return fmt.Errorf("%w: at most %d at once; retry later", ErrTooManyWatches, s.watch.limit())
	}
	defer s.watch.leave()

	// Subscribe first, then read the snapshot: whatever commits between
	// the two is both in the snapshot and on the stream, never in neither.
	// Events carry absolute totals, so the duplicate is harmless.
	sub, err := event.Subscribe(ctx, s.watch.js, plan.events, event.WithBuffer(watchBuffer), event.WithLogger(s.log))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEventsUnavailable, err)
	}
	defer sub.Close()

	now := time.Now
	if s.watch.now != nil {
		now = s.watch.now
	}
	today := rollup.DayOf(now(), s.loc)
	rctx, cancel := context.WithTimeout(ctx, queryTimeout)
	page, err := s.reader.Page(rctx, plan.sel, []rollup.Bucket{{First: today, Last: today}}, 0, MaxWatchSnapshot)
	cancel()
	if err != nil {
		return fmt.Errorf("read today's totals: %w", err)
	}

	// The stream outlives the server's write timeout.
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Time{})
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(http.StatusOK)
	w := &sseWriter{w: c.Writer}
	writeSnapshot(w, plan, today, page)
	if err := w.flush(c.Writer); err != nil {
		return nil // the client left
	}
	return s.streamWatch(ctx, c.Writer, w, plan, sub.Events())
}

// writeSnapshot sends today's totals of the page's entities, then synced.
func writeSnapshot(w *sseWriter, plan watchPlan, today rollup.Day, page rollup.Page) {
	w.comment(fmt.Sprintf("rollup changes of kind=%s item=%s; totals of %s first", plan.q.Kind, plan.q.Item, today))
	sent := 0
	for _, r := range page.Rows {
		ev := watchEvent(plan.sel.Scope, today, r.Entity.Member(plan.sel.Scope), r.Days[0], plan.q.Item)
		if ev.Fixed == (event.Fixed{}) {
			continue // as the aggregator, which sends no all-zero totals
		}
		w.event("rollup", ev.ID, ev.Marshal())
		sent++
	}
	truncated := page.Total > len(page.Rows)
	if truncated {
		w.comment(fmt.Sprintf("snapshot truncated: the first %d of %d entities", len(page.Rows), page.Total))
	}
	synced, _ := json.Marshal(map[string]any{"day": today.String(), "entities": len(page.Rows), "total": page.Total, "sent": sent, "truncated": truncated})
	w.event("synced", "", synced)
}

// streamWatch forwards matching events, with heartbeats, until the client
// leaves, the server stops, or the caller's token is no longer valid: it
// ends at the token's expiry, and is checked again whenever the
// authenticator's tokens change (a token file reload).
func (s *Server) streamWatch(ctx context.Context, f http.Flusher, w *sseWriter, plan watchPlan, events <-chan event.Event) error {
	every := s.watch.heartbeat
	if every <= 0 {
		every = DefaultHeartbeat
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	stop := s.watch.stopping()
	d := deriver{sent: map[string]event.Fixed{}}
	var (
		changed <-chan struct{}  // nil: nothing to recheck (--auth none)
		expired <-chan time.Time // nil: the token has no end of its own
	)
	var timer *time.Timer
	sess, _ := auth.SessionFrom(ctx)
	arm := func() {
		changed, expired = sess.Changed(), nil
		if timer != nil {
			timer.Stop()
		}
		if exp := sess.Expires(); !exp.IsZero() {
			timer = time.NewTimer(time.Until(exp))
			expired = timer.C
		}
	}
	if sess != nil {
		arm()
		defer func() {
			if timer != nil {
				timer.Stop()
			}
		}()
	}
	// recheck checks the token again after a change and, when it still
	// holds, watches for the next change and the expiry it gave.
	recheck := func() string {
		why := s.recheck(ctx, sess, plan)
		if why == "" {
			arm()
		}
		return why
	}
	end := func(why string) error {
		w.comment(why)
		_ = w.flush(f)
		return nil
	}
	for {
		// A due expiry or token change is acted on before anything else
		// is forwarded: no event reaches a caller whose token just
		// stopped being valid.
		select {
		case <-expired:
			return end(watchTokenExpired)
		case <-changed:
			if why := recheck(); why != "" {
				return end(why)
			}
		default:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return end("server shutting down; reconnect")
		case <-expired:
			return end(watchTokenExpired)
		case <-changed:
			if why := recheck(); why != "" {
				return end(why)
			}
			continue
		case <-tick.C:
			w.comment("ping")
		case ev, ok := <-events:
			if !ok {
				return nil // the subscription ended with ctx
			}
			// Write what is already here too (up to a buffer's worth),
			// then flush once.
			for n := 1; ok; n++ {
				if err := s.forward(ctx, w, plan, &d, ev); err != nil {
					w.comment("stream ended: the usage store is unavailable; reconnect")
					_ = w.flush(f)
					return err
				}
				ok = false
				if n < watchBuffer {
					select {
					case ev, ok = <-events:
					default:
					}
				}
			}
		}
		if err := w.flush(f); err != nil {
			return nil // the client left
		}
	}
}

// Last comments of a stream whose caller's token is no longer valid.
const (
	watchTokenExpired = "token expired"
	watchTokenRevoked = "token revoked"
	watchTokenScope   = "token no longer allowed to see this stream"
)

// recheck authenticates the stream's token again after the authenticator's
// tokens changed, and returns why the stream must end ("" when it goes
// on): the token is gone, or its new scope no longer covers the route. A
// check that cannot be made now (ErrUnavailable) lets the stream go on
// until the next change or its expiry.
func (s *Server) recheck(ctx context.Context, sess *auth.Session, plan watchPlan) string {
	rctx, cancel := context.WithTimeout(ctx, queryTimeout)
	p, err := sess.Recheck(rctx)
	cancel()
	switch {
	case errors.Is(err, auth.ErrInvalidToken):
		return watchTokenRevoked
	case err != nil:
		s.log.WarnContext(ctx, "cannot recheck a watch stream's token; it goes on", "err", err)
		return ""
	}
	if err := authorize(auth.WithPrincipal(ctx, p), plan.project); err != nil {
		return watchTokenScope
	}
	return ""
}

// forward writes ev, an event of the plan's selection; a derived
// selection's namespace event becomes its cluster's new totals.
func (s *Server) forward(ctx context.Context, w *sseWriter, plan watchPlan, d *deriver, ev event.Event) error {
	if plan.events.Derived() {
		var err error
		if ev, err = s.derive(ctx, d, plan, ev); err != nil || ev.ID == "" {
			return err
		}
	}
	w.event("rollup", ev.ID, ev.Marshal())
	return nil
}

// deriver remembers the project-cluster totals a stream sent, so that a
// burst of namespace events of one cluster sends its new totals once.
type deriver struct {
	sent map[string]event.Fixed
}

// maxDerived bounds deriver.sent; forgetting only risks a repeated event.
const maxDerived = 4096

// derive reads the project's share of the namespace event's cluster on
// its day (committed before the event was published, so at least as new
// as it) and returns its event, or a zero Event when nothing changed.
func (s *Server) derive(ctx context.Context, d *deriver, plan watchPlan, ns event.Event) (event.Event, error) {
	day, err := time.Parse("20060102", ns.Day)
	if err != nil {
		return event.Event{}, nil
	}
	rd := rollup.DayFromDate(day.Date())
	member := rollup.Entity{Project: plan.project, Cluster: ns.Cluster}.Member(rollup.ScopeProjectCluster)
	rctx, cancel := context.WithTimeout(ctx, queryTimeout)
	v, ok, err := s.reader.DayValues(rctx, rd, rollup.ScopeProjectCluster, member)
	cancel()
	if err != nil {
		return event.Event{}, fmt.Errorf("read cluster totals: %w", err)
	}
	if !ok {
		return event.Event{}, nil
	}
	ev := watchEvent(rollup.ScopeProjectCluster, rd, member, v, plan.q.Item)
	key := ev.Cluster + "|" + ev.Day
	if ev.Fixed == (event.Fixed{}) || d.sent[key] == ev.Fixed {
		return event.Event{}, nil
	}
	if len(d.sent) >= maxDerived {
		clear(d.sent)
	}
	d.sent[key] = ev.Fixed
	return ev, nil
}

// sseWriter formats Server-Sent Events; the first write error sticks.
type sseWriter struct {
	w   io.Writer
	err error
}

func (w *sseWriter) printf(format string, args ...any) {
	if w.err == nil {
		_, w.err = fmt.Fprintf(w.w, format, args...)
	}
}

// event writes one event; data must be one line (compact JSON is).
func (w *sseWriter) event(name, id string, data []byte) {
	if id != "" {
		w.printf("event: %s\nid: %s\ndata: %s\n\n", name, id, data)
		return
	}
	w.printf("event: %s\ndata: %s\n\n", name, data)
}

func (w *sseWriter) comment(text string) { w.printf(": %s\n\n", text) }

func (w *sseWriter) flush(f http.Flusher) error {
	if w.err == nil {
		f.Flush()
	}
	return w.err
}
