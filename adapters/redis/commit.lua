#!lua
-- Commit a unit of work, in one round trip: while the caller's lease still holds the user,
-- write every changed part of the conversation and the token, record the unit's id as
-- handled with its fence, and free the user. The lease is checked first: a caller that no
-- longer holds it stores nothing, and is told "applied" only if this very commit was applied
-- before (a retry after a lost reply: its id is recorded with its fence, and fences never
-- repeat).
-- KEYS: user, session, form, handled, lease, waiters, wake, token, effects, expiry index
-- ARGV: 1 the numbers, a MessagePack array: fence, user px, session px, form px, handled px,
--       token px, write (0: the token alone), critical as stored (0/1), form as stored
--       (0/1), most ids kept, user px slack, handled px slack, effects epoch as begun,
--       the session's deadline (us), the oldest index entry kept (us), the index step (us);
--       2 last-seen, the form's deadline and the last inbound message (16 digits each),
--       3 handled member, 4 critical JSON ('' when as stored), 5 session value, 6 form JSON
--       ('' deletes the form, or: as stored), 7 holder (lease:fence), 8 token ('' keeps it,
--       '-' deletes it, else the sealed token), 9 the phone's digits
-- Reply: {'ok', fence}, {'applied', fence} (done before) or {'lease_lost'}.
-- The user value is last-seen, version, the form's deadline, the effect records' epoch and
-- the last inbound message (16 digits each), then the JSON. The version is the fence. A part
-- the commit did not change is not rewritten: the user value gets its new header (an 80-byte
-- SETRANGE) and TTL, the form is left alone. That keeps the AOF, and the replication stream,
-- to what changed.
-- The epoch says which effect records guard this conversation: the records as begun, or
-- ones this unit of work started itself when there were none; a later read that finds
-- other records (or none) knows they were evicted (layout.py: guards_lost).
-- The expiry index (in the user's hash slot) gets an entry for the session and for the
-- form no later than their deadlines (a hint: claim.lua checks it against the conversation).
-- The session's entry follows its deadline in steps, so that an active member's entry costs
-- a write a step, not a message, and is never due while they write; an entry left early
-- (the session slid on a read) is put back by whoever claims it. A form that is gone loses
-- its entry.
-- Keys of the wrong type: see prelude.lua.
local n = cmsgpack.unpack(ARGV[1])
local fence, user_px, session_px, form_px, handled_px = n[1], n[2], n[3], n[4], n[5]
local token_px, write, critical_as_stored, form_as_stored = n[6], n[7] == 1, n[8] == 1, n[9] == 1
local limit, user_slack, handled_slack, begun_effects = n[10], n[11], n[12], n[13]
local session_deadline, oldest_entry, index_step = n[14], n[15], n[16]
local member, token, digits = ARGV[3], ARGV[8], ARGV[9]

local holder = redis.pcall('GET', KEYS[5])
if wrong_type(holder) or holder ~= ARGV[7] then
  local recorded = redis.pcall('ZSCORE', KEYS[4], member)
  if not wrong_type(recorded) and recorded and tonumber(recorded) == fence then
    return {'applied', fence}
  end
  return {'lease_lost'}
end

if write then
  local epoch = begun_effects
  if epoch == 0 then
    local _, current = effects_head(KEYS[9])
    epoch = current
  end
  local header = string.sub(ARGV[2], 1, 16) .. string.format('%016.0f', fence)
    .. string.sub(ARGV[2], 17, 32) .. string.format('%016.0f', epoch)
    .. string.sub(ARGV[2], 33, 48)
  if critical_as_stored then
    if redis.call('SETRANGE', KEYS[1], 0, header) == #header then
      redis.call('DEL', KEYS[1])  -- it was gone (evicted) since begin: lost, as evicted
    else
      keep(KEYS[1], user_px, user_slack)
    end
  else
    redis.call('SET', KEYS[1], header .. ARGV[4], 'PX', user_px + user_slack)
  end
  redis.call('SET', KEYS[2], ARGV[5], 'PX', session_px)
  if not form_as_stored then
    if ARGV[6] == '' then
      redis.call('DEL', KEYS[3])
    else
      redis.call('SET', KEYS[3], ARGV[6], 'PX', form_px)
    end
  end
  -- The records outlive the critical data that names them (in doubt, they never expire).
  if redis.call('PTTL', KEYS[9]) >= 0 then keep(KEYS[9], user_px + user_slack, user_slack) end
  local index = KEYS[10]
  local entry = redis.pcall('ZSCORE', index, 's:' .. digits)
  if wrong_type(entry) then
    redis.call('DEL', index)  -- not a sorted set: damaged, start it afresh
    entry = false
  end
  if not entry or tonumber(entry) < session_deadline - index_step then
    redis.call('ZADD', index, session_deadline, 's:' .. digits)
  end
  local form_deadline = tonumber(string.sub(ARGV[2], 17, 32))
  if form_deadline > 0 then
    redis.call('ZADD', index, 'LT', form_deadline, 'f:' .. digits)
  else
    redis.call('ZREM', index, 'f:' .. digits)
  end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. oldest_entry)
  keep(index, handled_px, handled_slack)  -- its entries live at most dedupe_ttl
end

-- The handled ids: the newest ``limit`` commits. Room is made before this id is added, so
-- that it is always kept, and the set never outgrows Redis's compact encoding.
local count = redis.pcall('ZCARD', KEYS[4])
if wrong_type(count) then
  redis.call('DEL', KEYS[4])  -- not a sorted set: damaged, start it afresh
  count = 0
end
if count >= limit then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, count - limit) end
redis.call('ZADD', KEYS[4], fence, member)
keep(KEYS[4], handled_px, handled_slack)

if token == '-' then
  redis.call('DEL', KEYS[8])
elseif token ~= '' then
  redis.call('SET', KEYS[8], token, 'PX', token_px)
end
redis.call('DEL', KEYS[5])  -- replicated (see begin.lua)
wake(KEYS[6], KEYS[7])
return {'ok', fence}
