package rollup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Clipped buckets. A bucket part that is neither one day nor a whole
// month (a week, "this month up to today", an arbitrary range) needs the
// members present on some day of the part. Two ways, neither of which
// holds Redis for long:
//
//   - When no day of the month outside the part has an index (the usual
//     "month up to today": nothing was counted after today yet), the
//     month index is the answer; one EXISTS over those days' index keys
//     tells.
//   - Otherwise a cache: the month's masks are read with HSCAN in chunks
//     of rangeChunk, the members whose mask meets the part's are added
//     with ZADD in chunks to a temporary key (rangeBuildKey), which is
//     renamed into place under the mask version it was built from
//     (rangeCacheKey; rangePointerKey points at the newest). Every
//     command touches at most rangeChunk members. A rebuilt cache retires
//     the one it replaces; retired and old caches are listed in the
//     month's registry (rangeRegistryKey; score: when to delete) and
//     deleted with UNLINK (freed off the main thread) rangeRetireGrace
//     after they were retired, or rangeCacheLife after they were built,
//     whichever is first. Nothing large is ever deleted synchronously by
//     this package; for the month and day keys that expire at the end of
//     retention, run Redis with lazyfree-lazy-expire yes (see
//     docs/redis-keys.md).
const (
	rangeChunk       = 1000
	rangeCacheLife   = time.Hour
	rangeRetireGrace = 30 * time.Second
)

type rangeReq struct {
	month string
	first Day // the month's first day
	scope Scope
	mask  uint32
}

// rangeChecks are the reads that tell which index answers each clipped
// part (rangeIndexes).
type rangeChecks []struct {
	outside  *redis.IntCmd
	ver, ptr *redis.StringCmd
}

// queueRangeChecks queues the reads of rangeIndexes in pipe.
func queueRangeChecks(ctx context.Context, pipe redis.Pipeliner, reqs []rangeReq) rangeChecks {
	checks := make(rangeChecks, len(reqs))
	for i, rq := range reqs {
		var outside []string
		for d := rq.first; d <= MonthLast(rq.first); d++ {
			if rq.mask&(1<<uint(d.DayOfMonth()-1)) == 0 {
				outside = append(outside, dayIndexKey(d, rq.scope))
			}
		}
		if len(outside) > 0 {
			checks[i].outside = pipe.Exists(ctx, outside...)
		}
		checks[i].ver = pipe.Get(ctx, versionKey(rq.month, rq.scope))
		checks[i].ptr = pipe.Get(ctx, rangePointerKey(rq.month, rq.scope, rq.mask))
	}
	return checks
}

// rangeIndexes returns the index key to read for each clipped part.
func (r *Reader) rangeIndexes(ctx context.Context, reqs []rangeReq) (map[rangeReq]string, error) {
	if len(reqs) == 0 {
		return map[rangeReq]string{}, nil
	}
	pipe := r.rdb.Pipeline()
	checks := queueRangeChecks(ctx, pipe, reqs)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("check clipped bucket indexes: %w", err)
	}
	return r.resolveRanges(ctx, reqs, checks)
}

// resolveRanges returns the index key of each clipped part from the
// executed checks, building a cache where one is needed.
func (r *Reader) resolveRanges(ctx context.Context, reqs []rangeReq, checks rangeChecks) (map[rangeReq]string, error) {
	out := make(map[rangeReq]string, len(reqs))
	for i, rq := range reqs {
		c := checks[i]
		if c.outside != nil && c.outside.Val() == 0 {
			out[rq] = monthIndexKey(rq.month, rq.scope)
			continue
		}
		ver := c.ver.Val()
		if ver == "" {
			ver = "0"
		}
		if c.ptr.Val() == ver {
			out[rq] = rangeCacheKey(rq.month, rq.scope, rq.mask, ver)
			continue
		}
		key, err := r.buildOnce(ctx, rq, ver)
		if err != nil {
			return nil, err
		}
		out[rq] = key
	}
	return out, nil
}

