#!lua flags=allow-cross-slot-keys
-- Acknowledge delivered expiry events, all those of one server in one call: each entry still
-- marked by the claim that delivered it is dropped, and an expired form the member was told
-- of is deleted with it (it was kept past its deadline only for its event). An entry claimed
-- again since, or moved by the member's next message, is left alone.
-- KEYS: one partition (a cluster routes the call by it; the others, and the users' keys, of
--       the same server are reached through allow-cross-slot-keys)
-- ARGV: 1 now (us), then for each event: its partition, its member, the claim's mark
-- Reply: how many entries were dropped
local now = tonumber(ARGV[1])
local dropped = 0
for i = 2, #ARGV, 3 do
  local partition, member = ARGV[i], ARGV[i + 1]
  local score = redis.pcall('ZSCORE', partition, member)
  if not wrong_type(score) and score and tonumber(score) == tonumber(ARGV[i + 2]) then
    redis.call('ZREM', partition, member)
    dropped = dropped + 1
    if string.sub(member, 1, 1) == 'f' then
      local digits = string.sub(member, 3)
      local head = redis.pcall('GETRANGE', 'user:{' .. digits .. '}:state', 0, 80)
      if not wrong_type(head) and string.sub(head, 81, 81) == '{' then
        local deadline = tonumber(string.sub(head, 33, 48)) or 0
        if deadline > 0 and deadline <= now then
          redis.call('DEL', 'form:{' .. digits .. '}:data')
        end
      end
    end
  end
end
return dropped
