package rollup

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RangeIndexTTL is how long a materialised clipped-bucket index lives
// without being used. It is rebuilt before that whenever the month's
// masks change (see rangeIndexScript), so the TTL only bounds memory.
const RangeIndexTTL = time.Hour

// DaysMask is the presence mask (bit DD-1) of the days first..last, which
// must lie in one month.
func DaysMask(first, last Day) uint32 {
	var m uint32
	for d := first; d <= last; d++ {
		m |= 1 << uint(d.DayOfMonth()-1)
	}
	return m
}

// MonthFirst and MonthLast return the first and last day of d's month.
func MonthFirst(d Day) Day {
	y, m, _ := d.Date()
	return DayFromDate(y, m, 1)
}

// MonthLast returns the last day of d's month.
func MonthLast(d Day) Day {
	y, m, _ := d.Date()
	return DayFromDate(y, m+1, 1) - 1
}

// rangeIndexKey is the key of the cached index of the members of scope sc
// whose mask meets mask in month (the bx key of the layout).
func rangeIndexKey(month string, sc Scope, mask uint32) string {
	return monthPrefix(month) + "bx:" + string(sc) + ":" + strconv.FormatUint(uint64(mask), 10)
}

// versionKey is the key of the month's mask version counter of scope sc.
func versionKey(month string, sc Scope) string { return monthPrefix(month) + "ver:" + string(sc) }

// rangeIndexArgs are the keys and arguments of rangeIndexScript.
func rangeIndexArgs(month string, sc Scope, mask uint32) ([]string, []any) {
	return []string{maskKey(month, sc)}, []any{monthPrefix(month), string(sc), strconv.FormatUint(uint64(mask), 10), int64(RangeIndexTTL / time.Second)}
}

// rangeIndex materialises (or finds still valid) the index of the members
// of scope sc with a sample on a day of mask in month and returns its key.
// Building it reads the month's whole mask hash, once per change of the
// month's masks; reading it afterwards costs what a day index costs.
func rangeIndex(ctx context.Context, rdb redis.UniversalClient, month string, sc Scope, mask uint32) (string, error) {
	keys, args := rangeIndexArgs(month, sc, mask)
	key, err := rangeIndexScript.Run(ctx, rdb, keys, args...).Text()
	if err != nil {
		return "", fmt.Errorf("build range index %s %s %d: %w", month, sc, mask, err)
	}
	return key, nil
}

// rangeIndexes builds many range indexes in one round trip, loading the
// script when Redis lost it.
func rangeIndexes(ctx context.Context, rdb redis.UniversalClient, reqs []rangeReq) error {
	if len(reqs) == 0 {
		return nil
	}
	run := func() error {
		pipe := rdb.Pipeline()
		for _, r := range reqs {
			keys, args := rangeIndexArgs(r.month, r.scope, r.mask)
			rangeIndexScript.EvalSha(ctx, pipe, keys, args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if isNoScript(err) {
		if lerr := rangeIndexScript.Load(ctx, rdb).Err(); lerr != nil {
			return fmt.Errorf("load range index script: %w", lerr)
		}
		err = run()
	}
	if err != nil {
		return fmt.Errorf("build %d range indexes: %w", len(reqs), err)
	}
	return nil
}

type rangeReq struct {
	month string
	scope Scope
	mask  uint32
}
