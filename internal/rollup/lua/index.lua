-- indexScript (scripts.go): entity-days into a month's indexes. The key
-- layout comes from Go (keys.go), filled in when the script is built.
local SEP = {{lua .Sep}}
local INDEX, MASKS, VERSION, NAMES = {{lua .Index}}, {{lua .Masks}}, {{lua .Version}}, {{lua .Names}}

local pre, monthExp = ARGV[1], ARGV[2]
local bumped, expired = {}, {}
for i = 3, #ARGV, 5 do
  local scope, dd, dayExp, member, nn = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local ix = pre .. INDEX .. SEP .. dd .. SEP .. scope
  if redis.call('ZADD', ix, 0, member) == 1 then
    if not expired[ix] then
      expired[ix] = true
      redis.call('EXPIREAT', ix, dayExp)
    end
    local pm = pre .. MASKS .. SEP .. scope
    local m = tonumber(redis.call('HGET', pm, member) or '0')
    local b = bit.lshift(1, tonumber(dd) - 1)
    if bit.band(m, b) == 0 then
      redis.call('HSET', pm, member, bit.bor(m, b))
      bumped[scope] = true
      if m == 0 then
        local mix = pre .. INDEX .. SEP .. scope
        redis.call('ZADD', mix, 0, member)
        if not expired[mix] then
          expired[mix] = true
          redis.call('EXPIREAT', mix, monthExp)
          redis.call('EXPIREAT', pm, monthExp)
        end
        if nn ~= '' then
          redis.call('ZADD', pre .. NAMES, 0, nn)
          if not expired[NAMES] then
            expired[NAMES] = true
            redis.call('EXPIREAT', pre .. NAMES, monthExp)
          end
        end
      end
    end
  end
end
for scope in pairs(bumped) do
  redis.call('INCR', pre .. VERSION .. SEP .. scope)
  redis.call('EXPIREAT', pre .. VERSION .. SEP .. scope, monthExp)
end
return 1
