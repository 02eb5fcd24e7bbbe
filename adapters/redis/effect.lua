#!lua
-- Start or finish one effect of a message (a call to another system, at most once).
-- KEYS: lease, effects (a hash of this message's effects: name -> '' while started, else
--       the JSON result)
-- ARGV: 1 'start' or 'finish', 2 lease (start), 3 effect name, 4 result JSON (finish),
--       5 px of the record
-- Reply to start: {'run'} (marked started now), {'done', result}, {'in_doubt'} or
-- {'lease_lost'}. A finish is recorded whether or not the lease still holds: it happened.
-- Keys of the wrong type: see prelude.lua.
local function hget(key, field)
  local value = redis.pcall('HGET', key, field)
  if wrong_type(value) then
    redis.call('DEL', key)  -- not a hash: damaged, start it afresh
    return false
  end
  return value
end
if ARGV[1] == 'finish' then
  hget(KEYS[2], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return {'done'}
end
local holder = redis.pcall('GET', KEYS[1])
if wrong_type(holder) or holder ~= ARGV[2] then return {'lease_lost'} end
local record = hget(KEYS[2], ARGV[3])
if record == '' then return {'in_doubt'} end
if record then return {'done', record} end
redis.call('HSET', KEYS[2], ARGV[3], '')
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'run'}
