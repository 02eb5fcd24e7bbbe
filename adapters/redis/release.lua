#!lua flags=allow-oom
-- Free a user held by a unit of work that ended without committing (its code raised).
-- It runs on a server over maxmemory (allow-oom): it only deletes, and the wake-up it may
-- write lives a second; refused, the user would wait for a lease that lapses 35 s later.
-- KEYS: lease, waiters, wake
-- ARGV: 1 lease
-- Keys of the wrong type: see prelude.lua.
local holder = redis.pcall('GET', KEYS[1])
if wrong_type(holder) or holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])  -- replicated (see begin.lua)
wake(KEYS[2], KEYS[3])
return 1
