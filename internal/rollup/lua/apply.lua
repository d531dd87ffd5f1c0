-- applyScript (scripts.go): one batch's pieces of one shard and month.
-- The key layout comes from Go (keys.go), filled in when the script is
-- built: the key separator, the families' names after the shard-month
-- prefix, the scopes, the member separator and its key form, the ranked
-- fields (one per item) and the first bit of a month part's day mask.
local SEP = {{lua .Sep}}
local VALUE, MONTHSUM, COVERAGE, CLUSTERCOV = {{lua .Value}}, {{lua .MonthSum}}, {{lua .Coverage}}, {{lua .ClusterCoverage}}
local RANK, LOOSE = {{lua .Rank}}, {{lua .Loose}}
local NS, PR, CL, PC = {{lua .NS}}, {{lua .PR}}, {{lua .CL}}, {{lua .PC}}
local GR, GP, GN, CP = {{lua .GR}}, {{lua .GP}}, {{lua .GN}}, {{lua .CP}}
local CAPCOV, CAPFLAG = {{lua .CapacityCoverage}}, {{lua .CapacityFlag}}
local MSEP, KSEP = {{lua .MemberSep}}, {{lua .KeyFormSep}}
local RANKED = { {{- range $i, $f := .RankFields}}{{if $i}}, {{end}}'{{$f}}'{{end -}} }
local MASKBIT = {{.MaskBit}}

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
-- ranked field of each item (its Effective; rank.go).
local rkeys, ranked = {}, {}
local function rkey(scope, item)
  local t = rkeys[scope]
  if not t then
    t = {}
    for j, f in ipairs(RANKED) do t[j] = pre .. RANK .. SEP .. scope .. SEP .. f end
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

-- skip returns the index after the values at ARGV[at].
local function skip(at)
  return at + 1 + 2 * tonumber(ARGV[at]) + #RANKED
end

-- incr adds the values at ARGV[at] (negated when neg) to key and, when
-- scope is set, to member's rankings, and returns the index after them. With monthKey (a
-- sum's month part), the same values go there too, saturating (a month
-- part at the int64 limit is read day by day instead; fillValues), and
-- day dd's bit is set in the mask after the values (bit MASKBIT+dd-1).
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
      cmd[n + 3] = MASKBIT - 1 + tonumber(dd)
      cmd[n + 4] = 1
      call(unpack(cmd))
      expire(monthKey, monthExp)
    end
  end
  for item = 1, #RANKED do
    if not scope then break end
    local r = ARGV[after + item - 1]
    if r ~= '' then
      if negate then r = neg(r) end
      local rk = rkey(scope, item)
      call('ZINCRBY', rk, r, member)
      ranked[rk] = true
    end
  end
  return after + #RANKED
end

-- cover returns 0 (new, recorded), 1 (duplicate) or 2 (overlap), whether
-- the namespace is new on the day (or under this project), and for a
-- duplicate whether the day's last piece had the same project.
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
      if from >= x[1] and to <= x[2] then return 1, false, oldp == proj end
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
  -- Project-groups are not ranked (a project's groups are few: the API
  -- ranks them whole).
  local rs = scope
  if scope == GP then rs = nil end
  i = incr(pre .. VALUE .. SEP .. dd .. SEP .. scope .. SEP .. keyform, i + 3, false, rs, (string.gsub(keyform, KSEP, MSEP)), pre .. MONTHSUM .. SEP .. scope .. SEP .. keyform, dd)
end

