#!lua
-- Compare-and-set every part of one user's conversation, in one round trip. A message's commit
-- (with its lease) is applied once by its message id, writes the token, forgets the message's
-- effect records and frees the user; a one-call write (no lease) is applied once by its
-- operation id and waits while a message holds the user.
-- KEYS: user, session, form, handled, lease, waiters, wake, token, effects
-- ARGV: 1 expected version, 2 op member, 3 message member ('' for none), 4 now us,
--       5 last-seen and the form's deadline (16 digits each), 6 critical JSON, 7 user px, 8 session value, 9 session px,
--       10 form value ('' deletes the form), 11 form px, 12 op expiry us,
--       13 message expiry us, 14 handled px, 15 lease ('' for a one-call write),
--       16 token ('' keeps it, '-' deletes it, else the sealed token), 17 token px,
--       18 '1' when the critical JSON is as stored, 19 '1' when the form is as stored,
--       20 the most ids kept in the handled set, 21 user px slack, 22 handled px slack,
--       23 '1' when the message recorded effects
-- A part the client saw unchanged (flag 18 or 19) comes without its JSON. A commit trusts the
-- version it began with: only its lease's holder writes the user while the lease holds.
-- A TTL is extended only once it has run down below what the write needs, and then with some
-- slack: most writes change no TTL (and append nothing to the AOF for it).
-- The lease and its waiters are neither persisted nor replicated (REPL_NONE): a lease that a
-- restart or a failover loses only lets another message begin, and the holder's commit then
-- finds its lease gone and stores nothing.
-- Reply: {status, version[, busy pttl]}. The user value is its last-seen time (16 digits),
-- its version (16 digits), its form's deadline (16 digits, zeros for none) and the JSON. A version never repeats: a conversation created
-- (again, after a reset or an eviction) starts at the server's time in microseconds, above
-- any version its earlier life reached.
-- A part the write did not change is not rewritten: the user value gets its new header (a
-- 48-byte SETRANGE) and TTL, the form is left alone. That keeps the AOF, and the
-- replication stream, to what changed.
-- A key of the wrong type (written by something else) reads as damaged, and the next write
-- replaces it; any other error (a refused permission, a full server) is raised as it is.
local function wrong_type(reply)
  if type(reply) == 'table' and reply.err then
    if string.sub(reply.err, 1, 9) == 'WRONGTYPE' then return true end
    error(reply)
  end
  return false
end
-- The stored version, and whether the value has this release's 48-byte header.
local function version_of(key)
  local head = redis.pcall('GETRANGE', key, 0, 47)
  if wrong_type(head) then return 0, false end
  -- Written by 0.1 (a 12-digit version) or by this layout (16 digits).
  if string.sub(head, 29, 29) == '{' then return tonumber(string.sub(head, 17, 28)) or 0, false end
  local version = tonumber(string.sub(head, 17, 32))
  return version or 0, version ~= nil
end
local now = tonumber(ARGV[4])
local leased = ARGV[15] ~= ''
local handled = KEYS[4]
-- Whether ``member`` is in the handled set and not past its expiry.
local function handled_before(member)
  local expiry = redis.pcall('ZSCORE', handled, member)
  if wrong_type(expiry) then
    redis.call('DEL', handled)  -- not a sorted set: damaged, start it afresh
    return false
  end
  return expiry and tonumber(expiry) > now
end

if leased then
  -- A retry of a commit whose reply was lost finds its message id: applied, not again.
  if handled_before(ARGV[3]) then return {'applied', (version_of(KEYS[1]))} end
else
  if handled_before(ARGV[2]) then return {'applied', 0} end
end
local holder = redis.pcall('GET', KEYS[5])
if wrong_type(holder) then holder = false end
if leased then
  if holder ~= ARGV[15] then return {'lease_lost', 0} end
elseif holder then
  return {'busy', 0, redis.call('PTTL', KEYS[5])}
end
local version = tonumber(ARGV[1])
if not leased then
  local stored = version_of(KEYS[1])
  if ARGV[3] ~= '' and handled_before(ARGV[3]) then return {'duplicate', stored} end
  if stored ~= version then return {'conflict', stored} end
end
if version > 0 then
  version = version + 1
else
  local time = redis.call('TIME')
  version = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Keep ``key`` for at least ``px`` ms; when extending, add ``slack``.
local function keep(key, px, slack)
  if redis.call('PTTL', key) < tonumber(px) then
    redis.call('PEXPIRE', key, tonumber(px) + tonumber(slack))
  end
end
local header = string.sub(ARGV[5], 1, 16) .. string.format('%016.0f', version)
  .. string.sub(ARGV[5], 17, 32)
if ARGV[18] == '1' then
  if redis.call('SETRANGE', KEYS[1], 0, header) == #header then
    redis.call('DEL', KEYS[1])  -- it was gone (evicted) since the read: lost, as evicted
  else
    keep(KEYS[1], ARGV[7], ARGV[21])
  end
else
  redis.call('SET', KEYS[1], header .. ARGV[6], 'PX', tonumber(ARGV[7]) + tonumber(ARGV[21]))
end
redis.call('SET', KEYS[2], ARGV[8], 'PX', ARGV[9])
if ARGV[19] ~= '1' then
  if ARGV[10] == '' then
    redis.call('DEL', KEYS[3])
  else
    redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[11])
  end
end

-- The handled set: the message id (a commit needs no other), an op id for a one-call write.
-- Past the limit the ids that expire first go: a burst of messages on one user keeps the set
-- small (and in Redis's compact encoding), and a message is remembered for dedupe_ttl or
-- until that many newer ids of the user, whichever comes first.
local added = 0
if ARGV[3] ~= '' then
  added = redis.call('ZADD', handled, ARGV[13], ARGV[3])
end
if not leased then
  added = added + redis.call('ZADD', handled, ARGV[12], ARGV[2])
end
local limit = tonumber(ARGV[20])
if added > 0 and redis.call('ZCARD', handled) > limit then
  redis.call('ZREMRANGEBYRANK', handled, 0, -limit - 1)
end
-- Only ever extend: a short-lived op id must not cut a message id's longer memory.
keep(handled, ARGV[14], ARGV[22])

if leased then
  if ARGV[16] == '-' then
    redis.call('DEL', KEYS[8])
  elseif ARGV[16] ~= '' then
    redis.call('SET', KEYS[8], ARGV[16], 'PX', ARGV[17])
  end
  if ARGV[23] == '1' then redis.call('DEL', KEYS[9]) end
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
