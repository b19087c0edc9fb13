-- reserve.lua is Memory.Reserve on the Redis server: check every rule and
-- lease, then take all or none (a script runs atomically). It mirrors
-- gcra.go (Need, Take, Status, verdict) line for line.
-- Returns {allowed, wait, retry_after, limiting, remaining_1, reset_1, ...}.
local now, explicit = clock(ARGV[1])
local max_wait = tonumber(ARGV[2])
local id = ARGV[3]
local nr = tonumber(ARGV[4])
local nl = #KEYS - nr
local lease_arg = 4 + 4 * nr

-- verdict (gcra.go): indexes are 0-based like Go's.
local never, wait, wait_idx, lease_wait, lease_idx = -1, 0, -1, 0, -1
for i = 1, nr do
  local T, burst, n, ends = rule_args(i)
  if live(T, ends, now) and n > 0 then
    if n > burst then
      if never < 0 then never = i - 1 end
    elseif ends > 0 then
      -- a window counter: its clock stands still at ends
      local need = math.max(get_tat(KEYS[i]), ends) + n * T - burst * T - ends
      if need > 0 and ends - now > lease_wait then lease_wait, lease_idx = ends - now, i - 1 end
    else
      local need = math.max(get_tat(KEYS[i]), now) + n * T - burst * T - now
      if need > wait then wait, wait_idx = need, i - 1 end
    end
  end
end
for j = 1, nl do
  local key, limit = KEYS[nr + j], tonumber(ARGV[lease_arg + 2 * j - 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now)) -- expired: expiry <= now
  local live = redis.call('ZCARD', key)
  if limit == 0 then
    if never < 0 then never = nr + j - 1 end
  elseif live >= limit then
    -- the (live-limit)-th earliest expiry (0-based) frees the first slot
    local e = redis.call('ZRANGE', key, int(live - limit), int(live - limit), 'WITHSCORES')
    local retry = tonumber(e[2]) - now
    if retry > lease_wait then lease_wait, lease_idx = retry, nr + j - 1 end
  end
end

-- decide
local allowed, retry, limiting = 0, 0, -1
local over = wait - max_wait
if never >= 0 then
  retry, limiting = -1, never
elseif over > 0 or lease_wait > 0 then
  if over >= lease_wait then
    retry, limiting = over, wait_idx
  else
    retry, limiting = lease_wait, lease_idx
  end
else
  allowed, limiting = 1, wait_idx
end
if allowed == 0 then wait = 0 end

-- take (when allowed) and report
local at = now + wait
local out = {allowed, wait, retry, limiting}
for i = 1, nr do
  local T, burst, n, ends = rule_args(i)
  if not live(T, ends, now) then
    out[#out + 1] = -1
    out[#out + 1] = 0
  else
    local t = rule_clock(now, ends)
    local tat = get_tat(KEYS[i])
    if allowed == 1 and n > 0 then
      tat = math.max(tat, rule_clock(at, ends)) + n * T
      store_tat(KEYS[i], tat, now, explicit, ends)
    end
    local reset = math.max(tat, t) - t
    local left, remaining = burst * T - reset, 0
    if left > 0 then
      remaining = (left - math.fmod(left, T)) / T -- exact floor(left / T)
    end
    if ends > 0 then reset = ends - now end
    out[#out + 1] = remaining
    out[#out + 1] = reset
  end
end
if allowed == 1 then
  for j = 1, nl do
    local key = KEYS[nr + j]
    redis.call('ZADD', key, int(at + tonumber(ARGV[lease_arg + 2 * j])), id)
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', key, keep_ms(tonumber(last[2]), now, explicit))
  end
end
return out
