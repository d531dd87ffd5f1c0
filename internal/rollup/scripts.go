package rollup

import (
	"context"
	"embed"
	"fmt"
	"strconv"
	"strings"
	"text/template"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts live in lua/*.lua. They do not spell the key layout:
// each starts by declaring the families' names, the separators, the
// scopes and the field numbers it uses as {{...}} fields of scriptLayout,
// which newScript fills in from keys.go and units.go once, when the
// package loads. The layout thus costs the scripts nothing per call (it
// is part of their text), and a change to it changes their SHA, so Redis
// never runs a script of another layout.
//
//go:embed lua/*.lua
var luaFiles embed.FS

// scriptLayout is what the scripts receive from the key layout.
type scriptLayout struct {
	Sep, MemberSep, KeyFormSep                 string
	Value, MonthSum, Coverage, ClusterCoverage string
	Rank, Loose                                string
	Index, Masks, Version, Names               string
	NS, PR, CL, PC                             Scope
	GR, GP, GN, CP                             Scope
	CapacityCoverage, CapacityFlag             string
	RankFields                                 []int
	MaskBit                                    int
}

func layoutForScripts() scriptLayout {
	rf := rankFields()
	return scriptLayout{
		Sep: keySep, MemberSep: Sep, KeyFormSep: keyFormSep,
		Value: famValue, MonthSum: famMonthSum, Coverage: famCoverage, ClusterCoverage: famClusterCoverage,
		Rank: famRank, Loose: famLoose,
		Index: famIndex, Masks: famMasks, Version: famVersion, Names: famNames,
		NS: ScopeNamespace, PR: ScopeProject, CL: ScopeCluster, PC: ScopeProjectCluster,
		GR: ScopeGroup, GP: ScopeProjectGroup, GN: ScopeGroupNamespace, CP: ScopeCapacity,
		CapacityCoverage: famCapacityCoverage, CapacityFlag: capacityFlag,
		RankFields: rf[:],
		MaskBit:    monthMaskBit,
	}
}

// luaString quotes s as a Lua string literal.
func luaString(s any) (string, error) {
	str := fmt.Sprint(s)
	for _, r := range str {
		if r < ' ' || r > '~' {
			return "", fmt.Errorf("layout string %q: only printable ASCII may be handed to Lua", str)
		}
	}
	return strconv.Quote(str), nil
}

// newScript renders lua/name with the layout. The inputs are constants
// of this package, so an error is a bug that every test that applies
// anything finds; it panics rather than return a half-built layout.
func newScript(name string) *redis.Script {
	src, err := luaFiles.ReadFile("lua/" + name)
	if err != nil {
		panic(fmt.Sprintf("rollup: read script %s: %v", name, err))
	}
	t, err := template.New(name).Funcs(template.FuncMap{"lua": luaString}).Option("missingkey=error").Parse(string(src))
	if err != nil {
		panic(fmt.Sprintf("rollup: parse script %s: %v", name, err))
	}
	var b strings.Builder
	if err := t.Execute(&b, layoutForScripts()); err != nil {
		panic(fmt.Sprintf("rollup: render script %s: %v", name, err))
	}
	return redis.NewScript(b.String())
}

// applyScript (lua/apply.lua) applies one batch's contributions to one
// shard of one month, atomically: for every piece it checks the day's
// coverage of the piece's namespace (exactly once) and adds the
// namespace's values. Project, cluster and project-cluster parts come
// pre-aggregated per batch and are applied first, assuming every piece is
// new; a piece found to be a duplicate or an overlap subtracts its own
// values again, exactly, in int64. Sums also have a month part
// (monthSumKey), moved with their day parts. The shard's usage rankings
// of the month (rankKey) move with the values: ZINCRBY of the Effective
// amounts, in the same commit, and a piece whose Effective is below its
// Usage or Request (which breaks the bound the rankings give those
// methods; rank.go) marks the shard-month's rankings loose. Indexes are
// not written here (see indexScript).
//
// The script is the hot path of ingest, so the caller prepares what Lua
// would do slowly: values come as BITFIELD field tokens ("#3") and
// decimal int64 amounts, only the non-zero ones, followed by the ranked
// fields' increments (minus the Effective amount, the empty string when zero), one per
// item (rankFields).
//
// KEYS[1]: any key of the shard (routing for Redis Cluster).
// ARGV: prefix (shardMonth), nPieces, nAggregates, wantChanges ('1' or
// '0'), monthExpireAt (of the rankings), then nAggregates of (dd, scope,
// keyform, values), then nPieces of (dd, dayExpireAt, project, cluster,
// namespace, from, to, flag, coverage tag, ng, ng×(encoded label key,
// value), values), where values is (k, k×(token, amount), one ranking
// increment per ranked field). flag is loose ('1' or '0') for a
// namespace, capacityFlag for a cluster's capacity (project, namespace
// and tag empty, ng 0: its own coverage, capacityCoverageKey, and its
// ScopeCapacity rollup, no sum). The coverage tag is the project and
// Store.groupSig: a piece under another tag than the day's last is fresh
// (index writes). A new piece adds the namespace's values to its
// ScopeGroupNamespace rollup of each (key, value); group and
// project-group sums come with the aggregates, taken back like the
// others.
// Returns {verdicts, overflows, changes, index} (decoded by
// decodeApplyReply): one character per piece ('0' applied, '1'
// duplicate, '2' overlap), how many increments overflowed int64, when
// asked the new day rollup of every namespace the batch touched (applied
// or duplicate) as flat (dd, member, value) triples, and one character
// per piece, '1' when the piece's entities need their index writes: the
// namespace's first piece on that day (or under that coverage tag), or a
// duplicate (whose first application's index writes may not have
// happened); '2' for a duplicate whose groups must not be indexed (sent
// under groups that are not the day's last and hold no value for it).
var applyScript = newScript("apply.lua")

// indexScript (lua/index.lua) records entities in a month's indexes:
// each entry's day index, its presence mask and, the first time in the
// month, the month index and (namespaces) the name index. Every write is
// idempotent, so running it twice, or after a partial failure, is
// harmless.
//
// KEYS[1]: any key of the month's index slot.
// ARGV: prefix (monthPrefix), monthExpireAt, then groups of (scope, dd,
// dayExpireAt, member, name) where name is the namespace-name index member
// or the empty string.
var indexScript = newScript("index.lua")

// markScript (lua/mark.lua) records applied stream sequences as merged
// ranges, so the lowest unapplied sequence is one read away (see
// Store.Applied).
//
// KEYS[1]: the applied key of the stream. ARGV: pairs of first, last.
var markScript = newScript("mark.lua")

// LoadScripts loads the Lua scripts, after a Redis restart lost them. On
// a Redis Cluster every master gets them.
func (s *Store) LoadScripts(ctx context.Context) error {
	load := func(ctx context.Context, c redis.Scripter) error {
		for _, sc := range []*redis.Script{applyScript, indexScript, markScript} {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return fmt.Errorf("load lua script: %w", err)
			}
		}
		return nil
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return load(ctx, c) })
	}
	return load(ctx, s.rdb)
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
