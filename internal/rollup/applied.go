package rollup

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// markApplied records seqs as applied in every shard.
func (s *Store) markApplied(ctx context.Context, stream string, seqs []SeqRange) error {
	if len(seqs) == 0 {
		return nil
	}
	margs := make([]any, 0, 2*len(seqs))
	for _, r := range seqs {
		margs = append(margs, r.First, r.Last)
	}
	run := func() error {
		pipe := s.rdb.Pipeline()
		for i := 0; i < Shards; i++ {
			markScript.EvalSha(ctx, pipe, []string{appliedKey(i, stream)}, margs...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if isNoScript(err) {
		if err := s.LoadScripts(ctx); err != nil {
			return err
		}
		err = run()
	}
	if err != nil {
		return fmt.Errorf("mark applied sequences: %w", err)
	}
	return nil
}

// Applied returns the highest stream sequence L such that every sequence
// from first to L is recorded as applied in every shard (first-1 when
// first itself is not). Sequences before first (gone from the stream) are
// not asked about. Ranges are merged whenever they touch, so only the
// range with the largest start at or before first can extend the
// contiguous run.
func (s *Store) Applied(ctx context.Context, stream string, first uint64) (uint64, error) {
	if first == 0 {
		first = 1
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, Shards)
	for i := range cmds {
		cmds[i] = pipe.ZRevRangeByScore(ctx, appliedKey(i, stream), &redis.ZRangeBy{
			Max: strconv.FormatUint(first, 10), Min: "-inf", Count: 1,
		})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("read applied sequences of %s: %w", stream, err)
	}
	low := uint64(0)
	for i, c := range cmds {
		l := first - 1
		if ranges := c.Val(); len(ranges) == 1 {
			if _, last, ok := parseRange(ranges[0]); ok && last > l {
				l = last
			}
		}
		if i == 0 || l < low {
			low = l
		}
	}
	return low, nil
}

func parseRange(r string) (uint64, uint64, bool) {
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	return first, last, err1 == nil && err2 == nil
}
