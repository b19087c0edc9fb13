-- cancel.lua is Memory.Cancel on the Redis server: refund every rule's cost
-- (Refund in gcra.go) and remove the request's leases, atomically.
-- KEYS and ARGV as reserve.lua (max_wait and the lease args are unused).
local now, explicit = clock(ARGV[1])
local id, nr = ARGV[3], tonumber(ARGV[4])
for i = 1, nr do
  local T, burst, n, ends = rule_args(i)
  if n <= burst then
    settle_tat(KEYS[i], T, -n, now, explicit, ends)
  end
end
for j = nr + 1, #KEYS do
  redis.call('ZREM', KEYS[j], id)
end
return 0
