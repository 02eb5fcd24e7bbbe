#!lua flags=allow-oom
-- Free a user held by a message that ended without committing (its handler raised), or,
-- with no lease given, forget the user's conversation (reset): the handled message ids and
-- effect records stay, so a redelivery is still known, and a message in flight can no longer
-- commit (its lease is gone). Either way the longest waiting message, if any, is woken.
-- It runs on a server over maxmemory (allow-oom): it deletes, and the wake-up it may write
-- lives a second; refused, the user would wait for a lease that lapses 35 s later.
-- KEYS: lease, waiters, wake, user, session, form
-- ARGV: 1 lease ('' to reset)
-- Keys of the wrong type: see prelude.lua.
if ARGV[1] == '' then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
else
  local holder = redis.pcall('GET', KEYS[1])
  if wrong_type(holder) or holder ~= ARGV[1] then return 0 end
end
-- The lease and its waiters are neither persisted nor replicated (see save.lua).
redis.set_repl(redis.REPL_NONE)
redis.call('DEL', KEYS[1])
local waiting = redis.pcall('GET', KEYS[2])
if not wrong_type(waiting) and (tonumber(waiting) or 0) > 0 then
  redis.call('RPUSH', KEYS[3], 1)
  redis.call('PEXPIRE', KEYS[3], 1000)
end
return 1
