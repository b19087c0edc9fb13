-- settle.lua ends a request in one round trip: the same charge or refund on
-- each rule (as adjust.lua), then its lease removed from each lease set.
-- KEYS = rule keys (nrules of them), then lease keys;
-- ARGV = now, nrules, delta, lease_id, interval of each rule.
local now, explicit = clock(ARGV[1])
local nrules, delta, id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if delta ~= 0 then
  for i = 1, nrules do
    local T = tonumber(ARGV[4 + i])
    if T > 0 then
      settle_tat(KEYS[i], T, delta, now, explicit)
    end
  end
end
for j = nrules + 1, #KEYS do
  redis.call('ZREM', KEYS[j], id)
end
return 0
