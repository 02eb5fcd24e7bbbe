-- Read one user's conversation and slide its deadlines, in one round trip.
-- KEYS: user, session, form, handled
-- ARGV: 1 now (16-digit microseconds), 2 touch ('1' or '0'), 3 state timeout us,
--       4 session timeout us, 5 state step us, 6 session step us, 7 state px,
--       8 session px, 9 message member ('' for none)
-- The user and session values start with their last-seen time (16 digits), so sliding it
-- is a SETRANGE of 16 bytes, not a rewrite of the document. Only a live part slides (reviving
-- an expired one would hide the expiry that the domain decides), never backwards, and only
-- once it is a step old (domain/timeouts.py: slide_step), so most reads write nothing.
local now = tonumber(ARGV[1])
local user = redis.call('GET', KEYS[1])
local session = redis.call('GET', KEYS[2])
local form = redis.call('GET', KEYS[3])
local touched = 0
local function touch(key, value, timeout, step, px, flag)
  local seen = tonumber(string.sub(value, 1, 16))
  local age = seen and now - seen
  if age and age >= tonumber(step) and age <= tonumber(timeout) then
    redis.call('SETRANGE', key, 0, ARGV[1])
    redis.call('PEXPIRE', key, px)
    touched = touched + flag
  end
end
if ARGV[2] == '1' then
  if user then touch(KEYS[1], user, ARGV[3], ARGV[5], ARGV[7], 1) end
  if session then touch(KEYS[2], session, ARGV[4], ARGV[6], ARGV[8], 2) end
end
local duplicate = 0
if ARGV[9] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[4], ARGV[9])
  if expiry and tonumber(expiry) > now then
    duplicate = 1
  end
end
return {user, session, form, touched, duplicate}
