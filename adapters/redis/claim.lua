#!lua
-- Claim the due entries of one partition of the expiry index (one hash slot): each is hidden
-- from other consumers until the claim's lease ends, by moving its score there. Entries due
-- longer than the dedupe window ago are dropped: an event is kept at most that long.
-- KEYS: the partition
-- ARGV: 1 now (microseconds), 2 the lease's end (microseconds), 3 most entries, 4 oldest kept
-- Reply: member, score before the claim, member, score...
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[3],
  'WITHSCORES')
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], due[i])
end
return due
