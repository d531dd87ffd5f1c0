// Package httpguard protects the API from being overrun: a token bucket per
// client (429 with Retry-After), a deadline on every request (504), and a
// cap on heavy queries running at once (429), each a Gin middleware that
// answers with a Kubernetes Status.
package httpguard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/alauda/costmeter/internal/auth"
	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/kstatus"
)

// Config sizes the guards. A zero Rate, Timeout or MaxHeavy turns that
// guard off.
type Config struct {
	// Rate is the sustained requests per second of one client.
	Rate float64
	// Burst is how many requests a client may make at once.
	Burst int
	// Timeout bounds each request; the handler's context ends then.
	Timeout time.Duration
	// MaxHeavy heavy queries run at once; more wait up to HeavyWait.
	MaxHeavy  int
	HeavyWait time.Duration
	// MaxClients bounds the remembered clients; idle ones are forgotten
	// first.
	MaxClients int
}

// Defaults: 20 requests/s with bursts of 40 per client, 30 s per request,
// 8 heavy queries at once waiting at most 2 s for a slot.
func DefaultConfig() Config {
	return Config{Rate: 20, Burst: 40, Timeout: 30 * time.Second, MaxHeavy: 8, HeavyWait: 2 * time.Second, MaxClients: 10_000}
}

// RegisterFlags registers --rate-limit, --rate-burst, --request-timeout,
// --max-heavy-queries and --heavy-query-wait; the fields' values are the
// defaults.
func (c *Config) RegisterFlags(f *config.Flags) {
	f.Float64(&c.Rate, "rate-limit", "API_RATE_LIMIT", c.Rate, "requests per second per client (principal, or IP when anonymous); 0: no limit")
	f.Int(&c.Burst, "rate-burst", "API_RATE_BURST", c.Burst, "requests a client may make at once above --rate-limit")
	f.Duration(&c.Timeout, "request-timeout", "API_REQUEST_TIMEOUT", c.Timeout, "deadline of one request (not of watch streams); 0: none")
	f.Int(&c.MaxHeavy, "max-heavy-queries", "API_MAX_HEAVY_QUERIES", c.MaxHeavy, "usage queries running at once; 0: no cap")
	f.Duration(&c.HeavyWait, "heavy-query-wait", "API_HEAVY_QUERY_WAIT", c.HeavyWait, "how long a usage query waits for a slot before 429")
	f.Int(&c.MaxClients, "rate-max-clients", "API_RATE_MAX_CLIENTS", c.MaxClients, "clients whose rate is tracked; the longest idle are forgotten first")
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("--rate-limit: %v is not a finite number ≥ 0", c.Rate))
	}
	if c.Rate > 0 && c.Burst < 1 {
		errs = append(errs, fmt.Errorf("--rate-burst: %d is less than 1", c.Burst))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--request-timeout: %s is negative", c.Timeout))
	}
	if c.MaxHeavy < 0 {
		errs = append(errs, fmt.Errorf("--max-heavy-queries: %d is negative", c.MaxHeavy))
	}
	if c.HeavyWait < 0 {
		errs = append(errs, fmt.Errorf("--heavy-query-wait: %s is negative", c.HeavyWait))
	}
	if c.Rate > 0 && c.MaxClients < 1 {
		errs = append(errs, fmt.Errorf("--rate-max-clients: %d is less than 1", c.MaxClients))
	}
	return errors.Join(errs...)
}

// Guard holds the state of the guards: the clients' buckets and the heavy
// query slots.
type Guard struct {
	cfg       Config
	now       func() time.Time
	streaming func(*http.Request) bool

	mu      sync.Mutex
	clients map[string]*client

	heavy chan struct{}
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

// Option adjusts a Guard.
type Option func(*Guard)

// WithClock sets the clock of the token buckets.
func WithClock(now func() time.Time) Option { return func(g *Guard) { g.now = now } }

// WithStreaming names the long-lived requests, such as watch streams:
// they get no deadline and take no heavy query slot (they would hold it
// for as long as they stream).
func WithStreaming(streaming func(*http.Request) bool) Option {
	return func(g *Guard) { g.streaming = streaming }
}

// New returns a Guard for a validated cfg.
func New(cfg Config, opts ...Option) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{cfg: cfg, now: time.Now, streaming: func(*http.Request) bool { return false }, clients: map[string]*client{}}
	if cfg.MaxHeavy > 0 {
		g.heavy = make(chan struct{}, cfg.MaxHeavy)
	}
	for _, o := range opts {
		o(g)
	}
	return g, nil
}

// ClientKey names the client of a request: its principal when one is
// authenticated, else its address.
func ClientKey(c *gin.Context) string {
	if p, ok := auth.FromContext(c.Request.Context()); ok && p.Name != "anonymous" {
		return "principal:" + p.Name
	}
	return "ip:" + c.ClientIP()
}

// RateLimit answers 429 with Retry-After to a client that spent its
// bucket. Put it after the authentication middleware so that clients are
// told apart by principal. It does not call c.Next, so it can run inside
// another handler (Protect).
func (g *Guard) RateLimit() gin.HandlerFunc {
	return func(c *gin.Context) {
		if g.cfg.Rate <= 0 {
			return
		}
		if wait := g.take(ClientKey(c)); wait > 0 {
			g.tooMany(c, wait, "requests")
		}
	}
}

