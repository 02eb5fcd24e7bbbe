#!lua
-- Begin one message: hold the user under this message's lease, unless the message was
-- handled before or another message holds the user. The conversation itself is read by the
-- MGET pipelined after this script (a lease only its holder's commit or release frees makes
-- that read as good as one inside the script, without moving kilobytes through Lua).
-- KEYS: handled, lease, waiters
-- ARGV: 1 now (microseconds), 2 message member, 3 lease, 4 lease px, 5 '1' when this
--       message waited for the lease
-- Reply: {'ok'}, {'duplicate'} or {'busy', pttl of the holder's lease}.
-- The lease and its waiters are neither persisted nor replicated (see save.lua).
local expiry = redis.pcall('ZSCORE', KEYS[1], ARGV[2])
if not wrong_type(expiry) and expiry and tonumber(expiry) > tonumber(ARGV[1]) then
  return {'duplicate'}
end
redis.set_repl(redis.REPL_NONE)
local holder = redis.pcall('GET', KEYS[2])
if wrong_type(holder) then
  redis.call('DEL', KEYS[2])  -- not a lease: damaged, nobody holds the user
  holder = false
end
if holder and holder ~= ARGV[3] then
  if wrong_type(redis.pcall('INCR', KEYS[3])) then redis.call('SET', KEYS[3], 1) end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return {'busy', redis.call('PTTL', KEYS[2])}
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if ARGV[5] == '1' then
  local waiting = redis.pcall('DECR', KEYS[3])
  if wrong_type(waiting) or waiting <= 0 then redis.call('DEL', KEYS[3]) end
end
return {'ok'}
