-- Compare-and-set every part of one user's conversation, in one round trip.
-- KEYS: user, session, form, handled
-- ARGV: 1 expected version, 2 op member, 3 message member ('' for none), 4 now_us,
--       5 critical json, 6 state_px, 15 critical last seen us, 7 session json, 8 last_seen_us, 9 session_px,
--       10 form json ('' deletes the form), 11 form_px,
--       12 op expiry_us, 13 message expiry_us, 14 handled_px
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[4])
-- The op id first: a retry of a write whose reply was lost must not apply it twice.
if redis.call('ZSCORE', KEYS[4], ARGV[2]) then
  return {'applied', tonumber(ARGV[1]) + 1}
end
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[4], ARGV[3]) then
  return {'duplicate', version}
end
if version ~= tonumber(ARGV[1]) then
  return {'conflict', version}
end
version = version + 1
redis.call('HSET', KEYS[1], 'v', version, 'd', ARGV[5], 't', ARGV[15])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], 'd', ARGV[7], 't', ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[9])
if ARGV[10] == '' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[11])
end
redis.call('ZADD', KEYS[4], ARGV[12], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[13], ARGV[3])
end
-- Only ever extend: a short-lived op id must not cut a message id's longer memory.
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[14]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[14])
end
return {'ok', version}
