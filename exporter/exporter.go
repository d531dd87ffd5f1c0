// Package exporter writes the rollups out as FinOps FOCUS 1.3 files: one
// row per billing day × namespace × item, a Parquet file (and optionally
// a gzipped CSV) per day in Hive partitions, and a manifest per billing
// period written last, to a directory or an S3-compatible bucket.
//
// A day is exported once it has ended and the export delay has passed.
// A delivered day is never changed in place: when its rollups change
// later (a late sample, a new price), it is rewritten with its delivered
// rows unchanged plus ChargeClass=Correction rows for the differences.
// Which days changed comes from the rollup events and, after a restart or
// lost events, from a fingerprint of each day kept in the manifest.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alauda/costmeter/internal/config"
	"github.com/alauda/costmeter/internal/event"
	"github.com/alauda/costmeter/internal/focus"
	"github.com/alauda/costmeter/internal/pricing"
	"github.com/alauda/costmeter/internal/rollup"
)

// Config tunes the exporter.
type Config struct {
	// URL is the target: file:///abs/dir or s3://bucket/prefix.
	URL string
	S3  S3Config
	// Delay is how long after a billing day ends it is exported (late
	// samples of the day's last windows arrive first).
	Delay time.Duration
	// Poll is how often every day of the lookback is checked against its
	// fingerprint (events make it sooner).
	Poll time.Duration
	// Lookback is how many days before today are checked each poll.
	Lookback int
	// CSV writes a gzipped CSV beside each Parquet file.
	CSV bool
	// WorkDir holds the files being written before they are put (the
	// system's temporary directory when empty).
	WorkDir string
	// LeaseTTL is how long a dead exporter's lease outlives it.
	LeaseTTL time.Duration
	// Issuer names the billing account and the invoice issuer.
	AccountID, AccountName, IssuerName string
	// GroupBy is the kept label key whose groups receive the shared
	// namespaces' charges as allocated rows (NewChargeback); empty: the
	// first kept key.
	GroupBy string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Delay: time.Hour, Poll: 5 * time.Minute, Lookback: 35, LeaseTTL: time.Minute,
		AccountID: "costmeter", AccountName: "costmeter", IssuerName: "costmeter"}
}

