#!lua flags=allow-cross-slot-keys
-- Take the due expiry events of the index partitions one server holds (one key on a single
-- Redis; on a cluster a partition in each hash slot, all given here live on the node that
-- runs the script), oldest deadline first, each checked against its user's conversation
-- here, where the user's keys are (they share the partition's slot): an entry whose deadline
-- moved (the member wrote again) is put back at the new deadline, one with nothing pending
-- is dropped, and a due one is claimed: hidden from other consumers until the claim's lease
-- ends, by moving its score there. Entries due longer than the dedupe window ago are dropped:
-- an event is kept at most that long. With 'peek' nothing is written (peek.lua).
-- KEYS: one partition (a cluster routes the call, and checks keys, by the slot of the keys
--       declared: the others of the same server, and the users' keys, are reached through
--       allow-cross-slot-keys)
-- ARGV: 1 now (us), 2 the lease's end (us), 3 most events, 4 most entries looked at,
--       5 oldest kept (us), 6 the session timeout (us), 7 'claim' or 'peek', 8... the
--       server's other partitions
-- Reply: for each due event: member, its score before the claim, deadline (us), the last
-- inbound message (us, 0: none), the form's JSON ('' for a session, or a form gone).
-- A user value starts with last-seen, version, the form's deadline, the effect records'
-- epoch and the last inbound message (16 digits each), then the JSON; a session value with
-- its own last-seen. A session times out after the later of the two last-seens.
local now, lease_end = tonumber(ARGV[1]), ARGV[2]
local most, budget, oldest = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local session_timeout, claim = tonumber(ARGV[6]), ARGV[7] == 'claim'
local partitions = {KEYS[1]}
for i = 8, #ARGV do partitions[#partitions + 1] = ARGV[i] end

-- The oldest `budget` due entries of all partitions: each partition's oldest, merged, kept
-- to `budget` as they come so that a backlog does not build a long list.
local due = {}
local function oldest_first(a, b) return a[3] < b[3] end
local function keep_oldest()
  table.sort(due, oldest_first)
  for i = #due, budget + 1, -1 do due[i] = nil end
end
-- A cluster master holds thousands of partitions, most with nothing due: ZCOUNT tells that
-- at a third of the cost of the ZRANGE that reads the due entries.
for _, partition in ipairs(partitions) do
  local found = {}
  if redis.call('ZCOUNT', partition, '-inf', ARGV[1]) > 0 then
    found = redis.call('ZRANGE', partition, '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, budget,
      'WITHSCORES')
  end
  if claim and #found > 0 and tonumber(found[2]) < tonumber(oldest) then
    redis.call('ZREMRANGEBYSCORE', partition, '-inf', '(' .. oldest)
    found = redis.call('ZRANGE', partition, '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, budget,
      'WITHSCORES')
  end
  for i = 1, #found, 2 do
    due[#due + 1] = {partition, found[i], tonumber(found[i + 1]), found[i + 1]}
  end
  if #due > 2 * budget then keep_oldest() end
end
keep_oldest()

local function at(head, field)
  local from = 16 * field + 1
  return tonumber(string.sub(head, from, from + 15)) or 0
end
-- The user's header, or nil when the user is gone or was written by an older release.
local function header(digits)
  local head = redis.pcall('GETRANGE', 'user:{' .. digits .. '}:state', 0, 80)
  if wrong_type(head) or string.sub(head, 81, 81) ~= '{' then return nil end
  return head
end
-- The entry's deadline by the conversation (0: nothing of its kind pending).
local function deadline_of(form_kind, digits, head)
  if not head then return 0 end
  if form_kind then return at(head, 2) end
  local seen = at(head, 0)
  local session = redis.pcall('GETRANGE', 'session:{' .. digits .. '}:data', 0, 15)
  if not wrong_type(session) then seen = math.max(seen, tonumber(session) or 0) end
  return seen + session_timeout
end

local taken = {}
for _, entry in ipairs(due) do
  if #taken >= 5 * most then break end
  local partition, member = entry[1], entry[2]
  local form_kind, digits = string.sub(member, 1, 1) == 'f', string.sub(member, 3)
  local head = header(digits)
  local deadline = deadline_of(form_kind, digits, head)
  if deadline == 0 then
    if claim then redis.call('ZREM', partition, member) end
  elseif deadline > now then
    if claim then redis.call('ZADD', partition, deadline, member) end
  else
    if claim then redis.call('ZADD', partition, 'XX', lease_end, member) end
    local form = form_kind and get('form:{' .. digits .. '}:data') or ''
    if not form or form == '!' then form = '' end  -- gone (evicted) or damaged: no answers
    taken[#taken + 1] = member
    taken[#taken + 1] = entry[4]
    taken[#taken + 1] = deadline
    taken[#taken + 1] = at(head, 4)
    taken[#taken + 1] = form
  end
end
return taken
