#!lua
-- Commit a unit of work, in one round trip: while the caller's lease still holds the user,
-- write every changed part of the conversation and the token, record the unit's id as
-- handled with its fence, and free the user. The lease is checked first: a caller that no
-- longer holds it stores nothing, and is told "applied" only if this very commit was applied
-- before (a retry after a lost reply: its id is recorded with its fence, and fences never
-- repeat).
-- KEYS: lease, handled, waiters, wake, user, session, form, effects, expiry index, then
--       the token (only when the commit changes it)
-- ARGV: 1 lease, 2 fence (the id's score), 3 handled member,
--       4 the plan, one letter a part: the user value ('h' its header, 's' all of it, '-'
--         nothing: a commit of the token alone), the form ('s' set, 'd' delete, '=' as
--         stored), the effect records ('e' kept as long as the user value, '-' none: the
--         caller knows every record its unit of work began with, started or settled), the
--         form's index entry ('f' added, 'r' removed, '-' as it is),
--       5 handled px, 6 the user value, or its 80-byte header alone, 7 user px,
--       8 session value, 9 session px, 10 form value, 11 form px, 12 the session's
--       deadline (us), 13 the score below which the session's index entry is moved to that
--       deadline, 14 the oldest index entry kept (us), then only when the token changes:
--       15 the token ('-' deletes it, else the sealed token), 16 its px. The form's deadline
--       is the user value's (its header, 33-48), the phone's digits its key's.
-- Reply: {'ok'}, {'applied'} (done before) or {'lease_lost'}.
-- The user value is last-seen, version (the fence), the form's deadline, the effect records'
-- epoch and the last inbound message (16 digits each), then the JSON. A part the commit did
-- not change is not rewritten: the user value gets its new header (an 80-byte SETRANGE) and
-- TTL, the form is left alone. That keeps the AOF, and the replication stream, to what
-- changed.
-- The expiry index (in the user's hash slot) gets an entry for the session and for the
-- form no later than their deadlines (a hint: claim.lua checks it against the conversation).
-- The session's entry follows its deadline in steps, so that an active member's entry costs
-- a write a step, not a message, and is never due while they write; an entry left early
-- (the session slid on a read) is put back by whoever claims it. Entries older than the
-- dedupe window go whenever an entry is written, so that the index stays bounded with nobody
-- polling it. A form that is gone loses its entry.
-- Every argument stays text: a Lua number passed to Redis is formatted with printf.
-- Keys of the wrong type: see prelude.lua.
local plan = ARGV[4]
local holder = redis.pcall('GET', KEYS[1])
if wrong_type(holder) or holder ~= ARGV[1] then
  local recorded = redis.pcall('ZSCORE', KEYS[2], ARGV[3])
  if not wrong_type(recorded) and recorded and tonumber(recorded) == tonumber(ARGV[2]) then
    return {'applied'}
  end
  return {'lease_lost'}
end

local write = string.sub(plan, 1, 1)
if write ~= '-' then
  if write == 'h' then
    if redis.call('SETRANGE', KEYS[5], 0, ARGV[6]) == #ARGV[6] then
      redis.call('DEL', KEYS[5])  -- it was gone (evicted) since begin: lost, as evicted
    else
      keep(KEYS[5], ARGV[7])
    end
  else
    redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[7] + slide_step(ARGV[7]))
  end
  redis.call('SET', KEYS[6], ARGV[8], 'PX', ARGV[9])
  local form = string.sub(plan, 2, 2)
  if form == 's' then
    redis.call('SET', KEYS[7], ARGV[10], 'PX', ARGV[11])
  elseif form == 'd' then
    redis.call('DEL', KEYS[7])
  end
  -- The records outlive the critical data that names them (in doubt, they never expire).
  if string.sub(plan, 3, 3) == 'e' and redis.call('PTTL', KEYS[8]) >= 0 then
    keep(KEYS[8], ARGV[7])
  end
  local digits = string.sub(KEYS[5], 7, -8)  -- user:{digits}:state
  local index, session = KEYS[9], 's:' .. digits
  local entry = redis.pcall('ZSCORE', index, session)
  if wrong_type(entry) then
    redis.call('DEL', index)  -- not a sorted set: damaged, start it afresh
    entry = false
  end
  local moved = not entry or tonumber(entry) < tonumber(ARGV[13])
  if moved then redis.call('ZADD', index, ARGV[12], session) end
  local form_entry = string.sub(plan, 4, 4)
  -- A form carried over has its entry already, unless the index lost the user's entries
  -- (evicted, as the session's shows): then it goes back with the session's.
  if form_entry == 'f' or (form_entry == '-' and not entry) then
    form_entry = 'f'
    redis.call('ZADD', index, 'LT', string.sub(ARGV[6], 33, 48), 'f:' .. digits)
  elseif form_entry == 'r' then
    redis.call('ZREM', index, 'f:' .. digits)
  end
  if moved or form_entry == 'f' then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[14])
    keep(index, ARGV[5])  -- its entries live at most dedupe_ttl
  end
end

-- The handled ids: the newest MAX_HANDLED_IDS commits. Room is made before this id is added, so
-- that it is always kept, and the set never outgrows Redis's compact encoding.
if wrong_type(redis.pcall('ZREMRANGEBYRANK', KEYS[2], 0, TRIM_HANDLED)) then
  redis.call('DEL', KEYS[2])  -- not a sorted set: damaged, start it afresh
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
keep(KEYS[2], ARGV[5])

local token = ARGV[15]
if token == '-' then
  redis.call('DEL', KEYS[10])
elseif token then
  redis.call('SET', KEYS[10], token, 'PX', ARGV[16])
end
redis.call('DEL', KEYS[1])  -- replicated (see begin.lua)
wake(KEYS[3], KEYS[4])
return {'ok'}
