#!lua
-- Begin a unit of work: hold the user under the caller's lease, unless the id was handled
-- before or another unit of work holds the user. The effects in doubt come back either way,
-- so that every message, a duplicate included, can see them.
-- KEYS: handled, lease, waiters, effects, user, session, form, token
-- ARGV: 1 now (microseconds), 2 handled member ('' for none), 3 lease, 4 lease px,
--       5 '1' when this caller waited for the lease, 6 dedupe window (microseconds),
--       7 '1' to read the parts here (a cluster, whose pipelines refuse scripts), else the
--       MGET pipelined after this script reads them (a lease only its holder frees makes that
--       read as good as one inside the script, without moving kilobytes through Lua)
-- Reply: {'ok', fence, effects epoch, doubts[, user, session, form, token]},
--        {'duplicate', 0, effects epoch, doubts} or {'busy', 0, 0, {}, pttl of the holder}.
-- The fence is above every version the user ever had: now (the store's one clock, aligned to
-- the server's TIME) in microseconds, or the stored version + 1 if that is higher (a clock
-- that stepped back). A retried begin of the same lease keeps its fence.
local now = tonumber(ARGV[1])
local _, epoch, count = effects_head(KEYS[4])
local doubts = {}
if count > 0 then
  local fields = redis.call('HGETALL', KEYS[4])
  for i = 2, #fields, 2 do
    if string.sub(fields[i], 1, 1) == '?' then doubts[#doubts + 1] = fields[i] end
  end
end
if ARGV[2] ~= '' then
  local fence = redis.pcall('ZSCORE', KEYS[1], ARGV[2])
  if not wrong_type(fence) and fence and tonumber(fence) > now - tonumber(ARGV[6]) then
    return {'duplicate', 0, epoch, doubts}
  end
end
local holder = get(KEYS[2])
if holder == '!' then
  redis.call('DEL', KEYS[2])  -- not a lease: damaged, nobody holds the user
  holder = false
end
local mine = ARGV[3] .. ':'
local fence
if holder and string.sub(holder, 1, #mine) == mine then
  fence = tonumber(string.sub(holder, #mine + 1))
elseif holder then
  redis.set_repl(redis.REPL_NONE)
  if wrong_type(redis.pcall('INCR', KEYS[3])) then redis.call('SET', KEYS[3], 1) end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return {'busy', 0, 0, {}, redis.call('PTTL', KEYS[2])}
else
  fence = math.max(now, version_of(KEYS[5]) + 1)
end
-- The lease is not replicated (a lease lost in a failover only lets another unit of work
-- begin; the holder's commit then finds it gone and stores nothing); its release is, so
-- that an AOF rewrite that caught a lease never brings it back after a restart.
redis.set_repl(redis.REPL_NONE)
redis.call('SET', KEYS[2], mine .. string.format('%.0f', fence), 'PX', ARGV[4])
if ARGV[5] == '1' then
  local waiting = redis.pcall('DECR', KEYS[3])
  if wrong_type(waiting) or waiting <= 0 then redis.call('DEL', KEYS[3]) end
end
redis.set_repl(redis.REPL_ALL)
if ARGV[7] == '1' then
  return {'ok', fence, epoch, doubts, get(KEYS[5]), get(KEYS[6]), get(KEYS[7]), get(KEYS[8])}
end
return {'ok', fence, epoch, doubts}
