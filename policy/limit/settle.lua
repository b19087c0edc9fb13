-- settle.lua ends a request in one round trip: adjust.lua's charge or refund
-- of the same delta on each rule, then release.lua on each lease set.
-- KEYS = rule keys (nrules of them), then lease keys;
-- ARGV = now, nrules, delta, lease_id, interval of each rule.
local now, explicit = clock(ARGV[1])
local nrules, delta, id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for i = 1, nrules do
  local T = tonumber(ARGV[4 + i])
  if T > 0 and delta ~= 0 then
    local tat = get_tat(KEYS[i])
    if delta > 0 then
      tat = math.max(tat, now) + delta * T
    elseif tat > now then
      tat = math.max(tat + delta * T, now)
    end
    store_tat(KEYS[i], tat, now, explicit)
  end
end
for j = nrules + 1, #KEYS do
  redis.call('ZREM', KEYS[j], id)
end
return 0
