package rollup

import (
	"regexp"
	"strconv"
	"strings"
)

// Key layout (version 2: sharded). Nothing outside this package builds,
// parses or reads a key: callers ask the Store and Reader for entities,
// selections and day values. keyTable below is the complete list of the
// keys this package writes; the Go builders after it and the Lua scripts
// (which receive the families' names and field numbers from this file,
// scriptLayout) build them, and a test fills a store through the pipeline
// and fails on any key of Redis that the table does not describe.
//
// The rollups are cut into Shards shards by a hash of the namespace's
// cluster and name (shardOf). Each shard's keys carry the shard's own hash
// tag {T} (shardTags), chosen so that its CRC16 slot lies in the middle of
// the shard's equal share of the slots 0..16383: a Redis Cluster whose
// masters own equal slot ranges (what redis-cli --cluster create makes)
// gives each master an equal number of shards, so every month's writes
// spread over the masters instead of landing on one. A namespace's
// coverage and values live in its shard's slot, so one script commits
// them together: exactly once is atomic per namespace-day. Project,
// cluster and project-cluster sums are kept per shard (the part of the
// sum made of that shard's namespaces) and added up by readers.
//
// Index keys carry one hash tag per month (Redis Cluster spreads months
// over masters; a month's index writes are one per new entity-day, not
// one per sample).
//
// Every key of a month, day keys included, expires retention after the
// month ends (a month is kept or dropped whole, so its month keys never
// hold days its day keys lost); applied ranges never (a few hundred
// bytes); the clipped-bucket caches within rangeCacheLife.
//
// Writes. The shard's apply script (applyScript) checks coverage and adds
// the values of its namespaces and its part of the sums, atomically. The
// index writes (indexScript) are idempotent (ZADD, setting a mask bit), so
// they run after it, in the month's slot, for every piece the script found
// new on its day and for every duplicate (a batch redelivered after a
// crash between the two gets its index writes again), before the batch is
// acknowledged. Last, the batch's stream sequences are recorded in every
// shard's applied key (markScript).
//
// The healing guarantee. Store.Applied, the watermark, is the lowest
// contiguous applied sequence over all shards. A shard's applied key sits
// in the shard's slot, on the node that holds its rollups, and is written
// after them: Redis replicates and persists one node's writes in order, so
// a node that comes back from its append-only file, or a replica promoted
// in its place, holds a prefix of what the master wrote, and a surviving
// mark vouches only for data that survived with it. When data was lost,
// the shard's watermark is behind the consumer's ack floor and the gap is
// replayed (see aggregator). On a single Redis one append-only file orders
// everything, indexes included. On a cluster the month's index may sit on
// another node: a failover of that node to a replica that missed the
// newest index writes would hide entity-days from listings (never change a
// total, and healing does not bring them back); with WithWaitReplicas
// (the aggregator's --redis-wait-replicas) the store waits (WAIT) until a
// replica holds every index write before a batch is acknowledged, so a
// failover to that replica loses none.
//
// Adding a key family (for example per-label-value group rollups, or
// cluster capacity per day):
//  1. Give it a name constant below (fam...) and a row in keyTable: its
//     form, type and what it holds. The layout test (keys_test.go, run
//     as TestBackends/*/KeyLayout) fails until the row describes every
//     key written, and until a key of the row is written.
//  2. Write a builder next to the others, from shardMonth (data that must
//     commit with the values: anything not idempotent, such as an INCRBY,
//     goes in the shard so it shares the shard's slot; keep a per-shard
//     part and let readers add the Shards parts) or from monthPrefix
//     (idempotent data derived from which entities exist: ZADD, SETBIT,
//     HSET of a bit, in the month's index slot).
//  3. If a script writes it, add its name to scriptLayout and use the
//     name there; never spell a family's name in Lua.
//  4. Give every key an expiry in the script that creates it: retention
//     after its month ends (dayExpireAt for a day key, monthExpireAt for
//     a month key: today the same instant).
//  5. Readers get a Reader method returning entities or values, never a
//     key. Document the family in docs/redis-keys.md.
//
// Adding an item (for example GPU) needs no key change: a day rollup is
// Fields big-endian int64 (units.go), the scripts take their ranked
// fields from rankFields and the month part's mask from monthMaskBit. It
// does change the size of every stored rollup, so the mask of a month
// part moves: existing month parts must be rebuilt (or the month read day
// by day) — a data migration.
const keyPrefix = "c:"

