#!lua flags=allow-cross-slot-keys
-- Claim the due entries of the expiry index's partitions held by one server (one key on a
-- single Redis; on a cluster a partition in each hash slot, all given here live on the node
-- that runs the script): each entry is hidden from other consumers until the claim's lease
-- ends, by moving its score there. Entries due longer than the dedupe window ago are
-- dropped: an event is kept at most that long. With 'peek', due entries are only read.
-- KEYS: one partition (a cluster routes the call, and checks keys, by the slot of the keys
--       declared: the others of the same server come as arguments, which
--       allow-cross-slot-keys lets the script reach)
-- ARGV: 1 now (microseconds), 2 the lease's end (microseconds), 3 most entries, 4 oldest
--       kept, 5 'claim' or 'peek', 6... the server's other partitions
-- Reply: member, score before the claim, member, score...
local claim = ARGV[5] == 'claim'
local left = tonumber(ARGV[3])
local taken = {}
local partitions = {KEYS[1]}
for i = 6, #ARGV do partitions[#partitions + 1] = ARGV[i] end
for _, partition in ipairs(partitions) do
  if claim then redis.call('ZREMRANGEBYSCORE', partition, '-inf', '(' .. ARGV[4]) end
  local due = redis.call('ZRANGE', partition, '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, left,
    'WITHSCORES')
  for i = 1, #due, 2 do
    if claim then redis.call('ZADD', partition, 'XX', ARGV[2], due[i]) end
    taken[#taken + 1] = due[i]
    taken[#taken + 1] = due[i + 1]
  end
  left = left - #due / 2
  if left <= 0 then break end
end
return taken