// RegisterFlags registers the exporter's flags (the currency and price
// list are the API's --currency and --pricing).
func (c *Config) RegisterFlags(f *config.Flags) {
	d := DefaultConfig()
	f.String(&c.URL, "export-url", "EXPORT_URL", d.URL, "FOCUS export target: file:///abs/dir or s3://bucket/prefix")
	f.Duration(&c.Delay, "export-delay", "EXPORT_DELAY", d.Delay, "how long after a billing day ends it is exported")
	f.Duration(&c.Poll, "export-poll", "EXPORT_POLL", d.Poll, "how often the days of the lookback are checked for changes")
	f.Int(&c.Lookback, "export-lookback", "EXPORT_LOOKBACK", d.Lookback, "days before today checked for changes each poll")
	f.Bool(&c.CSV, "export-csv", "EXPORT_CSV", d.CSV, "also write each day as gzipped CSV")
	f.String(&c.WorkDir, "export-work-dir", "EXPORT_WORK_DIR", d.WorkDir, "directory for files being written (default: the system's temporary directory)")
	f.Duration(&c.LeaseTTL, "export-lease-ttl", "EXPORT_LEASE_TTL", d.LeaseTTL, "how long a dead exporter's billing-period lease outlives it")
	f.String(&c.AccountID, "export-billing-account-id", "EXPORT_BILLING_ACCOUNT_ID", d.AccountID, "FOCUS BillingAccountId")
	f.String(&c.AccountName, "export-billing-account-name", "EXPORT_BILLING_ACCOUNT_NAME", d.AccountName, "FOCUS BillingAccountName")
	f.String(&c.IssuerName, "export-issuer", "EXPORT_ISSUER", d.IssuerName, "FOCUS InvoiceIssuerName, ProviderName and PublisherName")
	f.String(&c.GroupBy, "export-allocation-group-by", "EXPORT_ALLOCATION_GROUP_BY", "", "kept label key whose groups receive the shared namespaces' costs as FOCUS allocated rows (default: the first of --allocation-labels; none without it)")
	f.String(&c.S3.Endpoint, "s3-endpoint", "AWS_ENDPOINT_URL_S3", "", "S3 endpoint host[:port] of an s3:// target")
	f.String(&c.S3.Region, "s3-region", "AWS_REGION", "", "S3 region")
	f.String(&c.S3.AccessKey, "s3-access-key", "AWS_ACCESS_KEY_ID", "", "S3 access key")
	f.String(&c.S3.SecretKey, "s3-secret-key", "AWS_SECRET_ACCESS_KEY", "", "S3 secret key")
	f.String(&c.S3.SessionToken, "s3-session-token", "AWS_SESSION_TOKEN", "", "S3 session token")
	f.String(&c.S3.CredentialsFile, "s3-credentials-file", "AWS_SHARED_CREDENTIALS_FILE", "", "AWS shared credentials file (when no access key is given)")
	f.String(&c.S3.Profile, "s3-profile", "AWS_PROFILE", "default", "profile of the credentials file")
	f.Bool(&c.S3.Insecure, "s3-insecure", "S3_INSECURE", false, "talk plain HTTP to the S3 endpoint")
	f.String(&c.S3.CAFile, "s3-ca-file", "S3_CA_FILE", "", "PEM CA bundle trusted for the S3 endpoint (besides the system's)")
	f.Bool(&c.S3.PathStyle, "s3-path-style", "S3_PATH_STYLE", true, "address buckets as endpoint/bucket (false: bucket.endpoint)")
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("--export-url: required: file:///abs/dir or s3://bucket/prefix"))
	} else if _, err := OpenTarget(c.URL, S3Config{Endpoint: "validate.invalid"}); err != nil {
		errs = append(errs, fmt.Errorf("--export-url: %w", err))
	}
	if c.Delay < 0 || c.Delay > 31*24*time.Hour {
		errs = append(errs, fmt.Errorf("--export-delay: %s is not within 0..744h", c.Delay))
	}
	if c.Poll < time.Second {
		errs = append(errs, fmt.Errorf("--export-poll: %s is shorter than 1s", c.Poll))
	}
	if c.Lookback < 0 || c.Lookback > rollup.MaxCoverageDays {
		errs = append(errs, fmt.Errorf("--export-lookback: %d is not within 0..%d", c.Lookback, rollup.MaxCoverageDays))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("--export-lease-ttl: %s is shorter than 1s", c.LeaseTTL))
	}
	for _, s := range []struct{ flag, v string }{{"--export-billing-account-id", c.AccountID}, {"--export-billing-account-name", c.AccountName}, {"--export-issuer", c.IssuerName}} {
		if s.v == "" {
			errs = append(errs, fmt.Errorf("%s: required", s.flag))
		}
	}
	return errors.Join(errs...)
}

// Source is the rollup store's read API the exporter uses
// (*rollup.Reader).
type Source interface {
	Page(ctx context.Context, sel rollup.Selection, buckets []rollup.Bucket, offset, limit int) (rollup.Page, error)
	ClusterCoverage(ctx context.Context, first, last rollup.Day, cluster string) ([]rollup.ClusterDay, error)
}

// Prices is the price list (*pricing.List): exact prices in
// pricing.PriceScale units per unit-hour, per cluster and day.
type Prices interface {
	Has(it rollup.Item, m rollup.Method) bool
	Price(it rollup.Item, m rollup.Method, cluster string, d rollup.Day) (pricing.Price, bool)
}

// Allocator supplies the chargeback's split allocations of a day: for
// each origin charge that is shared (a shared namespace, idle capacity,
// an overhead), how it is split. Shared charges are few, so a day's
// allocations are held in memory. The chargeback work plugs in here;
// without it no charge is split.
type Allocator interface {
	Allocations(ctx context.Context, day rollup.Day) (map[focus.OriginKey]focus.Allocation, error)
}

