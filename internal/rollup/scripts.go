package rollup

import "github.com/redis/go-redis/v9"

// applyScript applies one batch's contributions to one month, atomically:
// for every piece it checks the day's coverage of the piece's namespace
// (exactly once), adds the namespace's values, and maintains the indexes
// when an entity appears on a day for the first time. Project, cluster and
// project-cluster sums come pre-aggregated per batch and are applied first,
// assuming every piece is new; a piece found to be a duplicate or an
// overlap subtracts its own values again, exactly, in int64.
//
// KEYS[1]: any key of the month (routing for Redis Cluster).
// ARGV: prefix, monthExpireAt, nPieces, nAggregates, wantChanges ('1' or
// '0'), then nAggregates of (dd, scope, member, keyform, k, k×(field,
// value)), then nPieces of (dd, dayExpireAt, project, cluster, namespace,
// from, to, k, k×(field, value)).
// Returns {verdicts, overflows, changes}: one character per piece ('0'
// applied, '1' duplicate, '2' overlap), how many increments overflowed
// int64, and, when asked, the new day rollup of every project, cluster and
// namespace key the batch touched (applied or duplicate) as flat
// (scope, dd, member, value) quadruples.
var applyScript = redis.NewScript(`
local pre = ARGV[1]
local monthExp = ARGV[2]
local np = tonumber(ARGV[3])
local na = tonumber(ARGV[4])
local want = ARGV[5] == '1'
local overflow = 0
local changes = {}
local function changed(scope, dd, member, key)
  if want then
    changes[#changes + 1] = scope
    changes[#changes + 1] = dd
    changes[#changes + 1] = member
    changes[#changes + 1] = redis.call('GET', key) or ''
  end
end

local function incr(key, at, k, neg)
  local cmd = {'BITFIELD', key, 'OVERFLOW', 'FAIL'}
  for j = 0, k - 1 do
    local v = ARGV[at + 2 * j + 1]
    if neg then
      if string.sub(v, 1, 1) == '-' then v = string.sub(v, 2) else v = '-' .. v end
    end
    cmd[#cmd + 1] = 'INCRBY'
    cmd[#cmd + 1] = 'i64'
    cmd[#cmd + 1] = '#' .. ARGV[at + 2 * j]
    cmd[#cmd + 1] = v
  end
  if k == 0 then return end
  local res = redis.call(unpack(cmd))
  for j = 1, k do
    if not res[j] then overflow = overflow + 1 end
  end
end

local function mark(scope, dd, member, keyform, dayExp, nn)
  local ix = pre .. 'ix:' .. dd .. ':' .. scope
  if redis.call('ZADD', ix, 0, member) == 0 then return end
  redis.call('EXPIREAT', ix, dayExp)
  redis.call('EXPIREAT', pre .. 'r:' .. dd .. ':' .. scope .. ':' .. keyform, dayExp)
  local pm = pre .. 'pm:' .. scope
  local m = tonumber(redis.call('HGET', pm, member) or '0')
  local b = bit.lshift(1, tonumber(dd) - 1)
  if bit.band(m, b) ~= 0 then return end
  redis.call('HSET', pm, member, bit.bor(m, b))
  redis.call('INCR', pre .. 'ver:' .. scope)
  if m == 0 then
    local mix = pre .. 'ix:' .. scope
    redis.call('ZADD', mix, 0, member)
    redis.call('EXPIREAT', mix, monthExp)
    redis.call('EXPIREAT', pm, monthExp)
    redis.call('EXPIREAT', pre .. 'ver:' .. scope, monthExp)
    if nn then
      redis.call('ZADD', pre .. 'nn', 0, nn)
      redis.call('EXPIREAT', pre .. 'nn', monthExp)
    end
  end
end

-- cover returns 0 (new, recorded), 1 (duplicate) or 2 (overlap), and
-- whether the namespace's indexes must be (re)marked.
local function cover(key, field, proj, from, to)
  local cur = redis.call('HGET', key, field)
  if not cur then
    redis.call('HSET', key, field, proj .. ';' .. from .. '-' .. to)
    return 0, true
  end
  local semi = string.find(cur, ';', 1, true)
  local oldp = string.sub(cur, 1, semi - 1)
  local iv = {}
  for s, e in string.gmatch(string.sub(cur, semi + 1), '(%d+)-(%d+)') do
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
  redis.call('HSET', key, field, proj .. ';' .. table.concat(out, ','))
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
local aggs = {}
for _ = 1, na do
  local dd, scope, keyform, k = ARGV[i], ARGV[i + 1], ARGV[i + 3], tonumber(ARGV[i + 4])
  local key = pre .. 'r:' .. dd .. ':' .. scope .. ':' .. keyform
  incr(key, i + 5, k, false)
  if want and scope ~= 'pc' then aggs[#aggs + 1] = {scope, dd, ARGV[i + 2], key} end
  i = i + 5 + 2 * k
end

local verdicts = {}
local covSeen = {}
local nsSeen, nsChanged = {}, {}
for _ = 1, np do
  local dd, dayExp, p, c, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local from, to, k = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7])
  local at = i + 8
  i = at + 2 * k
  local ck = pre .. 'cov:' .. dd
  local v, fresh = cover(ck, c .. '/' .. n, p, from, to)
  verdicts[#verdicts + 1] = tostring(v)
  local nskey = p .. '/' .. c .. '/' .. n
  if v ~= 2 and want and not nsSeen[dd .. nskey] then
    nsSeen[dd .. nskey] = true
    nsChanged[#nsChanged + 1] = {dd, p .. ' ' .. c .. ' ' .. n, pre .. 'r:' .. dd .. ':ns:' .. nskey}
  end
  if v == 0 then
    local cc = dd .. ' ' .. c
    local e = clusterCov[cc]
    if not e then
      e = {dd = dd, c = c, exp = dayExp, spans = {}}
      clusterCov[cc] = e
      clusterOrder[#clusterOrder + 1] = cc
    end
    e.spans[#e.spans + 1] = {from, to}
    incr(pre .. 'r:' .. dd .. ':ns:' .. nskey, at, k, false)
    if fresh then
      if not covSeen[dd] then
        redis.call('EXPIREAT', ck, dayExp)
        covSeen[dd] = true
      end
      mark('ns', dd, p .. ' ' .. c .. ' ' .. n, nskey, dayExp, n .. ' ' .. p .. ' ' .. c)
      mark('pr', dd, p, p, dayExp, nil)
      mark('cl', dd, c, c, dayExp, nil)
      mark('pc', dd, p .. ' ' .. c, p .. '/' .. c, dayExp, nil)
    end
  else
    incr(pre .. 'r:' .. dd .. ':pr:' .. p, at, k, true)
    incr(pre .. 'r:' .. dd .. ':cl:' .. c, at, k, true)
    incr(pre .. 'r:' .. dd .. ':pc:' .. p .. '/' .. c, at, k, true)
  end
end
for _, cc in ipairs(clusterOrder) do
  local e = clusterCov[cc]
  local key = pre .. 'cc:' .. e.dd
  redis.call('HSET', key, e.c, unite(redis.call('HGET', key, e.c), e.spans))
  redis.call('EXPIREAT', key, e.exp)
end
for _, a in ipairs(aggs) do changed(a[1], a[2], a[3], a[4]) end
for _, x in ipairs(nsChanged) do changed('ns', x[1], x[2], x[3]) end
return {table.concat(verdicts), overflow, changes}
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

// rangeIndexScript materialises the members of scope whose month mask meets
// ARGV mask (a bucket clipped inside one month) as a sorted set, rebuilt
// only when the month's masks changed since. Returns the set's key.
//
// KEYS[1]: the month's mask hash. ARGV: prefix, scope, mask, ttl seconds.
var rangeIndexScript = redis.NewScript(`
local pre, scope, mask, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ver = redis.call('GET', pre .. 'ver:' .. scope) or '0'
local bx = pre .. 'bx:' .. scope .. ':' .. ARGV[3]
local bxv = pre .. 'bxv:' .. scope .. ':' .. ARGV[3]
if redis.call('GET', bxv) == ver then return bx end
redis.call('DEL', bx)
local all = redis.call('HGETALL', KEYS[1])
local batch = {}
for j = 1, #all, 2 do
  if bit.band(tonumber(all[j + 1]), mask) ~= 0 then
    batch[#batch + 1] = 0
    batch[#batch + 1] = all[j]
    if #batch >= 1000 then
      redis.call('ZADD', bx, unpack(batch))
      batch = {}
    end
  end
end
if #batch > 0 then redis.call('ZADD', bx, unpack(batch)) end
redis.call('SET', bxv, ver)
redis.call('EXPIRE', bx, ttl)
redis.call('EXPIRE', bxv, ttl)
return bx
`)
