#!lua
-- Start, finish or settle one effect of an intent (a call to another system, at most once).
-- KEYS: effects (a hash: '~' is the records' head, then one field per effect and intent),
--       lease, user, legacy (0.2's records of one message, or the effects key again)
-- ARGV: 1 'start', 'finish' or 'settle', 2 the effect's field, 3 the record's text (start:
--       the name and the key, one line each; else the result JSON), 4 now (microseconds),
--       5 the lease (start), 6 epoch as begun (start), 7 fence (start),
--       8 px of records with none in doubt, 9 the dedupe window (microseconds),
--       10 the effect's name in the legacy hash ('' when not consulted)
-- A record is '?' (in doubt) or '=' (done), 16 digits of time, then the text.
-- Reply to start: {'run', the records' epoch} (marked started now), {'done', result}, {'in_doubt'},
-- {'lease_lost'} or {'records_lost'} (the records as begun are gone: evicted).
-- Reply to finish and settle: {'done', the result that stands, the records' epoch}. A finish
-- is recorded whether or not a lease holds (it happened); a settle keeps a result recorded
-- before.
-- The records have no TTL while one is in doubt, and otherwise outlive the critical data
-- that names them by its epoch (the user value's header, see commit.lua).
-- Keys of the wrong type: see prelude.lua.
local now = string.format('%016.0f', tonumber(ARGV[4]))
local head, epoch, count = effects_head(KEYS[1])
local record = head and redis.call('HGET', KEYS[1], ARGV[2])

if ARGV[1] ~= 'start' then
  if ARGV[1] == 'settle' and record and string.sub(record, 1, 1) == '=' then
    return {'done', string.sub(record, 18), epoch}
  end
  if not head then epoch = tonumber(now) end  -- new records, which the critical data does not name
  if record and string.sub(record, 1, 1) == '?' then count = count - 1 end
  redis.call('HSET', KEYS[1], ARGV[2], '=' .. now .. ARGV[3],
    '~', string.format('%016.0f', epoch) .. math.max(count, 0))
  if count <= 0 then
    local px, user_ttl = tonumber(ARGV[8]), redis.call('PTTL', KEYS[3])
    redis.call('PEXPIRE', KEYS[1], math.max(px, user_ttl))
  end
  return {'done', ARGV[3], epoch}
end

if get(KEYS[2]) ~= ARGV[5] then return {'lease_lost'} end
local begun = tonumber(ARGV[6])
if begun ~= 0 and epoch ~= begun then return {'records_lost'} end
if record then
  if string.sub(record, 1, 1) == '=' then return {'done', string.sub(record, 18)} end
  return {'in_doubt'}  -- started, or not a record of this library's: unknown either way
end
if ARGV[10] ~= '' then
  local legacy = redis.pcall('HGET', KEYS[4], ARGV[10])
  if not wrong_type(legacy) and legacy then
    if legacy == '' then return {'in_doubt'} end
    return {'done', legacy}
  end
end
if not head then
  epoch = tonumber(ARGV[7])  -- this unit of work's fence: unique to it
  -- Name the new records in the critical data's header, so that their eviction is seen even
  -- if this unit of work never commits. A value 0.2 wrote (48 digits, then the JSON) gets
  -- the epoch inserted, and a last inbound message of none; one from 0.1 is left as it is
  -- (its next commit rewrites it).
  local digits = string.format('%016.0f', epoch)
  local at = redis.pcall('GETRANGE', KEYS[3], 48, 80)
  if not wrong_type(at) and string.sub(at, 33, 33) == '{' then
    redis.call('SETRANGE', KEYS[3], 48, digits)
  elseif not wrong_type(at) and string.sub(at, 1, 1) == '{' then
    local value = redis.call('GET', KEYS[3])
    redis.call('SET', KEYS[3],
      string.sub(value, 1, 48) .. digits .. string.rep('0', 16) .. string.sub(value, 49),
      'KEEPTTL')
  end
else
  -- Results older than the dedupe window go (a record in doubt stays until settled).
  local oldest = tonumber(now) - tonumber(ARGV[9])
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    local value = fields[i + 1]
    if string.sub(value, 1, 1) == '=' and (tonumber(string.sub(value, 2, 17)) or 0) < oldest then
      redis.call('HDEL', KEYS[1], fields[i])
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[2], '?' .. now .. ARGV[3],
  '~', string.format('%016.0f', epoch) .. (count + 1))
redis.call('PERSIST', KEYS[1])
return {'run', epoch}