// Labeler supplies the namespaces' allocation labels (FOCUS Tags) of a
// day; without one every row's Tags is {}.
type Labeler interface {
	Labels(ctx context.Context, day rollup.Day, e rollup.Entity) (map[string]string, error)
}

// Option sets an optional dependency.
type Option func(*Exporter)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(x *Exporter) { x.log = l } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(x *Exporter) { x.now = now } }

// WithAllocator plugs the chargeback's split allocation in.
func WithAllocator(a Allocator) Option { return func(x *Exporter) { x.alloc = a } }

// WithLabeler plugs the namespaces' allocation labels in.
func WithLabeler(l Labeler) Option { return func(x *Exporter) { x.labels = l } }

// WithPrices sets the price list (no costs without one: every cost is 0).
func WithPrices(p Prices) Option { return func(x *Exporter) { x.prices = p } }

// WithHook calls fn at named points of an export (fault tests: "day-put"
// after a day's files are put, before the manifest).
func WithHook(fn func(point string)) Option { return func(x *Exporter) { x.hook = fn } }

// Exporter exports the rollups of one store to one target.
type Exporter struct {
	cfg      Config
	src      Source
	js       jetstream.JetStream
	target   Target
	leases   *Leases
	loc      *time.Location
	currency string
	log      *slog.Logger
	now      func() time.Time
	prices   Prices
	alloc    Allocator
	labels   Labeler
	hook     func(string)
}

// New returns an exporter of src's rollups (cut in loc, priced in
// currency) to cfg.URL; js carries the rollup events and the leases.
func New(ctx context.Context, cfg Config, src Source, js jetstream.JetStream, loc *time.Location, currency string, opts ...Option) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	target, err := OpenTarget(cfg.URL, cfg.S3)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	owner := host + ":" + strconv.Itoa(os.Getpid())
	leases, err := NewLeases(ctx, js, cfg.URL, owner, cfg.LeaseTTL)
	if err != nil {
		return nil, err
	}
	x := &Exporter{cfg: cfg, src: src, js: js, target: target, leases: leases, loc: loc, currency: currency,
		log: slog.New(slog.DiscardHandler), now: time.Now, hook: func(string) {}}
	for _, o := range opts {
		o(x)
	}
	return x, nil
}

// lastDue is the last billing day that has ended Delay ago.
func (x *Exporter) lastDue() rollup.Day {
	now := x.now()
	d := rollup.DayOf(now, x.loc)
	for !(d + 1).Start(x.loc).Add(x.cfg.Delay).After(now) {
		d++
	}
	for (d + 1).Start(x.loc).Add(x.cfg.Delay).After(now) {
		d--
	}
	return d
}

// Run exports due days until ctx ends: every Poll, and soon after rollup
// events say a past day changed. It returns nil when ctx ends.
func (x *Exporter) Run(ctx context.Context) error {
	dirty := map[rollup.Day]bool{}
	var events <-chan event.Event
	var sub *event.Subscription
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if sub == nil {
			s, err := event.Subscribe(ctx, x.js, event.Selection{Kind: event.KindNamespace}, event.WithLogger(x.log))
			if err == nil {
				sub, events = s, s.Events()
			} else if ctx.Err() == nil {
				x.log.DebugContext(ctx, "rollup events not yet available", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				sub, events = nil, nil
				continue
			}
			if d, err := parseEventDay(ev.Day); err == nil && d <= x.lastDue() {
				dirty[d] = true
				// Gather the rest of a commit's events first.
				timer.Reset(time.Second)
			}
			continue
		case <-timer.C:
		}
		days := x.window()
		for d := range dirty {
			days = append(days, d)
		}
		clear(dirty)
		if err := x.Export(ctx, days, false); err != nil && ctx.Err() == nil {
			x.log.WarnContext(ctx, "export pass", "err", err)
		}
		timer.Reset(x.cfg.Poll)
	}
}

