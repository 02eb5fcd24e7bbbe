-- Read one user's conversation and slide its TTLs, in one round trip.
-- KEYS: user, session, form, handled
-- ARGV: now_us, session_timeout_us, state_px, session_px, message member ('' for none)
local user = redis.call('HMGET', KEYS[1], 'v', 'd')
local session = redis.call('HMGET', KEYS[2], 'd', 't')
local form = redis.call('GET', KEYS[3])
if user[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
-- Only a live session is moved to now: reviving an expired one would hide its expiry.
local seen = tonumber(session[2])
if session[1] and seen and tonumber(ARGV[1]) - seen <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], 't', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  session[2] = ARGV[1]
end
local duplicate = 0
if ARGV[5] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[4], ARGV[5])
  if expiry and tonumber(expiry) > tonumber(ARGV[1]) then
    duplicate = 1
  end
end
return {user[1], user[2], session[1], session[2], form, duplicate}
