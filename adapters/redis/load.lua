#!lua
-- Read one user's conversation and slide its deadlines, in one round trip; with a lease,
-- also hold the user for one message (and read the token with the conversation).
-- KEYS: user, session, form, handled, lease, waiters, token
-- ARGV: 1 now (16-digit microseconds), 2 touch ('1' or '0'), 3 state timeout us,
--       4 session timeout us, 5 state step us, 6 session step us, 7 state px,
--       8 session px, 9 message member ('' for none), 10 lease ('' for none), 11 lease px,
--       12 '1' when this message waited for the lease
-- Reply: {status, user, session, form, touched, token, busy pttl}; status is 'ok',
-- 'duplicate' (the message id was handled) or 'busy' (another message holds the user).
-- The user and session values start with their last-seen time (16 digits), so sliding it
-- is a SETRANGE of 16 bytes, not a rewrite of the document. Only a live part slides (reviving
-- an expired one would hide the expiry that the domain decides), never backwards, and only
-- once it is a step old (domain/timeouts.py: slide_step), so most reads write nothing.
-- Keys of the wrong type: see prelude.lua.
local now = tonumber(ARGV[1])
-- A value of the wrong type comes back as '!', which the client reads as damaged.
local function get(key)
  local value = redis.pcall('GET', key)
  if wrong_type(value) then return '!' end
  return value
end
local duplicate = false
if ARGV[9] ~= '' then
  local expiry = redis.pcall('ZSCORE', KEYS[4], ARGV[9])
  duplicate = not wrong_type(expiry) and expiry and tonumber(expiry) > now or false
end
if ARGV[10] ~= '' then
  if duplicate then return {'duplicate'} end
  -- The lease and its waiters are neither persisted nor replicated (see save.lua).
  redis.set_repl(redis.REPL_NONE)
  local holder = get(KEYS[5])
  if holder == '!' then
    redis.call('DEL', KEYS[5])  -- not a lease: damaged, nobody holds the user
    holder = false
  end
  if holder and holder ~= ARGV[10] then
    if wrong_type(redis.pcall('INCR', KEYS[6])) then redis.call('SET', KEYS[6], 1) end
    redis.call('PEXPIRE', KEYS[6], ARGV[11])
    return {'busy', false, false, false, 0, false, redis.call('PTTL', KEYS[5])}
  end
  redis.call('SET', KEYS[5], ARGV[10], 'PX', ARGV[11])
  if ARGV[12] == '1' then
    local waiting = redis.pcall('DECR', KEYS[6])
    if wrong_type(waiting) or waiting <= 0 then redis.call('DEL', KEYS[6]) end
  end
  redis.set_repl(redis.REPL_ALL)
end
local user = get(KEYS[1])
local session = get(KEYS[2])
local form = get(KEYS[3])
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
local token = false
if ARGV[10] ~= '' then token = get(KEYS[7]) end
return {duplicate and 'duplicate' or 'ok', user, session, form, touched, token, 0}
