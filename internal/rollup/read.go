package rollup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

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

// DayValues reads the day rollup of member in scope sc; ok is false when
// there is none.
func DayValues(ctx context.Context, rdb redis.UniversalClient, d Day, sc Scope, member string) (Values, bool, error) {
	b, err := rdb.Get(ctx, ValueKey(d, sc, member)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Values{}, false, nil
	}
	if err != nil {
		return Values{}, false, fmt.Errorf("read rollup %s %s %s: %w", d, sc, member, err)
	}
	return DecodeValues(b), true, nil
}
