#!lua
-- Read one user's conversation and, with touch, slide its deadlines, in one round trip.
-- KEYS: user, session, form, effects
-- ARGV: 1 now (16-digit microseconds), 2 touch ('1' or '0'), 3 state timeout us,
--       4 session timeout us, 5 state step us, 6 session step us, 7 state px, 8 session px
-- Reply: {user, session, form, touched, effects epoch}; touched: 1 the user slid, 2 the
-- session slid (and with it the user's last-seen).
-- The user and session values start with their last-seen time (16 digits), so sliding it
-- is a SETRANGE of 16 bytes, not a rewrite of the document. Only a live part slides (reviving
-- an expired one would hide the expiry that the domain decides), never backwards, and only
-- once it is a step old (domain/timeouts.py: slide_step), so most reads write nothing. The
-- effect records are kept as long as the user value they guard (see commit.lua).
-- Keys of the wrong type: see prelude.lua (read as damaged; nothing is written for them).
local now = tonumber(ARGV[1])
local user, session, form = get(KEYS[1]), get(KEYS[2]), get(KEYS[3])
local head = redis.pcall('HGET', KEYS[4], '~')
local epoch = 0
if not wrong_type(head) and head then epoch = tonumber(string.sub(head, 1, 16)) or 0 end
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
  if user and user ~= '!' then touch(KEYS[1], user, ARGV[3], ARGV[5], ARGV[7], 1) end
  if session and session ~= '!' then touch(KEYS[2], session, ARGV[4], ARGV[6], ARGV[8], 2) end
  if touched >= 2 and touched % 2 == 0 and user and user ~= '!' then
    -- The user's last-seen follows the session's, so that when the session times out is
    -- known after its key is gone (expiry.lua); its TTL follows the last-seen.
    redis.call('SETRANGE', KEYS[1], 0, ARGV[1])
    keep(KEYS[1], ARGV[7], 0)
    touched = touched + 1
  end
  if touched % 2 == 1 and redis.call('PTTL', KEYS[4]) >= 0 then
    keep(KEYS[4], ARGV[7], 0)
  end
end
return {user, session, form, touched, epoch}
