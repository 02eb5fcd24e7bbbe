-- Compare-and-set every part of one user's conversation, in one round trip.
-- KEYS: user, session, form, handled
-- ARGV: 1 expected version, 2 op member, 3 message member ('' for none), 4 now us,
--       5 user value, 6 user px, 7 session value, 8 session px,
--       9 form value ('' deletes the form), 10 form px,
--       11 op expiry us, 12 message expiry us, 13 handled px
-- The user value is its last-seen time (16 digits), its version (12 digits) and the JSON;
-- the client writes expected version + 1 there, which is what this script applies.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[4])
-- The op id first: a retry of a write whose reply was lost must not apply it twice.
if redis.call('ZSCORE', KEYS[4], ARGV[2]) then
  return {'applied', tonumber(ARGV[1]) + 1}
end
local version = tonumber(redis.call('GETRANGE', KEYS[1], 16, 27)) or 0
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[4], ARGV[3]) then
  return {'duplicate', version}
end
if version ~= tonumber(ARGV[1]) then
  return {'conflict', version}
end
redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6])
redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[8])
if ARGV[9] == '' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[9], 'PX', ARGV[10])
end
redis.call('ZADD', KEYS[4], ARGV[11], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[12], ARGV[3])
end
-- Only ever extend: a short-lived op id must not cut a message id's longer memory.
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[13]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[13])
end
return {'ok', version + 1}
