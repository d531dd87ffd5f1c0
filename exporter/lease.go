package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseHeld is returned by Leases.Acquire when another exporter holds
// the lease.
var ErrLeaseHeld = errors.New("lease held by another exporter")

// LeaseBucket is the JetStream key-value bucket of the export leases: one
// key per target and billing period (leaseKey), whose value names the
// holder. Entries expire LeaseTTL after their last renewal, so a dead
// holder's lease frees itself.
//
// The lease is in JetStream rather than Redis because the rollup store's
// key table is the one layout of Redis (a test scans Redis against it)
// and the exporter talks to NATS anyway for the rollup events; a KV
// bucket gives the compare-and-set (Create, Update at a revision) and the
// expiry a lease needs.
const LeaseBucket = "COST_EXPORT_LEASES"

// Leases hands out per-billing-period leases of one target.
type Leases struct {
	kv    jetstream.KeyValue
	ttl   time.Duration
	owner string
	scope string // hash of the target URL
}

// NewLeases opens (creating when missing) the lease bucket.
func NewLeases(ctx context.Context, js jetstream.JetStream, target, owner string, ttl time.Duration) (*Leases, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: LeaseBucket, TTL: ttl, History: 1,
		Description: "costmeter export leases: one key per target and billing period"})
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %s: %w", LeaseBucket, err)
	}
	h := sha256.Sum256([]byte(target))
	return &Leases{kv: kv, ttl: ttl, owner: owner, scope: hex.EncodeToString(h[:8])}, nil
}

// leaseKey is the key of one target's billing period (KV keys allow
// letters, digits, '-', '_', '=', '.', '/').
func (l *Leases) leaseKey(period string) string { return "export." + l.scope + "." + period }

// Lease is a held lease. Its context ends when the lease is lost (a
// renewal failed) or released.
type Lease struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	rev uint64
	err error
}

// Acquire takes the lease of period, renewing it every TTL/3 until
// Release. It returns an error wrapping ErrLeaseHeld when another holder
// has it.
func (l *Leases) Acquire(ctx context.Context, period string) (*Lease, error) {
	key := l.leaseKey(period)
	rev, err := l.kv.Create(ctx, key, []byte(l.owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		holder := ""
		if e, gerr := l.kv.Get(ctx, key); gerr == nil {
			holder = string(e.Value())
		}
		return nil, fmt.Errorf("lease of %s: %w (%s)", period, ErrLeaseHeld, holder)
	}
	if err != nil {
		return nil, fmt.Errorf("lease of %s: %w", period, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	ls := &Lease{ctx: lctx, cancel: cancel, done: make(chan struct{}), rev: rev}
	go ls.renew(l, key)
	return ls, nil
}

func (ls *Lease) renew(l *Leases, key string) {
	defer close(ls.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ls.ctx.Done():
			return
		case <-t.C:
		}
		ls.mu.Lock()
		rev, err := l.kv.Update(ls.ctx, key, []byte(l.owner), ls.rev)
		if err == nil {
			ls.rev = rev
		} else if ls.ctx.Err() == nil {
			ls.err = fmt.Errorf("renew lease %s: %w", key, err)
		}
		ls.mu.Unlock()
		if err != nil {
			ls.cancel()
			return
		}
	}
}

// Context ends when the lease is lost or released.
func (ls *Lease) Context() context.Context { return ls.ctx }

// Check reports whether the lease is still held, renewing it once now so
// that the next write has a whole TTL ahead of it.
func (ls *Lease) Check(ctx context.Context, l *Leases, period string) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.err != nil {
		return ls.err
	}
	rev, err := l.kv.Update(ctx, l.leaseKey(period), []byte(l.owner), ls.rev)
	if err != nil {
		ls.err = fmt.Errorf("lease of %s lost: %w", period, err)
		return ls.err
	}
	ls.rev = rev
	return nil
}

// Release gives the lease up.
func (ls *Lease) Release(ctx context.Context, l *Leases, period string) error {
	ls.cancel()
	<-ls.done
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.err != nil {
		return nil // lost already: nothing of ours to delete
	}
	if err := l.kv.Delete(ctx, l.leaseKey(period), jetstream.LastRevision(ls.rev)); err != nil {
		return fmt.Errorf("release lease of %s: %w", period, err)
	}
	return nil
}