local verdicts, index = {}, {}
local nsSeen, nsOrder = {}, {}
local loose = false
for _ = 1, np do
  local dd, dayExp, p, c, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local from, to = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local flag, covp, ng = ARGV[i + 7], ARGV[i + 8], tonumber(ARGV[i + 9])
  local g0 = i + 10 -- ng of (key, value)
  local at = g0 + 2 * ng
  local nexti = skip(at)
  local r = pre .. VALUE .. SEP .. dd .. SEP
  local ix = '0'
  if flag == CAPFLAG then
    -- A cluster's capacity: its own coverage, its own rollup, no sum.
    local ck = pre .. CAPCOV .. SEP .. dd
    local v, fresh = cover(ck, c, '', from, to)
    verdicts[#verdicts + 1] = v
    if v == 0 then
      local key = r .. CP .. SEP .. c
      incr(key, at, false)
      if fresh then
        ix = '1'
        expire(ck, dayExp)
        expire(key, dayExp)
      end
    elseif v == 1 then
      ix = '1'
    end
  else
    local ck = pre .. COVERAGE .. SEP .. dd
    local v, fresh, same = cover(ck, c .. KSEP .. n, covp, from, to)
    verdicts[#verdicts + 1] = v
    local nskey = r .. NS .. SEP .. p .. KSEP .. c .. KSEP .. n
    local member = p .. MSEP .. c .. MSEP .. n
    if v ~= 2 and want and not nsSeen[nskey] then
      nsSeen[nskey] = true
      nsOrder[#nsOrder + 1] = {dd, member, nskey}
    end
    if v == 0 then
      if flag == '1' then loose = true end
      local cc = dd .. ' ' .. c
      local e = clusterCov[cc]
      if not e then
        e = {dd = dd, c = c, exp = dayExp, spans = {}}
        clusterCov[cc] = e
        clusterOrder[#clusterOrder + 1] = cc
      end
      e.spans[#e.spans + 1] = {from, to}
      incr(nskey, at, false, NS, member)
      -- The namespace's part of each of its groups (no ranking).
      for j = g0, g0 + 2 * ng - 1, 2 do
        local gk, gv = ARGV[j], ARGV[j + 1]
        local gnkey = r .. GN .. SEP .. gk .. KSEP .. gv .. KSEP .. p .. KSEP .. c .. KSEP .. n
        incr(gnkey, at, false)
        if fresh then
          expire(gnkey, dayExp)
          expire(r .. GR .. SEP .. gk .. KSEP .. gv, dayExp)
          expire(r .. GP .. SEP .. gk .. KSEP .. p .. KSEP .. gv, dayExp)
        end
      end
      if fresh then
        ix = '1'
        expire(ck, dayExp)
        expire(nskey, dayExp)
        expire(r .. PR .. SEP .. p, dayExp)
        expire(r .. CL .. SEP .. c, dayExp)
        expire(r .. PC .. SEP .. p .. KSEP .. c, dayExp)
      end
    else
      -- Not new: take back its part of the sums, added up front.
      local prkey, clkey, pckey = r .. PR .. SEP .. p, r .. CL .. SEP .. c, r .. PC .. SEP .. p .. KSEP .. c
      local m = pre .. MONTHSUM .. SEP
      incr(prkey, at, true, PR, p, m .. PR .. SEP .. p, dd)
      incr(clkey, at, true, CL, c, m .. CL .. SEP .. c, dd)
      incr(pckey, at, true, PC, p .. MSEP .. c, m .. PC .. SEP .. p .. KSEP .. c, dd)
      for j = g0, g0 + 2 * ng - 1, 2 do
        local gk, gv = ARGV[j], ARGV[j + 1]
        local grform, gpform = gk .. KSEP .. gv, gk .. KSEP .. p .. KSEP .. gv
        local grkey, gpkey = r .. GR .. SEP .. grform, r .. GP .. SEP .. gpform
        incr(grkey, at, true, GR, gk .. MSEP .. gv, m .. GR .. SEP .. grform, dd)
        incr(gpkey, at, true, nil, nil, m .. GP .. SEP .. gpform, dd)
        if v == 1 then
          expire(grkey, dayExp)
          expire(gpkey, dayExp)
        end
      end
      if v == 1 then
        ix = '1'
        -- The duplicate's groups are indexed only when they are the
        -- day's last or hold a value: a window sent again under other
        -- labels must not list groups that counted nothing.
        if ng > 0 and not same then
          for j = g0, g0 + 2 * ng - 1, 2 do
            if call('EXISTS', r .. GN .. SEP .. ARGV[j] .. KSEP .. ARGV[j + 1] .. KSEP .. p .. KSEP .. c .. KSEP .. n) == 0 then
              ix = '2'
              break
            end
          end
        end
        -- A namespace that moved project may meet a sum key of its new
        -- project for the first time as a duplicate.
        expire(prkey, dayExp)
        expire(clkey, dayExp)
        expire(pckey, dayExp)
      end
    end
  end
  index[#index + 1] = ix
  i = nexti
end
for _, cc in ipairs(clusterOrder) do
  local e = clusterCov[cc]
  local key = pre .. CLUSTERCOV .. SEP .. e.dd
  call('HSET', key, e.c, unite(call('HGET', key, e.c), e.spans))
  expire(key, e.exp)
end
for rk in pairs(ranked) do expire(rk, monthExp) end
if loose then
  call('SET', pre .. LOOSE, '1', 'EXAT', monthExp)
end
for _, x in ipairs(nsOrder) do
  changes[#changes + 1] = x[1]
  changes[#changes + 1] = x[2]
  changes[#changes + 1] = call('GET', x[3]) or ''
end
return {table.concat(verdicts), overflow, changes, table.concat(index)}
