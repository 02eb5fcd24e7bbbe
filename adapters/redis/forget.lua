#!lua flags=allow-oom
-- Reset: forget the user's conversation and token in one step, and take the user from a unit
-- of work in flight (its commit finds the lease gone and stores nothing). The handled ids
-- and the effect records stay, so a redelivery is still known and no effect runs twice.
-- It only deletes, so it runs on a full server too (allow-oom).
-- KEYS: lease, waiters, wake, user, session, form, token
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
wake(KEYS[2], KEYS[3])
return 1
