-- adjust.lua is Memory.AdjustAt on the Redis server: charge (delta > 0) or
-- refund (delta < 0) units of one bucket, as Take and Refund in gcra.go.
-- KEYS = {bucket}; ARGV = now, interval, delta.
local now, explicit = clock(ARGV[1])
local T, delta = tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = get_tat(KEYS[1])
if delta > 0 then
  tat = math.max(tat, now) + delta * T
elseif tat > now then
  tat = math.max(tat + delta * T, now)
end
store_tat(KEYS[1], tat, now, explicit)
return 0
