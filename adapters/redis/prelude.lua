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
