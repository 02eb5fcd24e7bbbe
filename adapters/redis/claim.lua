#!lua flags=allow-cross-slot-keys
-- Claim the due entries of the expiry index's partitions held by one server (one key on a
-- single Redis; on a cluster a partition in each hash slot, all given here live on the node
-- that runs the script), oldest deadline first across them: each entry is hidden from other
-- consumers until the claim's lease ends, by moving its score there. Entries due longer than
-- the dedupe window ago are dropped: an event is kept at most that long. With 'peek', due
-- entries are only read.
-- KEYS: one partition (a cluster routes the call, and checks keys, by the slot of the keys
--       declared: the others of the same server come as arguments, which
--       allow-cross-slot-keys lets the script reach)
-- ARGV: 1 now (microseconds), 2 the lease's end (microseconds), 3 most entries, 4 oldest
--       kept, 5 'claim' or 'peek', 6... the server's other partitions
-- Reply: member, score before the claim, member, score...
local claim = ARGV[5] == 'claim'
local limit = tonumber(ARGV[3])
local partitions = {KEYS[1]}
for i = 6, #ARGV do partitions[#partitions + 1] = ARGV[i] end
-- The oldest `limit` due entries of all partitions: each partition's oldest, merged, kept
-- to `limit` as they come so that a burst does not build a long list.
local due = {}
local function oldest_first(a, b) return a[3] < b[3] end
local function keep_oldest()
  table.sort(due, oldest_first)
  for i = #due, limit + 1, -1 do due[i] = nil end
end
for _, partition in ipairs(partitions) do
  if claim then redis.call('ZREMRANGEBYSCORE', partition, '-inf', '(' .. ARGV[4]) end
  local found = redis.call('ZRANGE', partition, '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, limit,
    'WITHSCORES')
  for i = 1, #found, 2 do
    due[#due + 1] = {partition, found[i], tonumber(found[i + 1]), found[i + 1]}
  end
  if #due > 2 * limit then keep_oldest() end
end
keep_oldest()
local taken = {}
for _, entry in ipairs(due) do
  if claim then redis.call('ZADD', entry[1], 'XX', ARGV[2], entry[2]) end
  taken[#taken + 1] = entry[2]
  taken[#taken + 1] = entry[4]
end
return taken
