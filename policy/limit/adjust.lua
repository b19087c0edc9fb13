-- adjust.lua is Memory.AdjustAt on the Redis server: charge (delta > 0) or
-- refund (delta < 0) units of one bucket or counter.
-- KEYS = {bucket}; ARGV = now, interval, delta, ends.
local now, explicit = clock(ARGV[1])
settle_tat(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now, explicit, tonumber(ARGV[4]))
return 0