// keySep separates the parts of a key.
const keySep = ":"

// The families' names: the part of a key after its shard-month, month or
// shard prefix (keyTable). The scripts receive them from scriptLayout.
const (
	famValue            = "r"
	famMonthSum         = "m"
	famCoverage         = "cov"
	famClusterCoverage  = "cc"
	famCapacityCoverage = "kc"
	famRank             = "rk"
	famLoose            = "rkloose"
	famApplied          = "applied"
	famIndex            = "ix"
	famMasks            = "pm"
	famVersion          = "ver"
	famNames            = "nn"
	famRangeCache       = "bx"
	famRangePointer     = "bxv"
	famRangeRegistry    = "bxr"
	famConfig           = "{cfg}"
)

// keyFamily is one row of the key table.
type keyFamily struct {
	// Form is the key's form: literal text and placeholders. {T} is a
	// shard's hash tag, YYYYMM and DD a month and a day of the month of
	// the billing zone, <scope> one of ns, pr, cl, pc, gr, gp, gn, cp and
	// <sum> one of pr, cl, pc, gr, gp (<ranked> a scope with rankings: ns,
	// pr, cl, pc, gr), <m> an index member with its spaces as '/', <field> a
	// ranked field (rankFields), <mask> and <ver> decimal numbers,
	// <build> a temporary suffix, <stream> a JetStream stream name.
	Form string
	// Type is the key's Redis type (as TYPE answers).
	Type string
	// Holds says what the key holds and who writes it.
	Holds string
}

// keyTable is the complete key layout, in the order of the prose above.
var keyTable = []keyFamily{
	// Shard keys, written by applyScript in one commit per namespace-day.
	{"c:{T}:YYYYMM:r:DD:<scope>:<m>", "string", "the day rollup: Fields big-endian int64 (BITFIELD i64 #Field); ns: the namespace's, gn: the namespace's part of a group (the namespace's shard), cp: a cluster's capacity in Effective (shard of cluster and \"\"), pr, cl, pc, gr, gp: this shard's part of the sum"},
	{"c:{T}:YYYYMM:m:<sum>:<m>", "string", "this shard's part of the month's sum (BITFIELD OVERFLOW SAT), then a 32-bit mask of the days that moved it (bit monthMaskBit+DD-1, in the same write), so a month is Shards reads, not Shards per day"},
	{"c:{T}:YYYYMM:cov:DD", "hash", "cluster/namespace -> \"project[|keys=values];from-to,from-to\": the seconds of the day counted (exactly once); the kept label keys' digest and values when keys are kept (Store.groupSig)"},
	{"c:{T}:YYYYMM:cc:DD", "hash", "cluster -> \"from-to,from-to\": union of the seconds counted for the cluster's namespaces of this shard (readers unite the shards' parts)"},
	{"c:{T}:YYYYMM:kc:DD", "hash", "cluster -> \";from-to,from-to\": the seconds of the day counted of the cluster's capacity samples (exactly once, apart from its namespaces)"},
	{"c:{T}:YYYYMM:rk:<ranked>:<field>", "zset", "member -> minus its month total of field in this shard: the usage ranking (orderBy=usage; rank.go), ZINCRBY with the values"},
	{"c:{T}:YYYYMM:rkloose", "string", "\"1\" once a piece of the month in this shard had an Effective below its Usage or Request: the rankings bound no Usage or Request (rank.go)"},
	{"c:{T}:applied:<stream>", "zset", "applied stream sequence ranges \"first-last\", score first (markScript): the healing watermark"},
	// Index keys, written by indexScript (idempotent).
	{"c:{YYYYMM}:ix:DD:<scope>", "zset", "members with a sample that day (score 0, lexicographic = the API's order)"},
	{"c:{YYYYMM}:ix:<scope>", "zset", "members with a sample that month"},
	{"c:{YYYYMM}:pm:<scope>", "hash", "member -> bit mask of the month's days it has samples on (bit DD-1)"},
	{"c:{YYYYMM}:ver:<scope>", "string", "counter, bumped whenever a mask of the month changes"},
	{"c:{YYYYMM}:nn", "zset", "\"namespace project cluster\", to find a namespace by name"},
	// Clipped-bucket caches, written by readers (rangecache.go).
	{"c:{YYYYMM}:bx:<scope>:<mask>:<ver>", "zset", "members whose mask meets <mask> (a clipped bucket), built at mask version <ver>; deleted within rangeCacheLife"},
	{"c:{YYYYMM}:bx:<scope>:<mask>:<ver>:<build>", "zset", "a cache being built, renamed into place when done (registered first, so a build that dies is swept)"},
	{"c:{YYYYMM}:bxv:<scope>:<mask>", "string", "the mask version the newest cache of <mask> was built at"},
	{"c:{YYYYMM}:bxr", "zset", "caches and builds to delete (UNLINK), scored by when"},
	// The recorded configuration.
	{"c:{cfg}", "hash", "timezone: the billing zone the rollups were cut in"},
}

