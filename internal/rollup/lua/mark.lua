-- markScript (scripts.go): applied stream sequences as merged ranges
-- "first-last" in KEYS[1], scored by first.
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
