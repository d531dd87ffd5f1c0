package rollup

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

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

// applyScript applies one batch's contributions to one shard of one
// month, atomically: for every piece it checks the day's coverage of the
// piece's namespace (exactly once) and adds the namespace's values.
// Project, cluster and project-cluster parts come pre-aggregated per
// batch and are applied first, assuming every piece is new; a piece found
// to be a duplicate or an overlap subtracts its own values again, exactly,
// in int64. Sums also have a month part (monthSumKey), moved with their
// day parts. The shard's usage rankings of the month (rankKey) move with
// the values: ZINCRBY of the Effective amounts, in the same commit, and a
// piece whose Effective is below its Usage or Request (which breaks the
// bound the rankings give those methods; rank.go) marks the shard-month's
// rankings loose. Indexes are not written here (see indexScript).
//
// The script is the hot path of ingest, so the caller prepares what Lua
// would do slowly: values come as BITFIELD field tokens ("#3") and
// decimal int64 amounts, only the non-zero ones, followed by the three
// items' ranking increments (minus the Effective amount, ” when zero).
//
// KEYS[1]: any key of the shard (routing for Redis Cluster).
// ARGV: prefix (shardMonth), nPieces, nAggregates, wantChanges ('1' or
// '0'), monthExpireAt (of the rankings), then nAggregates of (dd, scope,
// keyform, values), then nPieces of (dd, dayExpireAt, project, cluster,
// namespace, from, to, loose ('1' or '0'), values), where values is (k,
// k×(token, amount), 3×rank).
// Returns {verdicts, overflows, changes, index}: one character per piece
// ('0' applied, '1' duplicate, '2' overlap), how many increments
// overflowed int64, when asked the new day rollup of every namespace the
// batch touched (applied or duplicate) as flat (dd, member, value)
// triples, and one character per piece, '1' when the piece's entities
// need their index writes: the namespace's first piece on that day (or
// under that project), or a duplicate (whose first application's index
// writes may not have happened).
var applyScript = redis.NewScript(`
local pre = ARGV[1]
local np = tonumber(ARGV[2])
local na = tonumber(ARGV[3])
local want = ARGV[4] == '1'
local monthExp = ARGV[5]
local overflow = 0
local changes = {}
local call = redis.call
local sub, byte = string.sub, string.byte

local function neg(v)
  if byte(v, 1) == 45 then return sub(v, 2) end
  return '-' .. v
end

-- The rankings of the month: score minus the member's total, so that
-- ascending order is largest first and ties come by name. Keyed by the
-- Effective field of each item (item*4+2; rank.go).
local rkeys, ranked = {}, {}
local function rkey(scope, item)
  local t = rkeys[scope]
  if not t then
    t = {pre .. 'rk:' .. scope .. ':2', pre .. 'rk:' .. scope .. ':6', pre .. 'rk:' .. scope .. ':10'}
    rkeys[scope] = t
  end
  return t[item]
end

local expired = {}
local function expire(key, at)
  if not expired[key] then
    expired[key] = true
    call('EXPIREAT', key, at)
  end
end

-- incr adds the values at ARGV[at] (negated when neg) to key and to
-- member's rankings, and returns the index after them. With monthKey (a
-- sum's month part), the same values go there too, saturating (a month
-- part at the int64 limit is read day by day instead; fillValues), and
-- day dd's bit is set in the mask after the values (bit 768+dd-1).
local function incr(key, at, negate, scope, member, monthKey, dd)
  local k = tonumber(ARGV[at])
  local after = at + 1 + 2 * k
  if k > 0 then
    local cmd = {'BITFIELD', key, 'OVERFLOW', 'FAIL'}
    local n = 4
    for j = at + 1, after - 1, 2 do
      local v = ARGV[j + 1]
      if negate then v = neg(v) end
      cmd[n + 1] = 'INCRBY'
      cmd[n + 2] = 'i64'
      cmd[n + 3] = ARGV[j]
      cmd[n + 4] = v
      n = n + 4
    end
    local res = call(unpack(cmd))
    for j = 1, k do
      if not res[j] then overflow = overflow + 1 end
    end
    if monthKey then
      cmd[2] = monthKey
      cmd[4] = 'SAT'
      cmd[n + 1] = 'SET'
      cmd[n + 2] = 'u1'
      cmd[n + 3] = 767 + tonumber(dd)
      cmd[n + 4] = 1
      call(unpack(cmd))
      expire(monthKey, monthExp)
    end
  end
  for item = 1, 3 do
    local r = ARGV[after + item - 1]
    if r ~= '' then
      if negate then r = neg(r) end
      local rk = rkey(scope, item)
      call('ZINCRBY', rk, r, member)
      ranked[rk] = true
    end
  end
  return after + 3
end

-- cover returns 0 (new, recorded), 1 (duplicate) or 2 (overlap), and
-- whether the namespace is new on the day (or under this project).
local function cover(key, field, proj, from, to)
  local cur = call('HGET', key, field)
  if not cur then
    call('HSET', key, field, proj .. ';' .. from .. '-' .. to)
    return 0, true
  end
  local semi = string.find(cur, ';', 1, true)
  local oldp = sub(cur, 1, semi - 1)
  -- The common case (the namespace's next window): the piece starts where
  -- the last counted span ends. Spans are sorted and disjoint, so it
  -- overlaps none; extend that span.
  local tail = '-' .. from
  if #cur > #tail and sub(cur, -#tail) == tail then
    call('HSET', key, field, proj .. sub(cur, semi, -#tail - 1) .. '-' .. to)
    return 0, oldp ~= proj
  end
  local iv = {}
  for s, e in string.gmatch(sub(cur, semi + 1), '(%d+)-(%d+)') do
    iv[#iv + 1] = {tonumber(s), tonumber(e)}
  end
  for _, x in ipairs(iv) do
    if x[1] < to and from < x[2] then
      if from >= x[1] and to <= x[2] then return 1, false end
      return 2, false
    end
  end
  local out, placed, ns, ne = {}, false, from, to
  for _, x in ipairs(iv) do
    if x[2] == ns then ns = x[1]
    elseif x[1] == ne then ne = x[2]
    elseif x[2] < ns then out[#out + 1] = x[1] .. '-' .. x[2]
    else
      if not placed then out[#out + 1] = ns .. '-' .. ne; placed = true end
      out[#out + 1] = x[1] .. '-' .. x[2]
    end
  end
  if not placed then out[#out + 1] = ns .. '-' .. ne end
  call('HSET', key, field, proj .. ';' .. table.concat(out, ','))
  return 0, oldp ~= proj
end

-- unite merges the spans of list (pairs of numbers) into the cluster's
-- coverage string cur: sorted, disjoint, touching spans joined.
local function unite(cur, list)
  local iv = {}
  if cur then
    for s, e in string.gmatch(cur, '(%d+)-(%d+)') do iv[#iv + 1] = {tonumber(s), tonumber(e)} end
  end
  for _, x in ipairs(list) do iv[#iv + 1] = x end
  table.sort(iv, function(a, b) return a[1] < b[1] end)
  local out, cs, ce = {}, nil, nil
  for _, x in ipairs(iv) do
    if cs == nil then cs, ce = x[1], x[2]
    elseif x[1] <= ce then if x[2] > ce then ce = x[2] end
    else out[#out + 1] = cs .. '-' .. ce; cs, ce = x[1], x[2] end
  end
  if cs ~= nil then out[#out + 1] = cs .. '-' .. ce end
  return table.concat(out, ',')
end
local clusterCov, clusterOrder = {}, {}

local i = 6
for _ = 1, na do
  local dd, scope, keyform = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = incr(pre .. 'r:' .. dd .. ':' .. scope .. ':' .. keyform, i + 3, false, scope, (string.gsub(keyform, '/', ' ')), pre .. 'm:' .. scope .. ':' .. keyform, dd)
end

local verdicts, index = {}, {}
local nsSeen, nsOrder = {}, {}
local loose = false
for _ = 1, np do
  local dd, dayExp, p, c, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local from, to = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local at = i + 8
  local ck = pre .. 'cov:' .. dd
  local v, fresh = cover(ck, c .. '/' .. n, p, from, to)
  verdicts[#verdicts + 1] = v
  local r = pre .. 'r:' .. dd .. ':'
  local nskey = r .. 'ns:' .. p .. '/' .. c .. '/' .. n
  local member = p .. ' ' .. c .. ' ' .. n
  if v ~= 2 and want and not nsSeen[nskey] then
    nsSeen[nskey] = true
    nsOrder[#nsOrder + 1] = {dd, member, nskey}
  end
  local ix = '0'
  if v == 0 then
    if ARGV[i + 7] == '1' then loose = true end
    local cc = dd .. ' ' .. c
    local e = clusterCov[cc]
    if not e then
      e = {dd = dd, c = c, exp = dayExp, spans = {}}
      clusterCov[cc] = e
      clusterOrder[#clusterOrder + 1] = cc
    end
    e.spans[#e.spans + 1] = {from, to}
    i = incr(nskey, at, false, 'ns', member)
    if fresh then
      ix = '1'
      expire(ck, dayExp)
      expire(nskey, dayExp)
      expire(r .. 'pr:' .. p, dayExp)
      expire(r .. 'cl:' .. c, dayExp)
      expire(r .. 'pc:' .. p .. '/' .. c, dayExp)
    end
  else
    incr(r .. 'pr:' .. p, at, true, 'pr', p, pre .. 'm:pr:' .. p, dd)
    incr(r .. 'cl:' .. c, at, true, 'cl', c, pre .. 'm:cl:' .. c, dd)
    i = incr(r .. 'pc:' .. p .. '/' .. c, at, true, 'pc', p .. ' ' .. c, pre .. 'm:pc:' .. p .. '/' .. c, dd)
    if v == 1 then
      ix = '1'
      -- A namespace that moved project may meet a sum key of its new
      -- project for the first time as a duplicate.
      expire(r .. 'pr:' .. p, dayExp)
      expire(r .. 'cl:' .. c, dayExp)
      expire(r .. 'pc:' .. p .. '/' .. c, dayExp)
    end
  end
  index[#index + 1] = ix
end
for _, cc in ipairs(clusterOrder) do
  local e = clusterCov[cc]
  local key = pre .. 'cc:' .. e.dd
  call('HSET', key, e.c, unite(call('HGET', key, e.c), e.spans))
  expire(key, e.exp)
end
for rk in pairs(ranked) do expire(rk, monthExp) end
if loose then
  call('SET', pre .. 'rkloose', '1', 'EXAT', monthExp)
end
for _, x in ipairs(nsOrder) do
  changes[#changes + 1] = x[1]
  changes[#changes + 1] = x[2]
  changes[#changes + 1] = call('GET', x[3]) or ''
end
return {table.concat(verdicts), overflow, changes, table.concat(index)}
`)