// window is the days a poll checks: Lookback days up to the last due.
func (x *Exporter) window() []rollup.Day {
	last := x.lastDue()
	out := make([]rollup.Day, 0, x.cfg.Lookback+1)
	for d := last - rollup.Day(x.cfg.Lookback); d <= last; d++ {
		out = append(out, d)
	}
	return out
}

func parseEventDay(s string) (rollup.Day, error) {
	t, err := time.Parse("20060102", s)
	if err != nil {
		return 0, fmt.Errorf("event day %q: %w", s, err)
	}
	return rollup.DayFromDate(t.Date()), nil
}

// Backfill exports every day of from..to that has ended Delay ago,
// logging its progress, and returns when done.
func (x *Exporter) Backfill(ctx context.Context, from, to rollup.Day) error {
	if last := x.lastDue(); to > last {
		to = last
	}
	var days []rollup.Day
	for d := from; d <= to; d++ {
		days = append(days, d)
	}
	return x.Export(ctx, days, true)
}

// Export exports those of days whose fingerprint differs from their
// manifest entry, month by month under the month's lease; progress logs
// each day.
func (x *Exporter) Export(ctx context.Context, days []rollup.Day, progress bool) error {
	sort.Slice(days, func(i, j int) bool { return days[i] < days[j] })
	byMonth := map[string][]rollup.Day{}
	var months []string
	for i, d := range days {
		if i > 0 && d == days[i-1] {
			continue
		}
		p := period(d)
		if byMonth[p] == nil {
			months = append(months, p)
		}
		byMonth[p] = append(byMonth[p], d)
	}
	st := &progressState{total: len(days), start: time.Now(), on: progress}
	var errs []error
	for _, p := range months {
		if err := x.exportMonth(ctx, p, byMonth[p], st); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

type progressState struct {
	total, done int
	rows        int64
	start       time.Time
	on          bool
}

func (x *Exporter) exportMonth(ctx context.Context, p string, days []rollup.Day, st *progressState) error {
	lease, err := x.leases.Acquire(ctx, p)
	if err != nil {
		return err
	}
	defer func() {
		if err := lease.Release(context.WithoutCancel(ctx), x.leases, p); err != nil {
			x.log.WarnContext(ctx, "release lease", "period", p, "err", err)
		}
	}()
	lctx := lease.Context()
	m, err := x.readManifest(lctx, days[0])
	if err != nil {
		return err
	}
	changed := false
	for _, d := range days {
		fp, err := x.fingerprint(lctx, d)
		if err != nil {
			return err
		}
		st.done++
		if e := m.day(chargeDate(d)); e != nil && e.Fingerprint == fp.sum {
			continue
		}
		if fp.namespaces == 0 && m.day(chargeDate(d)) == nil {
			continue // nothing counted that day, nothing delivered
		}
		t0 := time.Now()
		entry, err := x.exportDay(lctx, d, fp)
		if err != nil {
			return fmt.Errorf("export %s: %w", chargeDate(d), err)
		}
		m.put(entry)
		changed = true
		st.rows += entry.Rows
		x.hook("day-put")
		if st.on {
			el := time.Since(st.start).Seconds()
			x.log.InfoContext(ctx, "exported", "day", chargeDate(d), "rows", entry.Rows, "corrections", entry.Corrections,
				"took", time.Since(t0).Round(time.Millisecond), "progress", fmt.Sprintf("%d/%d", st.done, st.total),
				"rows_per_s", int64(float64(st.rows)/max(el, 1e-3)))
		} else {
			x.log.InfoContext(ctx, "exported", "day", chargeDate(d), "rows", entry.Rows, "corrections", entry.Corrections)
		}
	}
	if !changed {
		return nil
	}
	// The files are in place; the manifest goes last, and only while the
	// lease is still ours.
	if err := lease.Check(lctx, x.leases, p); err != nil {
		return err
	}
	b := m.encode()
	if err := x.target.Put(lctx, ManifestPath(days[0]), bytesReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("write manifest of %s: %w", p, err)
	}
	return nil
}
