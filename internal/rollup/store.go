package rollup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRetention is how long rollups are kept after their month ends.
const DefaultRetention = 400 * 24 * time.Hour

// ErrTimezoneMismatch is returned when Redis holds rollups made in another
// billing time zone: mixing zones would split days differently.
var ErrTimezoneMismatch = errors.New("billing time zone differs from the one recorded in redis")

// Verdict is what happened to one contribution.
type Verdict byte

// The verdicts.
const (
	Applied   Verdict = '0'
	Duplicate Verdict = '1'
	Overlap   Verdict = '2'
)

// Contribution is one day's piece of one sample, ready to apply.
type Contribution struct {
	Entity Entity
	Piece
}

// Change is the day rollup of one entity after a batch touched it.
type Change struct {
	Scope  Scope
	Day    Day
	Member string
	Values Values
}

// Result is what Apply did.
type Result struct {
	// Verdicts are in the order of the contributions.
	Verdicts []Verdict
	// Changes (when asked for) hold the new day rollups of every project,
	// cluster and namespace the batch touched, duplicates included: a
	// commit whose events were lost re-publishes them when redelivered.
	Changes []Change
}

// SeqRange is an inclusive range of stream sequences.
type SeqRange struct{ First, Last uint64 }

// Store keeps the rollups in Redis (a single server or a Redis Cluster)
// and reads them (the embedded Reader). It is safe for concurrent use;
// any number of Stores (processes) may apply to the same Redis at once.
type Store struct {
	*Reader
	rdb       redis.UniversalClient
	loc       *time.Location
	retention time.Duration

	waitReplicas int
	waitTimeout  time.Duration
}

// NewStore returns a Store for the billing zone loc.
func NewStore(rdb redis.UniversalClient, loc *time.Location, retention time.Duration, opts ...StoreOption) (*Store, error) {
	if loc == nil {
		return nil, errors.New("rollup store: nil time zone")
	}
	if retention <= 0 {
		return nil, fmt.Errorf("rollup store: retention must be positive, got %s", retention)
	}
	s := &Store{Reader: NewReader(rdb), rdb: rdb, loc: loc, retention: retention}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// StoreOption sets an optional behaviour of a Store.
type StoreOption func(*Store)

// WithWaitReplicas makes every index write wait (WAIT n, at most timeout)
// until n replicas of the month's index node hold it, and fail (so the
// batch is not acknowledged and comes again) when fewer do. On a Redis
// Cluster the index of a month may live on another node than the rollups
// it lists, and only this makes a failover of that node lose no listed
// entity (see the healing guarantee in keys.go). n = 0 (the default)
// waits for nothing.
func WithWaitReplicas(n int, timeout time.Duration) StoreOption {
	return func(s *Store) { s.waitReplicas, s.waitTimeout = n, timeout }
}

// Location returns the billing time zone.
func (s *Store) Location() *time.Location { return s.loc }

// CheckTimezone records the billing zone on first use and fails with
// ErrTimezoneMismatch when Redis already holds another one.
func (s *Store) CheckTimezone(ctx context.Context) error {
	if err := s.rdb.HSetNX(ctx, configKey, "timezone", s.loc.String()).Err(); err != nil {
		return fmt.Errorf("record time zone: %w", err)
	}
	got, err := s.rdb.HGet(ctx, configKey, "timezone").Result()
	if err != nil {
		return fmt.Errorf("read recorded time zone: %w", err)
	}
	if got != s.loc.String() {
		return fmt.Errorf("%w: redis has %q, configured %q", ErrTimezoneMismatch, got, s.loc.String())
	}
	return nil
}

// Expired reports whether day d is already past retention at now: its
// rollups would expire at once, so its samples are refused.
func (s *Store) Expired(d Day, now time.Time) bool {
	return s.dayExpireAt(d) <= now.Unix()
}

// Apply adds the contributions exactly once and records seqs as applied,
// atomically per month (one Lua script each; a sample that crosses a month
// boundary is two independent, individually exactly-once pieces). The
// returned verdicts are in the order of cs. Applying the same contributions
// again is harmless: they come back as duplicates. With changes set, the
// result also carries the touched entities' new day rollups.
//
// Contiguous pieces of the same namespace and day in one batch (a backlog
// of one-minute windows) are merged into one run before they reach Redis:
// one coverage check and one increment instead of one per window. A run
// that is wholly new is applied whole and wholly a duplicate is dropped
// whole; only a run that partly overlaps counted time is sent again piece
// by piece, so every piece still gets its own verdict. Pieces of one
// namespace-day in one batch that overlap each other (contradictory
// input) are judged in order of their start rather than the batch's:
// either way every second is counted once, by the first piece judged.
func (s *Store) Apply(ctx context.Context, cs []Contribution, stream string, seqs []SeqRange, changes bool) (Result, error) {
	res, err := s.applyRuns(ctx, cs, changes)
	if err != nil {
		return Result{}, err
	}
	// Last, once everything it vouches for is written: see the healing
	// guarantee in keys.go.
	if err := s.markApplied(ctx, stream, seqs); err != nil {
		return Result{}, err
	}
	return res, nil
}

// dayExpireAt is when the keys of day d expire: retention after the end
// of d's month, with the month's keys. A month is kept or dropped whole,
// so its month keys (the sums' month parts, the rankings, the indexes)
// never hold days its day keys no longer have.
func (s *Store) dayExpireAt(d Day) int64 {
	return s.monthExpireAt(d)
}

func (s *Store) monthExpireAt(d Day) int64 {
	y, m, _ := d.Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, s.loc).Add(s.retention).Unix()
}