// indexScript records entities in a month's indexes: each entry's day
// index, its presence mask and, the first time in the month, the month
// index and (namespaces) the name index. Every write is idempotent, so
// running it twice, or after a partial failure, is harmless.
//
// KEYS[1]: any key of the month's index slot.
// ARGV: prefix (monthPrefix), monthExpireAt, then groups of (scope, dd,
// dayExpireAt, member, name) where name is the namespace-name index member
// or ”.
var indexScript = redis.NewScript(`
local pre, monthExp = ARGV[1], ARGV[2]
local bumped, expired = {}, {}
for i = 3, #ARGV, 5 do
  local scope, dd, dayExp, member, nn = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local ix = pre .. 'ix:' .. dd .. ':' .. scope
  if redis.call('ZADD', ix, 0, member) == 1 then
    if not expired[ix] then
      expired[ix] = true
      redis.call('EXPIREAT', ix, dayExp)
    end
    local pm = pre .. 'pm:' .. scope
    local m = tonumber(redis.call('HGET', pm, member) or '0')
    local b = bit.lshift(1, tonumber(dd) - 1)
    if bit.band(m, b) == 0 then
      redis.call('HSET', pm, member, bit.bor(m, b))
      bumped[scope] = true
      if m == 0 then
        local mix = pre .. 'ix:' .. scope
        redis.call('ZADD', mix, 0, member)
        if not expired[mix] then
          expired[mix] = true
          redis.call('EXPIREAT', mix, monthExp)
          redis.call('EXPIREAT', pm, monthExp)
        end
        if nn ~= '' then
          redis.call('ZADD', pre .. 'nn', 0, nn)
          if not expired['nn'] then
            expired['nn'] = true
            redis.call('EXPIREAT', pre .. 'nn', monthExp)
          end
        end
      end
    end
  end
end
for scope in pairs(bumped) do
  redis.call('INCR', pre .. 'ver:' .. scope)
  redis.call('EXPIREAT', pre .. 'ver:' .. scope, monthExp)
end
return 1
`)

// markScript records applied stream sequences as merged ranges, so the
// lowest unapplied sequence is one read away (see Store.Applied).
//
// KEYS[1]: the applied key of the stream. ARGV: pairs of first, last.
var markScript = redis.NewScript(`
local k = KEYS[1]
for i = 1, #ARGV, 2 do
  local a, b = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local ns, ne = a, b
  local pred = redis.call('ZREVRANGEBYSCORE', k, a, '-inf', 'LIMIT', 0, 1)
  if pred[1] then
    local s, e = string.match(pred[1], '(%d+)-(%d+)')
    s, e = tonumber(s), tonumber(e)
    if e >= a - 1 then
      ns = s
      if e > ne then ne = e end
      redis.call('ZREM', k, pred[1])
    end
  end
  local succ = redis.call('ZRANGEBYSCORE', k, '(' .. a, b + 1)
  for _, m in ipairs(succ) do
    local s, e = string.match(m, '(%d+)-(%d+)')
    e = tonumber(e)
    if e > ne then ne = e end
    redis.call('ZREM', k, m)
  end
  redis.call('ZADD', k, ns, string.format('%.0f-%.0f', ns, ne))
end
return 1
`)
