#!lua
-- Commit a unit of work, in one round trip: while the caller's lease still holds the user,
-- write every changed part of the conversation and the token, record the unit's id as
-- handled with its fence, and free the user. The lease is checked first: a caller that no
-- longer holds it stores nothing, and is told "applied" only if this very commit was applied
-- before (a retry after a lost reply: its id is recorded with its fence, and fences never
-- repeat).
-- KEYS: lease, handled, waiters, wake, user, session, form, token, effects, expiry index
-- ARGV: 1 lease, 2 fence (the id's score), 3 handled member,
--       4 the plan, one letter a part: the user value ('h' its header, 's' all of it, '-'
--         nothing: a commit of the token alone), the form ('s' set, 'd' delete, '=' as
--         stored), the effect records ('e' named in the header and kept as long as the
--         user value, '-' none known to the caller: the script looks), the
--         form's index entry ('f' added, 'r' removed, '-' as it is),
--       5 -(most ids kept), 6 handled px, 7 handled slack ms,
--       8 the user value, or its 80-byte header alone; 9 user px, 10 user slack ms,
--       11 session value, 12 session px, 13 form value, 14 form px,
--       15 token ('' keeps it, '-' deletes it, else the sealed token), 16 token px,
--       17 the phone's digits, 18 the session's deadline (us), 19 the score below which the
--       session's index entry is moved to that deadline, 20 the form's deadline (us),
--       21 the oldest index entry kept (us)
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
  local stored = true
  if write == 'h' then
    if redis.call('SETRANGE', KEYS[5], 0, ARGV[8]) == #ARGV[8] then
      redis.call('DEL', KEYS[5])  -- it was gone (evicted) since begin: lost, as evicted
      stored = false
    else
      keep(KEYS[5], ARGV[9], ARGV[10])
    end
  else
    redis.call('SET', KEYS[5], ARGV[8], 'PX', ARGV[9] + ARGV[10])
  end
  redis.call('SET', KEYS[6], ARGV[11], 'PX', ARGV[12])
  local form = string.sub(plan, 2, 2)
  if form == 's' then
    redis.call('SET', KEYS[7], ARGV[13], 'PX', ARGV[14])
  elseif form == 'd' then
    redis.call('DEL', KEYS[7])
  end
  local records = string.sub(plan, 3, 3) == 'e'
  if not records then
    -- Records this unit of work neither began with nor started (a settle made them, or an
    -- earlier holder's late finish): the critical data names them all the same.
    local _, epoch = effects_head(KEYS[9])
    records = epoch ~= 0
    if records and stored then
      redis.call('SETRANGE', KEYS[5], 48, string.format('%016.0f', epoch))
    end
  end
  -- The records outlive the critical data that names them (in doubt, they never expire).
  if records and redis.call('PTTL', KEYS[9]) >= 0 then keep(KEYS[9], ARGV[9], ARGV[10]) end
  local index, session = KEYS[10], 's:' .. ARGV[17]
  local entry = redis.pcall('ZSCORE', index, session)
  if wrong_type(entry) then
    redis.call('DEL', index)  -- not a sorted set: damaged, start it afresh
    entry = false
  end
  local moved = not entry or tonumber(entry) < tonumber(ARGV[19])
  if moved then redis.call('ZADD', index, ARGV[18], session) end
  local form_entry = string.sub(plan, 4, 4)
  if form_entry == 'f' then
    redis.call('ZADD', index, 'LT', ARGV[20], 'f:' .. ARGV[17])
  elseif form_entry == 'r' then
    redis.call('ZREM', index, 'f:' .. ARGV[17])
  end
  if moved or form_entry == 'f' then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[21])
    keep(index, ARGV[6], ARGV[7])  -- its entries live at most dedupe_ttl
  end
end

-- The handled ids: the newest ``most`` commits. Room is made before this id is added, so
-- that it is always kept, and the set never outgrows Redis's compact encoding.
if wrong_type(redis.pcall('ZREMRANGEBYRANK', KEYS[2], 0, ARGV[5])) then
  redis.call('DEL', KEYS[2])  -- not a sorted set: damaged, start it afresh
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
keep(KEYS[2], ARGV[6], ARGV[7])

local token = ARGV[15]
if token == '-' then
  redis.call('DEL', KEYS[8])
elseif token ~= '' then
  redis.call('SET', KEYS[8], token, 'PX', ARGV[16])
end
redis.call('DEL', KEYS[1])  -- replicated (see begin.lua)
wake(KEYS[3], KEYS[4])
return {'ok'}
