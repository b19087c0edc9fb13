-- settle.lua ends a request in one round trip: each rule charged or
-- refunded by its own delta (as adjust.lua), then its lease removed from
-- each lease set.
-- KEYS = rule keys (nrules of them), then lease keys;
-- ARGV = now, nrules, lease_id, then interval, delta, ends per rule.
local now, explicit = clock(ARGV[1])
local nrules, id = tonumber(ARGV[2]), ARGV[3]
for i = 1, nrules do
  local a = 3 + 3 * (i - 1)
  settle_tat(KEYS[i], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), now, explicit, tonumber(ARGV[a + 3]))
end
for j = nrules + 1, #KEYS do
  redis.call('ZREM', KEYS[j], id)
end
return 0
