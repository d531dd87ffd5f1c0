package rollup

import (
	"strconv"
	"strings"
)

// Key layout (version 2: sharded). Nothing outside this package builds,
// parses or reads a key: callers ask the Store and Reader for entities,
// selections and day values.
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
// Shard keys, YYYYMM and DD in the billing zone, <m> an index member (see
// Member) with spaces as '/':
//
//	c:{T}:YYYYMM:r:DD:<scope>:<m>  string, 12 big-endian int64 (BITFIELD i64 #Field): the day rollup
//	                               (ns: the namespace's; pr, cl, pc: this shard's part of the sum)
//	c:{T}:YYYYMM:m:<scope>:<m>     as r:, for the sums (pr, cl, pc) only: this shard's part of the month's
//	                               sum (BITFIELD OVERFLOW SAT), then a 32-bit mask of the days that moved it
//	                               (bit 768+DD-1, in the same write), so a month is 6 reads, not 6 per day
//	c:{T}:YYYYMM:cov:DD            hash cluster/namespace -> "project;from-to,from-to" seconds of the day counted
//	c:{T}:YYYYMM:cc:DD             hash cluster -> "from-to,from-to": union of the seconds counted for the
//	                               cluster's namespaces of this shard (readers unite the shards' parts)
//	c:{T}:YYYYMM:rk:<scope>:<field> zset member -> minus its month total of field in this shard (usage
//	                               ranking, orderBy=usage; rank.go): a month key, ZINCRBY with the values
//	c:{T}:YYYYMM:rkloose           "1" once a piece of the month in this shard had an Effective below its
//	                               Usage or Request: the rankings bound no Usage or Request (rank.go)
//	c:{T}:applied:<stream>         zset of applied stream sequence ranges "first-last", score first
//
// Index keys, one hash tag per month (Redis Cluster spreads months over
// masters; a month's index writes are one per new entity-day, not one per
// sample):
//
//	c:{YYYYMM}:ix:DD:<scope>       zset (score 0, lexicographic) of members with a sample that day
//	c:{YYYYMM}:ix:<scope>          zset of members with a sample that month
//	c:{YYYYMM}:pm:<scope>          hash member -> bit mask of the month's days it has samples on (bit DD-1)
//	c:{YYYYMM}:ver:<scope>         counter, bumped whenever a mask changes
//	c:{YYYYMM}:nn                  zset of "namespace project cluster", to find a namespace by name
//	c:{YYYYMM}:bx:<scope>:<mask>   zset cache: members whose mask meets <mask> (a clipped bucket), 1 h
//	c:{YYYYMM}:bxv:<scope>:<mask>  the version the cache was built at
//	c:{cfg}                        hash: timezone
//
// Every key of a month, day keys included, expires retention after the
// month ends (a month is kept or dropped whole, so its month keys never
// hold days its day keys lost); applied ranges never (a few hundred
// bytes).
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
// Adding a key family (for example per-month rankings, or coverage per
// cluster-day):
//   - Data that must commit with the values (anything not idempotent,
//     such as an INCRBY) goes in the shard: build its key from shardMonth
//     (so it shares the shard's slot), write it in applyScript, keep a
//     per-shard part and let readers add the Shards parts.
//   - Idempotent data derived from which entities exist (ZADD, SETBIT,
//     HSET of a bit) goes in the month's index slot: build its key from
//     monthPrefix and write it in indexScript.
//   - Every key gets an expiry in the script that creates it: retention
//     after its month ends (dayExpireAt for a day key, monthExpireAt for
//     a month key: today the same instant).
//   - Readers get a Reader method returning entities or values, never a
//     key.
const keyPrefix = "c:"

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
func shardPrefix(i int) string { return keyPrefix + "{" + shardTags[i] + "}:" }

// shardMonth is the common prefix of shard i's keys of a month.
func shardMonth(i int, month string) string { return shardPrefix(i) + month + ":" }

// monthPrefix is the common prefix of every index key of a month.
func monthPrefix(month string) string { return keyPrefix + "{" + month + "}:" }

func dd(d Day) string {
	n := d.DayOfMonth()
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// valueKeyMember turns an index member into the key form (spaces to '/').
func valueKeyMember(m string) string { return strings.ReplaceAll(m, Sep, "/") }

// valueKey is shard i's day rollup key of member m in scope sc.
func valueKey(i int, d Day, sc Scope, m string) string {
	return shardMonth(i, d.Month()) + "r:" + dd(d) + ":" + string(sc) + ":" + valueKeyMember(m)
}

// monthSumKey is shard i's part of the month sum of member m in scope sc
// (not ScopeNamespace).
func monthSumKey(i int, month string, sc Scope, m string) string {
	return shardMonth(i, month) + "m:" + string(sc) + ":" + valueKeyMember(m)
}

// memberShard is the shard of a namespace member.
func memberShard(m string) int {
	e := ParseMember(ScopeNamespace, m)
	return shardOf(e.Cluster, e.Namespace)
}

// coverageKey is shard i's coverage hash of day d.
func coverageKey(i int, d Day) string { return shardMonth(i, d.Month()) + "cov:" + dd(d) }

// clusterCoverageKey is shard i's cluster coverage hash of day d: per
// cluster, the union of the seconds counted for any of its namespaces in
// the shard, written by applyScript in the same commit as the
// namespaces' coverage.
func clusterCoverageKey(i int, d Day) string { return shardMonth(i, d.Month()) + "cc:" + dd(d) }

// appliedKey is shard i's applied-sequence ranges of a stream.
func appliedKey(i int, stream string) string { return shardPrefix(i) + "applied:" + stream }

// dayIndexKey is the key of the day index of scope sc.
func dayIndexKey(d Day, sc Scope) string {
	return monthPrefix(d.Month()) + "ix:" + dd(d) + ":" + string(sc)
}

// monthIndexKey is the key of the month index of scope sc.
func monthIndexKey(month string, sc Scope) string {
	return monthPrefix(month) + "ix:" + string(sc)
}

// maskKey is the key of the month's presence masks of scope sc.
func maskKey(month string, sc Scope) string { return monthPrefix(month) + "pm:" + string(sc) }

// nameIndexKey is the key of the month's namespace-name index.
func nameIndexKey(month string) string { return monthPrefix(month) + "nn" }

// versionKey is the key of the month's mask version counter of scope sc.
func versionKey(month string, sc Scope) string { return monthPrefix(month) + "ver:" + string(sc) }

func rangePointerKey(month string, sc Scope, mask uint32) string {
	return monthPrefix(month) + "bxv:" + string(sc) + ":" + strconv.FormatUint(uint64(mask), 10)
}

func rangeCacheKey(month string, sc Scope, mask uint32, version string) string {
	return monthPrefix(month) + "bx:" + string(sc) + ":" + strconv.FormatUint(uint64(mask), 10) + ":" + version
}

func rangeRegistryKey(month string) string { return monthPrefix(month) + "bxr" }

// rankKey is shard i's usage ranking of scope sc and field in month.
func rankKey(i int, month string, sc Scope, field int) string {
	return shardMonth(i, month) + "rk:" + string(sc) + ":" + strconv.Itoa(field)
}

// looseKey marks shard i's rankings of month as no bound for Usage and
// Request (set by applyScript, expires with the rankings).
func looseKey(i int, month string) string { return shardMonth(i, month) + "rkloose" }

// configKey is the key of the recorded configuration.
const configKey = keyPrefix + "{cfg}"