// keyPlaceholders are the regular expressions of keyFamily.Form's
// placeholders.
func keyPlaceholders() map[string]string {
	tags := make([]string, len(shardTags))
	for i, t := range shardTags {
		tags[i] = regexp.QuoteMeta(t)
	}
	fields := make([]string, 0, len(rankFields()))
	for _, f := range rankFields() {
		fields = append(fields, strconv.Itoa(f))
	}
	return map[string]string{
		"{T}":      `\{(?:` + strings.Join(tags, "|") + `)\}`,
		"{YYYYMM}": `\{\d{6}\}`,
		"YYYYMM":   `\d{6}`,
		"DD":       `(?:0[1-9]|[12]\d|3[01])`,
		"<scope>":  `(?:ns|pr|cl|pc|gr|gp|gn|cp)`,
		"<sum>":    `(?:pr|cl|pc|gr|gp)`,
		"<ranked>": `(?:ns|pr|cl|pc|gr)`,
		"<m>":      `[^ ]+`,
		"<field>":  `(?:` + strings.Join(fields, "|") + `)`,
		"<mask>":   `\d+`,
		"<ver>":    `\d+`,
		"<build>":  `b[0-9a-z]+`,
		"<stream>": `[A-Za-z0-9_-]+`,
	}
}

// matchKey returns the row of keyTable that describes key, if any.
func matchKey(key string) (keyFamily, bool) {
	for _, f := range keyTable {
		if keyFormRegexp(f.Form).MatchString(key) {
			return f, true
		}
	}
	return keyFamily{}, false
}

