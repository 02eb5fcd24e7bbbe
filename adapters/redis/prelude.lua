-- Put after the shebang of every script (adapters/redis/scripts.py).
-- A key of the wrong type (written by something else) reads as damaged, and the next write
-- replaces it; any other error (a refused permission, a full server) is raised as it is.
local function wrong_type(reply)
  if type(reply) == 'table' and reply.err then
    if string.sub(reply.err, 1, 9) == 'WRONGTYPE' then return true end
    error(reply)
  end
  return false
end
-- A string value, '!' for a key of the wrong type (the client reads it as damaged), or false.
local function get(key)
  local value = redis.pcall('GET', key)
  if wrong_type(value) then return '!' end
  return value
end
-- A slide step of a TTL of ``px`` ms: 1/SLIDE_STEPS of it (domain/timeouts.py: slide_step).
local function slide_step(px)
  return math.floor(px / SLIDE_STEPS)
end
-- Keep ``key`` for at least ``px`` ms (the caller's text); when extending, add ``slack`` ms,
-- a slide step unless given (so that most writes move no TTL, and append nothing to the AOF
-- for it).
local function keep(key, px, slack)
  if redis.call('PTTL', key) < tonumber(px) then
    redis.call('PEXPIRE', key, px + (slack or slide_step(px)))
  end
end
-- The effect records' head: their epoch (16 digits) and how many are in doubt. A hash field
-- of the wrong type is not a record of this library's: dropped, as an eviction would.
local function effects_head(key)
  local head = redis.pcall('HGET', key, '~')
  if wrong_type(head) then
    redis.call('DEL', key)
    return false, 0, 0
  end
  if not head then return false, 0, 0 end
  return head, tonumber(string.sub(head, 1, 16)) or 0, tonumber(string.sub(head, 17)) or 0
end
-- Wake the longest waiting unit of work of this user, if any waits. Neither the waiters nor
-- the wake-up are persisted or replicated: a waiter lost in a restart looks again anyway.
local function wake(waiters, list)
  redis.set_repl(redis.REPL_NONE)
  local waiting = redis.pcall('GET', waiters)
  if not wrong_type(waiting) and (tonumber(waiting) or 0) > 0 then
    redis.call('RPUSH', list, 1)
    redis.call('PEXPIRE', list, 1000)
  end
  redis.set_repl(redis.REPL_ALL)
end