// take spends a token of key's bucket; it returns 0 when there was one,
// else how long until there is.
func (g *Guard) take(key string) time.Duration {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	cl, ok := g.clients[key]
	if !ok {
		if len(g.clients) >= g.cfg.MaxClients {
			g.evict(now)
		}
		cl = &client{lim: rate.NewLimiter(rate.Limit(g.cfg.Rate), g.cfg.Burst)}
		g.clients[key] = cl
	}
	cl.seen = now
	r := cl.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// owed returns how long until key's bucket holds a token, without
// spending one (0: it holds one now, or key is unknown).
func (g *Guard) owed(key string) time.Duration {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	cl, ok := g.clients[key]
	if !ok {
		return 0
	}
	tokens := cl.lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / g.cfg.Rate * float64(time.Second))
}

func (g *Guard) tooMany(c *gin.Context, wait time.Duration, what string) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Header("Retry-After", strconv.Itoa(secs))
	kstatus.Abort(c, http.StatusTooManyRequests, fmt.Sprintf("too many %s: at most %g per second (burst %d) per client; retry in %d s", what, g.cfg.Rate, g.cfg.Burst, secs))
}

// evict forgets clients whose bucket is full again (forgetting them loses
// nothing), or, when none is, the longest idle one. Called with g.mu held.
func (g *Guard) evict(now time.Time) {
	full := time.Duration(float64(g.cfg.Burst) / g.cfg.Rate * float64(time.Second))
	var oldestKey string
	var oldest time.Time
	for k, cl := range g.clients {
		if now.Sub(cl.seen) >= full {
			delete(g.clients, k)
			continue
		}
		if oldestKey == "" || cl.seen.Before(oldest) {
			oldestKey, oldest = k, cl.seen
		}
	}
	if len(g.clients) >= g.cfg.MaxClients && oldestKey != "" {
		delete(g.clients, oldestKey)
	}
}

// Clients is the number of clients whose bucket is remembered.
func (g *Guard) Clients() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.clients)
}

// Timeout gives the request's context a deadline. When the handler gives
// up because of it without answering, the client gets 504.
func (g *Guard) Timeout() gin.HandlerFunc {
	return func(c *gin.Context) {
		cancel := g.startTimer(c)
		defer cancel()
		c.Next()
		g.endTimer(c)
	}
}

func (g *Guard) startTimer(c *gin.Context) context.CancelFunc {
	if g.cfg.Timeout <= 0 || g.streaming(c.Request) {
		return func() {}
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), g.cfg.Timeout)
	c.Request = c.Request.WithContext(ctx)
	return cancel
}

func (g *Guard) endTimer(c *gin.Context) {
	if !c.Writer.Written() && errors.Is(c.Request.Context().Err(), context.DeadlineExceeded) {
		kstatus.Abort(c, http.StatusGatewayTimeout, fmt.Sprintf("the request took longer than %s", g.cfg.Timeout))
	}
}

// Heavy lets at most MaxHeavy requests through it at once; a request that
// finds no slot within HeavyWait (or before its deadline) gets 429 with
// Retry-After. Mount it on the usage routes, after RateLimit.
func (g *Guard) Heavy() gin.HandlerFunc {
	return func(c *gin.Context) {
		release, ok := g.acquire(c)
		if !ok {
			return
		}
		defer release()
		c.Next()
	}
}

func (g *Guard) acquire(c *gin.Context) (func(), bool) {
	if g.heavy == nil || g.streaming(c.Request) {
		return func() {}, true
	}
	release := func() { <-g.heavy }
	select {
	case g.heavy <- struct{}{}:
		return release, true
	default:
	}
	t := time.NewTimer(g.cfg.HeavyWait)
	defer t.Stop()
	select {
	case g.heavy <- struct{}{}:
		return release, true
	case <-t.C:
	case <-c.Request.Context().Done():
	}
	c.Header("Retry-After", "1")
	kstatus.Abort(c, http.StatusTooManyRequests, fmt.Sprintf("too many usage queries at once (at most %d); retry in 1 s", g.cfg.MaxHeavy))
	return nil, false
}

// Running is the number of heavy queries running now.
func (g *Guard) Running() int { return len(g.heavy) }

// Protect runs, in one handler: the deadline, authn (a middleware that
// must not call c.Next, such as auth.Middleware), the client's rate limit
// and a heavy query slot, then the rest of the chain. It is for an API
// that takes a single middleware for its data routes
// (api.WithAuthenticate).
//
// Failed authentications are rate limited too, per address: an address
// that spent its bucket on 401s gets 429 before its token is even checked,
// which bounds token guessing and the cost of verifying junk JWTs.
func (g *Guard) Protect(authn gin.HandlerFunc) gin.HandlerFunc {
	limit := g.RateLimit()
	return func(c *gin.Context) {
		cancel := g.startTimer(c)
		defer cancel()
		failKey := "failed-auth:" + c.ClientIP()
		if g.cfg.Rate > 0 {
			if wait := g.owed(failKey); wait > 0 {
				g.tooMany(c, wait, "failed authentications")
				return
			}
		}
		if authn(c); c.IsAborted() {
			if g.cfg.Rate > 0 && c.Writer.Status() == http.StatusUnauthorized {
				g.take(failKey)
			}
			return
		}
		if limit(c); c.IsAborted() {
			return
		}
		release, ok := g.acquire(c)
		if !ok {
			return
		}
		defer release()
		c.Next()
		g.endTimer(c)
	}
}
