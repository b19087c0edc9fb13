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

-- store_tat writes a bucket's TAT with its TTL, or deletes the key when the
-- bucket is full (TAT <= now), which means the same.
local function store_tat(key, tat, now, explicit)
  if tat <= now then
    redis.call('DEL', key)
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
-- ARGV = now, max_wait, lease_id, nr, then interval, burst, cost per rule,
--        then limit, ttl per lease.
local function rule_args(i)
  local a = 4 + 3 * (i - 1)
  return tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
end

-- settle_tat charges (delta > 0) or refunds (delta < 0) delta units of a
-- bucket, as Take and Refund in gcra.go: a refund never fills it past full.
local function settle_tat(key, T, delta, now, explicit)
  local tat = get_tat(key)
  if delta > 0 then
    tat = math.max(tat, now) + delta * T
  elseif tat > now then
    tat = math.max(tat + delta * T, now)
  end
  store_tat(key, tat, now, explicit)
end