// keyFormRegexp is the regular expression of the keys of form.
func keyFormRegexp(form string) *regexp.Regexp {
	ph := keyPlaceholders()
	var b strings.Builder
	b.WriteString("^")
	for rest := form; rest != ""; {
		best, at := "", len(rest)
		for p := range ph {
			if i := strings.Index(rest, p); i >= 0 && (i < at || i == at && len(p) > len(best)) {
				best, at = p, i
			}
		}
		b.WriteString(regexp.QuoteMeta(rest[:at]))
		if best == "" {
			break
		}
		b.WriteString(ph[best])
		rest = rest[at+len(best):]
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// keyFormSep stands for Sep (a space) in a member written into a key.
const keyFormSep = "/"

// Shards is the number of shards each month's rollups are cut into. It
// is part of the layout: changing it makes existing data unreadable. Six
// divides evenly over 2, 3 and 6 masters and keeps a sum's read (six
// parts) cheap.
const Shards = 6

// shardTags are the shards' hash tags: shard i's tag hashes to a slot in
// the middle of [i×16384/Shards, (i+1)×16384/Shards) (checked by a test).
var shardTags = [Shards]string{
	"s0.13289", // slot 1366
	"s1.3372",  // slot 4096
	"s2.7768",  // slot 6826
	"s3.7488",  // slot 9557
	"s4.14948", // slot 12288
	"s5.9627",  // slot 15018
}

// shardOf is the shard of a namespace: FNV-1a of "cluster/namespace".
// The project is not part of it, so a namespace that moves to another
// project keeps its coverage, and exactly once holds across the move.
func shardOf(cluster, namespace string) int {
	h := uint32(2166136261)
	for i := 0; i < len(cluster); i++ {
		h ^= uint32(cluster[i])
		h *= 16777619
	}
	h ^= '/'
	h *= 16777619
	for i := 0; i < len(namespace); i++ {
		h ^= uint32(namespace[i])
		h *= 16777619
	}
	return int(h % Shards)
}

// shardPrefix is the common prefix of every key of shard i.
func shardPrefix(i int) string { return keyPrefix + "{" + shardTags[i] + "}" + keySep }

// shardMonth is the common prefix of shard i's keys of a month.
func shardMonth(i int, month string) string { return shardPrefix(i) + month + keySep }

// monthPrefix is the common prefix of every index key of a month.
func monthPrefix(month string) string { return keyPrefix + "{" + month + "}" + keySep }

func dd(d Day) string {
	n := d.DayOfMonth()
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// valueKeyMember turns an index member into the key form (spaces to '/').
func valueKeyMember(m string) string { return strings.ReplaceAll(m, Sep, keyFormSep) }

// valueKey is shard i's day rollup key of member m in scope sc.
func valueKey(i int, d Day, sc Scope, m string) string {
	return shardMonth(i, d.Month()) + famValue + keySep + dd(d) + keySep + string(sc) + keySep + valueKeyMember(m)
}

// monthSumKey is shard i's part of the month sum of member m in scope sc
// (not ScopeNamespace).
func monthSumKey(i int, month string, sc Scope, m string) string {
	return shardMonth(i, month) + famMonthSum + keySep + string(sc) + keySep + valueKeyMember(m)
}

// coverageKey is shard i's coverage hash of day d.
func coverageKey(i int, d Day) string {
	return shardMonth(i, d.Month()) + famCoverage + keySep + dd(d)
}

// clusterCoverageKey is shard i's cluster coverage hash of day d: per
// cluster, the union of the seconds counted for any of its namespaces in
// the shard, written by applyScript in the same commit as the
// namespaces' coverage.
func clusterCoverageKey(i int, d Day) string {
	return shardMonth(i, d.Month()) + famClusterCoverage + keySep + dd(d)
}

// capacityCoverageKey is shard i's capacity coverage hash of day d: per
// cluster, the seconds its capacity samples counted (a cluster's capacity
// lives in shard shardOf(cluster, "")).
func capacityCoverageKey(i int, d Day) string {
	return shardMonth(i, d.Month()) + famCapacityCoverage + keySep + dd(d)
}

// rankKey is shard i's usage ranking of scope sc and field in month.
func rankKey(i int, month string, sc Scope, field int) string {
	return shardMonth(i, month) + famRank + keySep + string(sc) + keySep + strconv.Itoa(field)
}

// looseKey marks shard i's rankings of month as no bound for Usage and
// Request (set by applyScript, expires with the rankings).
func looseKey(i int, month string) string { return shardMonth(i, month) + famLoose }

// appliedKey is shard i's applied-sequence ranges of a stream.
func appliedKey(i int, stream string) string { return shardPrefix(i) + famApplied + keySep + stream }

// dayIndexKey is the key of the day index of scope sc.
func dayIndexKey(d Day, sc Scope) string {
	return monthPrefix(d.Month()) + famIndex + keySep + dd(d) + keySep + string(sc)
}

// monthIndexKey is the key of the month index of scope sc.
func monthIndexKey(month string, sc Scope) string {
	return monthPrefix(month) + famIndex + keySep + string(sc)
}

// maskKey is the key of the month's presence masks of scope sc.
func maskKey(month string, sc Scope) string {
	return monthPrefix(month) + famMasks + keySep + string(sc)
}

// versionKey is the key of the month's mask version counter of scope sc.
func versionKey(month string, sc Scope) string {
	return monthPrefix(month) + famVersion + keySep + string(sc)
}

// nameIndexKey is the key of the month's namespace-name index.
func nameIndexKey(month string) string { return monthPrefix(month) + famNames }

// rangePointerKey is the key of the version the newest cache of a
// clipped bucket was built at.
func rangePointerKey(month string, sc Scope, mask uint32) string {
	return monthPrefix(month) + famRangePointer + keySep + string(sc) + keySep + strconv.FormatUint(uint64(mask), 10)
}

// rangeCacheKey is the key of a clipped bucket's cache built at version.
func rangeCacheKey(month string, sc Scope, mask uint32, version string) string {
	return monthPrefix(month) + famRangeCache + keySep + string(sc) + keySep + strconv.FormatUint(uint64(mask), 10) + keySep + version
}

// rangeBuildKey is the temporary key a cache is built in, unique per
// build (nanos in base 36).
func rangeBuildKey(cache string, nanos int64) string {
	return cache + keySep + "b" + strconv.FormatInt(nanos, 36)
}

// rangeRegistryKey is the key of the month's caches to delete.
func rangeRegistryKey(month string) string { return monthPrefix(month) + famRangeRegistry }

// configKey is the key of the recorded configuration.
const configKey = keyPrefix + famConfig
