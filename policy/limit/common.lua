-- common.lua is prepended to every script of the Redis store. Values are
-- integer µs unless named _ms. Lua numbers are doubles; every value these
-- scripts form stays below 2^53 (see MaxSpan in limit.go), so the arithmetic
-- is exact. Integers go back to Redis through int(), never tostring() (which
-- keeps 14 significant digits) nor a bare number (which Redis may render in
-- exponent form).
local function int(x)
  return string.format('%.0f', x)
end

-- clock returns the request's time (ARGV, µs) and true, or, when that is 0,
-- the Redis server's clock from TIME and false.
local function clock(arg)
  local now = tonumber(arg)
  if now ~= 0 then
    return now, true
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), false
end

-- keep_ms is the TTL (ms) for a key whose state runs out at ends (µs): until
-- then plus a 1 s margin. With an explicit (test) clock, simulated time need
-- not follow the server's, so such keys live at least 60 s of real time.
local function keep_ms(ends, now, explicit)
  local ms = math.ceil((ends - now) / 1000) + 1000
  if explicit and ms < 60000 then
    ms = 60000
  end
  return int(ms)
end

-- rule_clock is the time a rule's math runs at (clockAt in limit.go): now
-- for a bucket, the window's end for a counter (ends > 0).
local function rule_clock(now, ends)
  if ends > 0 then
    return ends
  end
  return now
end

-- store_tat writes a bucket's TAT with its TTL, or deletes the key when the
-- bucket is full (TAT <= its clock), which means the same. A counter's key
-- lives until its window ends.
local function store_tat(key, tat, now, explicit, ends)
  if tat <= rule_clock(now, ends) then
    redis.call('DEL', key)
  elseif ends > 0 then
    redis.call('SET', key, int(tat), 'PX', keep_ms(ends, now, explicit))
  else
    redis.call('SET', key, int(tat), 'PX', keep_ms(tat, now, explicit))
  end
end

-- get_tat reads a bucket's TAT; an absent key reads as 0 (full).
local function get_tat(key)
  return tonumber(redis.call('GET', key) or '0')
end

-- The arguments of reserve.lua and cancel.lua:
-- KEYS = nr bucket keys, then the lease keys.
-- ARGV = now, max_wait, lease_id, nr, then interval, burst, cost, ends per
--        rule, then limit, ttl per lease.
local function rule_args(i)
  local a = 4 + 4 * (i - 1)
  return tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
end

-- live is Rule.live in limit.go: enabled, and not a counter whose window
-- has ended.
local function live(T, ends, now)
  return T > 0 and (ends == 0 or ends > now)
end

-- settle_tat charges (delta > 0) or refunds (delta < 0) delta units of a
-- bucket, as Take and Refund in gcra.go (shard.settle in memory.go): a
-- refund never fills it past full; a counter whose window ended is left.
local function settle_tat(key, T, delta, now, explicit, ends)
  if delta == 0 or not live(T, ends, now) then
    return
  end
  local t = rule_clock(now, ends)
  local tat = get_tat(key)
  if delta > 0 then
    tat = math.max(tat, t) + delta * T
  elseif tat > t then
    tat = math.max(tat + delta * T, t)
  end
  store_tat(key, tat, now, explicit, ends)
end
