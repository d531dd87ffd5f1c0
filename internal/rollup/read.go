package rollup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Reader answers paged queries from the rollups, reading only what a page
// needs: index cardinalities per bucket, the page's members by rank, and
// the page's day rollups. A query's cost grows with the number of buckets
// and with page size × days per bucket, not with the number of entities,
// with one exception: an ISO week that straddles two months has its two
// parts in two months' indexes (two Redis Cluster slots), so its rows are
// the merge of both parts, read whole — O(members of the week) — and kept
// in memory, keyed by both months' index versions, until either changes.
// It is safe for concurrent use.
type Reader struct {
	rdb redis.UniversalClient

	mu       sync.Mutex
	merged   map[string]mergedSet
	building map[string]*flight // clipped bucket caches being built
}

// NewReader returns a Reader of the rollups in rdb.
func NewReader(rdb redis.UniversalClient) *Reader {
	return &Reader{rdb: rdb, merged: map[string]mergedSet{}, building: map[string]*flight{}}
}

// DecodeValues decodes a day rollup string: Fields big-endian int64, as
// BITFIELD i64 #n lays them out. A short string (fields never written) reads
// as zeros.
func DecodeValues(b []byte) Values {
	var v Values
	for i := 0; i < Fields; i++ {
		off := i * 8
		if off+8 <= len(b) {
			v[i] = int64(binary.BigEndian.Uint64(b[off : off+8]))
		} else if off < len(b) {
			var buf [8]byte
			copy(buf[:], b[off:])
			v[i] = int64(binary.BigEndian.Uint64(buf[:]))
		}
	}
	return v
}

// DayValues reads the day rollup of member in scope sc (for a sum, every
// shard's part added up); ok is false when there is none.
func (r *Reader) DayValues(ctx context.Context, d Day, sc Scope, member string) (Values, bool, error) {
	if !sc.isSum() {
		b, err := r.rdb.Get(ctx, valueKey(scopeShard(sc, member), d, sc, member)).Bytes()
		if errors.Is(err, redis.Nil) {
			return Values{}, false, nil
		}
		if err != nil {
			return Values{}, false, fmt.Errorf("read rollup %s %s %s: %w", d, sc, member, err)
		}
		return DecodeValues(b), true, nil
	}
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, Shards)
	for i := range cmds {
		cmds[i] = pipe.Get(ctx, valueKey(i, d, sc, member))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Values{}, false, fmt.Errorf("read rollup %s %s %s: %w", d, sc, member, err)
	}
	var v Values
	ok := false
	for _, c := range cmds {
		if c.Err() != nil {
			continue
		}
		ok = true
		part := decodeValuesString(c.Val())
		v.Add(&part)
	}
	return v, ok, nil
}

// valueWant is one rollup to read: the day rollup of member on day, or,
// when month is set, the month sum of a sum's member.
type valueWant struct {
	day    Day
	month  string
	scope  Scope
	member string
}

// valueReadsOf points at the valueRead of each of items, for readValues.
func valueReadsOf[T any](items []T, of func(*T) *valueRead) []*valueRead {
	out := make([]*valueRead, len(items))
	for i := range items {
		out[i] = of(&items[i])
	}
	return out
}

// monthMaskOffset is where a month part's day mask starts: after its
// Fields int64 values (bit 768 + day-1, BITFIELD's big-endian order).
const monthMaskOffset = Fields * 8

// monthMaskBit is the BITFIELD offset of a month part's day mask: bit
// monthMaskBit+day-1 (applyScript receives it from scriptLayout).
const monthMaskBit = monthMaskOffset * 8

// monthPartMask decodes the day mask of a month part (bit day-1).
func monthPartMask(s string) uint32 {
	var m uint32
	for b := 0; b < 4 && monthMaskOffset+b < len(s); b++ {
		x := s[monthMaskOffset+b]
		for i := 0; i < 8; i++ {
			if x&(0x80>>i) != 0 {
				m |= 1 << uint(8*b+i)
			}
		}
	}
	return m
}

// valueRead is one rollup to read and what readValues read for it: the
// values (every shard's part added up), and for a month want the union
// of the parts' day masks and whether a part saturated or the parts' sum
// overflowed (the values are then not the month's).
type valueRead struct {
	want    valueWant
	v       Values
	mask    uint32
	inexact bool
}

// readValues fills reads, every shard's part added up for sums: one MGET
// per shard (a shard's keys share its slot).
func (r *Reader) readValues(ctx context.Context, reads []*valueRead) error {
	if len(reads) == 0 {
		return nil
	}
	// A shard's MGET: its keys and the read each one adds to.
	type shardGet struct {
		keys []string
		to   []*valueRead
	}
	var gets [Shards]shardGet
	for _, rd := range reads {
		w := &rd.want
		if !w.scope.isSum() {
			sh := scopeShard(w.scope, w.member)
			gets[sh].keys = append(gets[sh].keys, valueKey(sh, w.day, w.scope, w.member))
			gets[sh].to = append(gets[sh].to, rd)
			continue
		}
		for sh := range Shards {
			if w.month != "" {
				gets[sh].keys = append(gets[sh].keys, monthSumKey(sh, w.month, w.scope, w.member))
			} else {
				gets[sh].keys = append(gets[sh].keys, valueKey(sh, w.day, w.scope, w.member))
			}
			gets[sh].to = append(gets[sh].to, rd)
		}
	}
	pipe := r.rdb.Pipeline()
	var cmds [Shards]*redis.SliceCmd
	for sh := range gets {
		if len(gets[sh].keys) > 0 {
			cmds[sh] = pipe.MGet(ctx, gets[sh].keys...)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("read %d rollups: %w", len(reads), err)
	}
	for sh, c := range cmds {
		if c == nil {
			continue
		}
		for j, v := range c.Val() {
			s, ok := v.(string)
			if !ok {
				continue
			}
			rd := gets[sh].to[j]
			part := decodeValuesString(s)
			if rd.want.month == "" {
				rd.v.Add(&part)
				continue
			}
			rd.mask |= monthPartMask(s)
			if saturated(&part) || !rd.v.addChecked(&part) {
				rd.inexact = true
			}
		}
	}
	return nil
}

// saturated reports whether a month part hit the int64 limit (its
// increments saturate rather than fail).
func saturated(v *Values) bool {
	for _, x := range v {
		if x == math.MaxInt64 || x == math.MinInt64 {
			return true
		}
	}
	return false
}

// decodeValuesString is DecodeValues of a reply string, without copying it
// to a byte slice first.
func decodeValuesString(s string) Values {
	var v Values
	for i := range v {
		off := i * 8
		if off >= len(s) {
			break
		}
		var x uint64
		for b := 0; b < 8; b++ {
			x <<= 8
			if off+b < len(s) {
				x |= uint64(s[off+b])
			}
		}
		v[i] = int64(x)
	}
	return v
}

// Ping checks that Redis answers.
func (r *Reader) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}
