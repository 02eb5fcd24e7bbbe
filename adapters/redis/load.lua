-- Read one user's conversation and slide its deadlines, in one round trip.
-- KEYS: user, session, form, handled
-- ARGV: 1 now_us, 2 state_timeout_us, 3 session_timeout_us, 4 state_px, 5 session_px,
--       6 message member ('' for none)
-- The user and session hashes hold 'd' (the document) and 't' (last seen, microseconds).
-- Only a live part is moved to now: reviving an expired one would hide its expiry, which
-- the domain decides from the 't' returned here.
local function touch(key, fields, timeout, px)
  local seen = tonumber(fields[2])
  if fields[1] and seen and tonumber(ARGV[1]) - seen <= tonumber(timeout) then
    redis.call('HSET', key, 't', ARGV[1])
    redis.call('PEXPIRE', key, px)
    fields[2] = ARGV[1]
  end
end
local user = redis.call('HMGET', KEYS[1], 'd', 't', 'v')
local session = redis.call('HMGET', KEYS[2], 'd', 't')
local form = redis.call('GET', KEYS[3])
touch(KEYS[1], user, ARGV[2], ARGV[4])
touch(KEYS[2], session, ARGV[3], ARGV[5])
local duplicate = 0
if ARGV[6] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[4], ARGV[6])
  if expiry and tonumber(expiry) > tonumber(ARGV[1]) then
    duplicate = 1
  end
end
return {user[1], user[2], user[3], session[1], session[2], form, duplicate}
