#!lua
-- Check, or acknowledge, one claimed entry of the expiry index against its user's
-- conversation (the partition is in the user's hash slot).
-- KEYS: user, session, form, the partition
-- ARGV: 1 'check' or 'ack', 2 the member ('f' or 's', ':', the phone's digits), 3 the claim's
--       mark (the entry's score while claimed), 4 now (microseconds), 5 the session timeout
--       (microseconds)
-- Reply to check: {'gone'} (dropped: nothing of that kind pending, or claimed again since),
-- {'later', deadline} (put back at the deadline, which moved), or
-- {'due', deadline, last inbound message, form JSON or ''}; to ack: 1 if the entry was still
-- this claim's and is dropped, else 0.
-- The deadlines come from the user value's header (last-seen, version, the form's deadline,
-- the effect records' epoch, the last inbound message: 16 digits each, then the JSON); a
-- session times out after the later of its own last-seen and the user's.
local form_kind = string.sub(ARGV[2], 1, 1) == 'f'
local function mine()
  local score = redis.pcall('ZSCORE', KEYS[4], ARGV[2])
  return not wrong_type(score) and score and tonumber(score) == tonumber(ARGV[3])
end
-- The header's numbers, or nil when the user is gone or was written by an older release.
local function header()
  local head = redis.pcall('GETRANGE', KEYS[1], 0, 80)
  if wrong_type(head) or string.sub(head, 81, 81) ~= '{' then return nil end
  return head
end
local function at(head, field)
  local from = 16 * field + 1
  return tonumber(string.sub(head, from, from + 15)) or 0
end

if ARGV[1] == 'ack' then
  if not mine() then return 0 end
  redis.call('ZREM', KEYS[4], ARGV[2])
  local head = header()
  if form_kind and head and at(head, 2) > 0 and at(head, 2) <= tonumber(ARGV[4]) then
    redis.call('DEL', KEYS[3])  -- the member was told: the expired form is done with
  end
  return 1
end

if not mine() then return {'gone'} end
local head = header()
local deadline = 0
if head and form_kind then
  deadline = at(head, 2)
elseif head then
  local seen = at(head, 0)
  local session = redis.pcall('GETRANGE', KEYS[2], 0, 15)
  if not wrong_type(session) then seen = math.max(seen, tonumber(session) or 0) end
  deadline = seen + tonumber(ARGV[5])
end
if deadline == 0 then
  redis.call('ZREM', KEYS[4], ARGV[2])
  return {'gone'}
end
if deadline > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[4], deadline, ARGV[2])
  return {'later', deadline}
end
local form = form_kind and get(KEYS[3]) or ''
if not form or form == '!' then form = '' end  -- gone (evicted) or not a form: no answers
return {'due', deadline, at(head, 4), form}
