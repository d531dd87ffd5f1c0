package rollup

import (
	"context"
	"fmt"
	"strconv"
)

// EntityDays lists the members of scope sc that have a day rollup in the
// month of d, each with the days of that month it has one on, ascending.
// It reads the month's presence index (one hash, one round trip), which
// every listing and query rests on, so it answers "which entity-days
// exist" as the API sees them: a check that Redis holds nothing more than
// expected (pipelinetest.Ledger.Diff) compares it with what it expects.
func (r *Reader) EntityDays(ctx context.Context, d Day, sc Scope) (map[string][]Day, error) {
	masks, err := r.rdb.HGetAll(ctx, maskKey(d.Month(), sc)).Result()
	if err != nil {
		return nil, fmt.Errorf("list %s entity days of %s: %w", sc, d.Month(), err)
	}
	first := MonthFirst(d)
	out := make(map[string][]Day, len(masks))
	for member, s := range masks {
		mask, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("list %s entity days of %s: member %q: presence mask %q: %w", sc, d.Month(), member, s, err)
		}
		var days []Day
		for i := range 31 {
			if mask&(1<<i) != 0 {
				days = append(days, first+Day(i))
			}
		}
		out[member] = days
	}
	return out, nil
}
