#!lua
-- Begin a unit of work: hold the user under the caller's lease, unless the id was handled
-- before or another unit of work holds the user. The effects in doubt come back either way,
-- so that every message, a duplicate included, can see them.
-- KEYS: handled, lease, waiters, effects, wake, then (a cluster, whose pipelines refuse
--       scripts) user, session, form, token to read here; else the MGET pipelined after
--       this script reads them (a lease only its holder frees makes that read as good as
--       one inside the script, without moving kilobytes through Lua)
-- ARGV: 1 handled member ('' for none), 2 lease, 3 lease px, 4 the oldest fence a duplicate
--       may have (now - the dedupe window, us), 5 '1' when this caller waited for the lease
--       (left out when it did not)
-- Reply: {'ok', effects epoch, doubts[, user, session, form, token]},
--        {'duplicate', effects epoch, doubts} or {'busy', 0, {}, pttl of the holder}.
-- The fence (above every version the user ever had: now, or the stored version + 1) is the
-- caller's to work out from the user value it reads after this: no commit can change that
-- value while the caller holds the user.
-- Every argument stays text: a Lua number passed to Redis is formatted with printf.
local function stop_waiting()
  local waiting = redis.pcall('DECR', KEYS[3])
  if wrong_type(waiting) or waiting <= 0 then redis.call('DEL', KEYS[3]) end
end
local _, epoch, count = effects_head(KEYS[4])
local doubts = {}
if count > 0 then
  local fields = redis.call('HGETALL', KEYS[4])
  for i = 2, #fields, 2 do
    if string.sub(fields[i], 1, 1) == '?' then doubts[#doubts + 1] = fields[i] end
  end
end
if ARGV[1] ~= '' then
  local score = redis.pcall('ZSCORE', KEYS[1], ARGV[1])
  if not wrong_type(score) and score and tonumber(score) > tonumber(ARGV[4]) then
    if ARGV[5] == '1' then
      -- The wake that ended this caller's wait was one commit's only one: pass it on to the
      -- next waiter (another delivery of this message, or the user's next message) while
      -- nobody holds the user, or that one sleeps out its whole wait.
      redis.set_repl(redis.REPL_NONE)
      stop_waiting()
      redis.set_repl(redis.REPL_ALL)
      if not get(KEYS[2]) then wake(KEYS[3], KEYS[5]) end
    end
    return {'duplicate', epoch, doubts}
  end
end
-- The lease is not replicated (a lease lost in a failover only lets another unit of work
-- begin; the holder's commit then finds it gone and stores nothing); its release is, so
-- that an AOF rewrite that caught a lease never brings it back after a restart.
redis.set_repl(redis.REPL_NONE)
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  local holder = redis.pcall('GET', KEYS[2])
  if not wrong_type(holder) and holder ~= ARGV[2] then
    if wrong_type(redis.pcall('INCR', KEYS[3])) then redis.call('SET', KEYS[3], 1) end
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
    return {'busy', 0, {}, redis.call('PTTL', KEYS[2])}
  end
  -- This caller's own begin, sent again after a lost reply; or not a lease (damaged): nobody
  -- holds the user.
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
if ARGV[5] == '1' then stop_waiting() end
redis.set_repl(redis.REPL_ALL)
if KEYS[6] then
  return {'ok', epoch, doubts, get(KEYS[6]), get(KEYS[7]), get(KEYS[8]), get(KEYS[9])}
end
return {'ok', epoch, doubts}