// buildOnce builds a clipped bucket's cache once per process and version
// however many queries ask for it at once.
func (r *Reader) buildOnce(ctx context.Context, rq rangeReq, ver string) (string, error) {
	key := rangeCacheKey(rq.month, rq.scope, rq.mask, ver)
	r.mu.Lock()
	f, ok := r.building[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		r.building[key] = f
		r.mu.Unlock()
		f.err = r.buildRange(ctx, rq, ver, key)
		r.mu.Lock()
		delete(r.building, key)
		r.mu.Unlock()
		close(f.done)
	} else {
		r.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", fmt.Errorf("wait for clipped bucket index: %w", ctx.Err())
		}
	}
	if f.err != nil {
		return "", f.err
	}
	return key, nil
}

type flight struct {
	done chan struct{}
	err  error
}

// buildRange materialises the members of rq's scope whose mask meets
// rq's mask into key, in chunks (see Clipped buckets). The masks it reads
// are at least as new as version ver, so the cache is valid for ver.
func (r *Reader) buildRange(ctx context.Context, rq rangeReq, ver, key string) error {
	tmp := rangeBuildKey(key, time.Now().UnixNano())
	mk := maskKey(rq.month, rq.scope)
	reg := rangeRegistryKey(rq.month)
	// The temporary key is registered first: if the build dies half way,
	// a later sweep deletes it.
	now := time.Now()
	if err := r.rdb.ZAdd(ctx, reg, redis.Z{Score: float64(now.Add(rangeCacheLife).Unix()), Member: tmp}).Err(); err != nil {
		return fmt.Errorf("build clipped bucket index: %w", err)
	}
	var cursor uint64
	n := 0
	for {
		kv, next, err := r.rdb.HScan(ctx, mk, cursor, "", rangeChunk).Result()
		if err != nil {
			return fmt.Errorf("build clipped bucket index: scan masks: %w", err)
		}
		var zs []redis.Z
		for j := 0; j+1 < len(kv); j += 2 {
			m, _ := strconv.ParseUint(kv[j+1], 10, 32)
			if uint32(m)&rq.mask != 0 {
				zs = append(zs, redis.Z{Member: kv[j]})
			}
		}
		for len(zs) > 0 {
			k := min(len(zs), rangeChunk)
			if err := r.rdb.ZAdd(ctx, tmp, zs[:k]...).Err(); err != nil {
				return fmt.Errorf("build clipped bucket index: %w", err)
			}
			n += k
			zs = zs[k:]
		}
		cursor = next
		if cursor == 0 {
			break
		}
	}
	ptr := rangePointerKey(rq.month, rq.scope, rq.mask)
	pipe := r.rdb.TxPipeline()
	var renamed *redis.BoolCmd
	if n > 0 {
		pipe.Expire(ctx, tmp, 2*rangeCacheLife)
		renamed = pipe.RenameNX(ctx, tmp, key)
	}
	old := pipe.SetArgs(ctx, ptr, ver, redis.SetArgs{Get: true, TTL: rangeCacheLife - 5*time.Minute})
	pipe.ZRem(ctx, reg, tmp)
	pipe.ZAddArgs(ctx, reg, redis.ZAddArgs{Members: []redis.Z{{Score: float64(now.Add(rangeCacheLife).Unix()), Member: key}}})
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("build clipped bucket index: publish: %w", err)
	}
	if renamed != nil && !renamed.Val() {
		// Another process built the same version first.
		r.rdb.Unlink(ctx, tmp)
	}
	if o := old.Val(); o != "" && o != ver {
		// Readers that saw the old pointer keep it for a grace period.
		r.rdb.ZAddArgs(ctx, reg, redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(now.Add(rangeRetireGrace).Unix()), Member: rangeCacheKey(rq.month, rq.scope, rq.mask, o)}}})
	}
	return r.sweep(ctx, reg, now)
}

// sweep deletes (UNLINK) the caches of the registry reg due by now.
func (r *Reader) sweep(ctx context.Context, reg string, now time.Time) error {
	due, err := r.rdb.ZRangeByScore(ctx, reg, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now.Unix(), 10), Count: 100}).Result()
	if err != nil || len(due) == 0 {
		return nil // best effort: a later build sweeps again
	}
	pipe := r.rdb.Pipeline()
	for _, k := range due {
		pipe.Unlink(ctx, k)
	}
	pipe.ZRem(ctx, reg, stringsToAny(due)...)
	_, _ = pipe.Exec(ctx)
	return nil
}

func stringsToAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
