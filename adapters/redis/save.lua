#!lua
-- Compare-and-set every part of one user's conversation, in one round trip. A message's commit
-- (with its lease) is applied once by its message id, writes the token and frees the user; a
-- one-call write (no lease) is applied once by its operation id and waits while a message
-- holds the user. A message's effect records outlive its commit (effect.lua sets their TTL).
-- KEYS: user, session, form, handled, lease, waiters, wake, token
-- ARGV: 1 the numbers, a MessagePack array: expected version, now (us), user px, session px,
--       form px, op expiry (us), message expiry (us), handled px, token px, critical as
--       stored (0/1), form as stored (0/1), most ids kept in the handled set, user px slack,
--       handled px slack;
--       2 last-seen and the form's deadline (16 digits each), 3 op member,
--       4 message member ('' for none), 5 critical JSON ('' when as stored),
--       6 session value, 7 form JSON ('' deletes the form, or: as stored),
--       8 lease ('' for a one-call write), 9 token ('' keeps it, '-' deletes it, else sealed)
-- Reply: {status, version[, busy pttl]}. The user value is its last-seen time (16 digits),
-- its version (16 digits), its form's deadline (16 digits, zeros for none) and the JSON. A
-- version never repeats: a conversation created (again, after a reset or an eviction) starts
-- at the server's time in microseconds, above any version its earlier life reached.
-- A part the write did not change is not rewritten: the user value gets its new header (a
-- 48-byte SETRANGE) and TTL, the form is left alone. That keeps the AOF, and the replication
-- stream, to what changed. A TTL is extended only once it has run down below what the write
-- needs, and then with some slack: most writes change no TTL (and append nothing for it).
-- A commit trusts the version it began with: only its lease's holder writes the user while
-- the lease holds. The lease and its waiters are neither persisted nor replicated
-- (REPL_NONE): a lease that a restart or a failover loses only lets another message begin,
-- and the holder's commit then finds its lease gone and stores nothing.
-- Keys of the wrong type: see prelude.lua.
-- (One argument: Redis hands a script each argument as a string of its own, and packing the
-- numbers costs the client less; cmsgpack reads them as numbers.)
local n = cmsgpack.unpack(ARGV[1])
local expected, now, user_px, session_px, form_px = n[1], n[2], n[3], n[4], n[5]
local op_expiry, message_expiry, handled_px, token_px = n[6], n[7], n[8], n[9]
local critical_as_stored, form_as_stored, limit = n[10] == 1, n[11] == 1, n[12]
local user_slack, handled_slack = n[13], n[14]
local op, message, lease, token = ARGV[3], ARGV[4], ARGV[8], ARGV[9]
local leased = lease ~= ''
local handled = KEYS[4]

-- The stored version (0.1 wrote a 12-digit one, this layout a 16-digit one).
local function version_of(key)
  local head = redis.pcall('GETRANGE', key, 0, 31)
  if wrong_type(head) then return 0 end
  if string.sub(head, 29, 29) == '{' then return tonumber(string.sub(head, 17, 28)) or 0 end
  return tonumber(string.sub(head, 17, 32)) or 0
end
-- Whether ``member`` is in the handled set and not past its expiry.
local function handled_before(member)
  local expiry = redis.pcall('ZSCORE', handled, member)
  if wrong_type(expiry) then
    redis.call('DEL', handled)  -- not a sorted set: damaged, start it afresh
    return false
  end
  return expiry and tonumber(expiry) > now
end
-- Keep ``key`` for at least ``px`` ms; when extending, add ``slack``.
local function keep(key, px, slack)
  if redis.call('PTTL', key) < px then
    redis.call('PEXPIRE', key, px + slack)
  end
end

if leased then
  -- A retry of a commit whose reply was lost finds its message id: applied, not again.
  if handled_before(message) then return {'applied', version_of(KEYS[1])} end
elseif handled_before(op) then
  return {'applied', 0}
end
local holder = redis.pcall('GET', KEYS[5])
if wrong_type(holder) then holder = false end
if leased then
  if holder ~= lease then return {'lease_lost', 0} end
elseif holder then
  return {'busy', 0, redis.call('PTTL', KEYS[5])}
end
local version = expected
if not leased then
  local stored = version_of(KEYS[1])
  if message ~= '' and handled_before(message) then return {'duplicate', stored} end
  if stored ~= version then return {'conflict', stored} end
end
if version > 0 then
  version = version + 1
else
  local time = redis.call('TIME')
  version = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local header = string.sub(ARGV[2], 1, 16) .. string.format('%016.0f', version)
  .. string.sub(ARGV[2], 17, 32)
if critical_as_stored then
  if redis.call('SETRANGE', KEYS[1], 0, header) == #header then
    redis.call('DEL', KEYS[1])  -- it was gone (evicted) since the read: lost, as evicted
  else
    keep(KEYS[1], user_px, user_slack)
  end
else
  redis.call('SET', KEYS[1], header .. ARGV[5], 'PX', user_px + user_slack)
end
redis.call('SET', KEYS[2], ARGV[6], 'PX', session_px)
if not form_as_stored then
  if ARGV[7] == '' then
    redis.call('DEL', KEYS[3])
  else
    redis.call('SET', KEYS[3], ARGV[7], 'PX', form_px)
  end
end

-- The handled set: the message id (a commit needs no other), an op id for a one-call write.
-- Past the limit the ids that expire first go: a burst of messages on one user keeps the set
-- small (and in Redis's compact encoding), and a message is remembered for dedupe_ttl or
-- until that many newer ids of the user, whichever comes first.
local added = 0
if message ~= '' then
  added = redis.call('ZADD', handled, message_expiry, message)
end
if not leased then
  added = added + redis.call('ZADD', handled, op_expiry, op)
end
if added > 0 and redis.call('ZCARD', handled) > limit then
  redis.call('ZREMRANGEBYRANK', handled, 0, -limit - 1)
end
-- Only ever extend: a short-lived op id must not cut a message id's longer memory.
keep(handled, handled_px, handled_slack)

if leased then
  if token == '-' then
    redis.call('DEL', KEYS[8])
  elseif token ~= '' then
    redis.call('SET', KEYS[8], token, 'PX', token_px)
  end
  redis.set_repl(redis.REPL_NONE)
  redis.call('DEL', KEYS[5])
  -- Wake the longest waiting message of this user, if any waits.
  local waiting = redis.pcall('GET', KEYS[6])
  if not wrong_type(waiting) and (tonumber(waiting) or 0) > 0 then
    redis.call('RPUSH', KEYS[7], 1)
    redis.call('PEXPIRE', KEYS[7], 1000)
  end
  redis.set_repl(redis.REPL_ALL)
end
return {'ok', version}
