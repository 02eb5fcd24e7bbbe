-- Read one user's conversation and slide its deadlines, in one round trip.
-- KEYS: user, session, form, handled
-- ARGV: 1 now (16-digit microseconds), 2 touch ('1' or '0'), 3 state timeout us,
--       4 session timeout us, 5 state px, 6 session px, 7 message member ('' for none)
-- The user and session values start with their last-seen time (16 digits), so sliding it
-- is a SETRANGE of 16 bytes, not a rewrite of the document. Only a live part slides, and
-- never backwards: reviving an expired part would hide the expiry that the domain decides.
local now = tonumber(ARGV[1])
local user = redis.call('GET', KEYS[1])
local session = redis.call('GET', KEYS[2])
local form = redis.call('GET', KEYS[3])
local touched = 0
local function touch(key, value, timeout, px, flag)
  local seen = tonumber(string.sub(value, 1, 16))
  if seen and now > seen and now - seen <= tonumber(timeout) then
    redis.call('SETRANGE', key, 0, ARGV[1])
    redis.call('PEXPIRE', key, px)
    touched = touched + flag
  end
end
if ARGV[2] == '1' then
  if user then touch(KEYS[1], user, ARGV[3], ARGV[5], 1) end
  if session then touch(KEYS[2], session, ARGV[4], ARGV[6], 2) end
end
local duplicate = 0
if ARGV[7] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[4], ARGV[7])
  if expiry and tonumber(expiry) > now then
    duplicate = 1
  end
end
return {user, session, form, touched, duplicate}
