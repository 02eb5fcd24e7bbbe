#!lua
-- Compare-and-set every part of one user's conversation, in one round trip. A one-call write
-- (no lease) waits while a message holds the user; a message's commit (with its lease) also
-- writes the token, forgets the message's effect records and frees the user.
-- KEYS: user, session, form, handled, lease, waiters, wake, token, effects
-- ARGV: 1 expected version, 2 op member, 3 message member ('' for none), 4 now us,
--       5 last-seen (16 digits), 6 critical JSON, 7 user px, 8 session value, 9 session px,
--       10 form value ('' deletes the form), 11 form px, 12 op expiry us,
--       13 message expiry us, 14 handled px, 15 lease ('' for a one-call write),
--       16 token ('' keeps it, '-' deletes it, else the sealed token), 17 token px
-- Reply: {status, version[, busy pttl]}. The user value is its last-seen time (16 digits),
-- its version (16 digits) and the JSON. A version never repeats: a conversation created
-- (again, after a reset or an eviction) starts at the server's time in microseconds, above
-- any version its earlier life reached.
-- A key of the wrong type (written by something else) reads as damaged, and the next write
-- replaces it; any other error (a refused permission, a full server) is raised as it is.
local function wrong_type(reply)
  if type(reply) == 'table' and reply.err then
    if string.sub(reply.err, 1, 9) == 'WRONGTYPE' then return true end
    error(reply)
  end
  return false
end
local function version_of(key)
  local head = redis.pcall('GETRANGE', key, 0, 32)
  if wrong_type(head) then return 0 end
  -- Written by 0.1 (a 12-digit version) or by this layout (16 digits).
  if string.sub(head, 29, 29) == '{' then return tonumber(string.sub(head, 17, 28)) or 0 end
  return tonumber(string.sub(head, 17, 32)) or 0
end
if wrong_type(redis.pcall('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[4])) then
  redis.call('DEL', KEYS[4])  -- not a sorted set: damaged, start it afresh
end
-- The op id first: a retry of a write whose reply was lost must not apply it twice.
if redis.call('ZSCORE', KEYS[4], ARGV[2]) then
  return {'applied', 0}
end
local holder = redis.pcall('GET', KEYS[5])
if wrong_type(holder) then holder = false end
if ARGV[15] ~= '' then
  if holder ~= ARGV[15] then return {'lease_lost', 0} end
elseif holder then
  return {'busy', 0, redis.call('PTTL', KEYS[5])}
end
local version = version_of(KEYS[1])
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[4], ARGV[3]) then
  return {'duplicate', version}
end
if version ~= tonumber(ARGV[1]) then
  return {'conflict', version}
end
if version > 0 then
  version = version + 1
else
  local time = redis.call('TIME')
  version = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
redis.call('SET', KEYS[1], ARGV[5] .. string.format('%016.0f', version) .. ARGV[6], 'PX', ARGV[7])
redis.call('SET', KEYS[2], ARGV[8], 'PX', ARGV[9])
if ARGV[10] == '' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[11])
end
redis.call('ZADD', KEYS[4], ARGV[12], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[13], ARGV[3])
end
-- Only ever extend: a short-lived op id must not cut a message id's longer memory.
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[14]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[14])
end
if ARGV[15] ~= '' then
  if ARGV[16] == '-' then
    redis.call('DEL', KEYS[8])
  elseif ARGV[16] ~= '' then
    redis.call('SET', KEYS[8], ARGV[16], 'PX', ARGV[17])
  end
  redis.call('DEL', KEYS[9], KEYS[5])
  -- Wake the longest waiting message of this user, if any waits.
  local waiting = redis.pcall('GET', KEYS[6])
  if not wrong_type(waiting) and (tonumber(waiting) or 0) > 0 then
    redis.call('RPUSH', KEYS[7], 1)
    redis.call('PEXPIRE', KEYS[7], 1000)
  end
end
return {'ok', version}
