-- release.lua removes one request's lease from each lease set.
-- KEYS = lease keys; ARGV = {lease_id}.
for j = 1, #KEYS do
  redis.call('ZREM', KEYS[j], ARGV[1])
end
return 0
