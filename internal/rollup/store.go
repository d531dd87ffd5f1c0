package rollup

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/alauda/costmeter/internal/sample"
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
	// Scope is ScopeCapacity for a cluster's capacity (Entity.Cluster
	// only; each item's capacity in Piece.Values' Effective field); any
	// other value (the zero one included) is a namespace's usage.
	Scope  Scope
	Entity Entity
	// Labels are the namespace's labels the sample carried: the Store
	// counts the piece under each kept key's value (WithGroupKeys).
	Labels map[string]string
	Piece
}

// capacity tells a capacity contribution from a namespace's.
func (c *Contribution) capacity() bool { return c.Scope == ScopeCapacity }

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

	// groupKeys are the kept label keys (WithGroupKeys), keysTag their
	// short digest (groupSig).
	groupKeys []string
	keysTag   string
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
	seen := map[string]bool{}
	for _, k := range s.groupKeys {
		if seen[k] {
			return nil, fmt.Errorf("rollup store: label key %q kept twice", k)
		}
		seen[k] = true
		if err := sample.CheckLabelKey(k); err != nil {
			return nil, fmt.Errorf("rollup store: kept label key: %w", err)
		}
	}
	if len(s.groupKeys) > sample.MaxLabels {
		return nil, fmt.Errorf("rollup store: %d kept label keys, at most %d", len(s.groupKeys), sample.MaxLabels)
	}
	if len(s.groupKeys) > 0 {
		h := fnv.New32a()
		h.Write([]byte(strings.Join(s.groupKeys, ",")))
		s.keysTag = strconv.FormatUint(uint64(h.Sum32()), 36)
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

// WithGroupKeys makes the Store keep group rollups for the label keys
// (ScopeGroup, ScopeProjectGroup, ScopeGroupNamespace): every namespace
// piece counts under each key's value in its Labels, or Unallocated when
// it has none. A key added later is counted from then on; nothing is
// rebuilt.
func WithGroupKeys(keys []string) StoreOption {
	return func(s *Store) { s.groupKeys = append([]string(nil), keys...) }
}

// GroupKeys returns the kept label keys, in the order given.
func (s *Store) GroupKeys() []string { return append([]string(nil), s.groupKeys...) }

// groupValues returns c's value of every kept key (Unallocated when it
// has none), in the order of the keys; nil for a capacity.
func (s *Store) groupValues(c *Contribution) []string {
	if len(s.groupKeys) == 0 || c.capacity() {
		return nil
	}
	out := make([]string, len(s.groupKeys))
	for i, k := range s.groupKeys {
		v, ok := c.Labels[k]
		if !ok || v == "" {
			v = Unallocated
		}
		out[i] = v
	}
	return out
}

// groupSig is what a namespace's coverage records beside its project, so
// that a piece under other values (a relabelled namespace) is fresh on
// the day and gets its index writes: the keys' digest and the values. It
// is "" when no key is kept, so the coverage is as it was before groups.
func (s *Store) groupSig(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return "|" + s.keysTag + "=" + strings.Join(values, ",")
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
