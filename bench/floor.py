"""The semantic floor: the smallest implementation of the library's promises for one message,
on redis-py's public API, that the benchmark measures the library against.

The promises (and nothing else):
- begin, one round trip (a script and an MGET pipelined): a handled id is refused as a
  duplicate; a user held by another holder is refused as busy; otherwise the user is held
  under a random holder for ``LEASE_MS`` and the parts and token are read;
- the handled ids are the user's last ``KEPT_IDS`` ids, 8-byte digests in a sorted set
  scored by the fence of the commit that recorded them (a compact listpack);
- every begin gets a fence above every version the user had: the server's clock in
  microseconds, or the newest fence + 1. The version is the newest fence in the handled set,
  which every commit writes anyway: it needs no key of its own;
- commit, one script: nothing unless the holder still holds the user; then the id is
  recorded, the changed parts written with their TTLs, the unchanged sliding parts kept
  alive, the user freed; a retry after a lost reply is "applied" only for the holder whose
  fence recorded the id (fences never repeat).

The keys are the library's names (the phone's digits as hash tag), so that bytes per user
compare values and encodings alone; the benchmark gives the floor users of its own.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis
import redis.asyncio
from cryptography.fernet import Fernet
from realistic import (
    ACCOUNTS,
    ANSWERS,
    CURRENT_ACCOUNT,
    FORM_FIELDS,
    FORM_NAME,
    MEMBER,
    OFFER_MENU,
    OFFER_STEP,
    RoundRobin,
    jwt,
    message_id,
)

PARTS = ("user", "session", "form", "token")
# The parts a message keeps alive even when it does not change them: critical data lives a
# day and the session five minutes after the user's last message; the form and the token
# live from their own last write.
SLIDING = ("user", "session")
TTL_MS = {"user": 86_400_000, "session": 300_000, "form": 600_000, "token": 1_800_000}
HANDLED_MS = 86_400_000
LEASE_MS = 35_000
KEPT_IDS = 128

BEGIN = """#!lua
-- KEYS: handled, lease; ARGV: id digest, holder, lease ms.
-- Reply: {'duplicate'}, {'busy', pttl of the holder} or {'ok', fence, version}.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {'duplicate'} end
-- A lease lost in a restart only lets the next message begin; the holder's commit then
-- finds it gone. So the lease is neither persisted nor replicated.
redis.set_repl(redis.REPL_NONE)
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {'busy', redis.call('PTTL', KEYS[2])}
end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local version = tonumber(newest[2]) or 0
local now = redis.call('TIME')
return {'ok', math.max(now[1] * 1000000 + now[2], version + 1), version}
"""

COMMIT = """#!lua
-- KEYS: lease, handled, the n written parts, the parts kept alive.
-- ARGV: holder, fence, id digest, ids kept, handled ms, n, then a value ('' deletes) and ms
-- for each written part, then ms for each part kept alive.
-- Reply: 'ok', 'applied' (this holder's commit was applied before) or 'lease_lost'.
local function keep(key, ms)
  -- Extended with slack, so that most commits move no TTL and append nothing for it.
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms + math.floor(ms / 300)) end
end
local lease, handled, fence, id = KEYS[1], KEYS[2], ARGV[2], ARGV[3]
if redis.call('GET', lease) ~= ARGV[1] then
  if tonumber(redis.call('ZSCORE', handled, id)) == tonumber(fence) then return 'applied' end
  return 'lease_lost'
end
-- The id first: the only call that can fail (a key of another type), before any write.
-- Room is made before adding, so the set never outgrows its compact encoding.
redis.call('ZREMRANGEBYRANK', handled, 0, -tonumber(ARGV[4]))
redis.call('ZADD', handled, fence, id)
keep(handled, tonumber(ARGV[5]))
local written = tonumber(ARGV[6])
for i = 1, written do
  local value = ARGV[5 + 2 * i]
  if value == '' then
    redis.call('DEL', KEYS[2 + i])
  else
    redis.call('SET', KEYS[2 + i], value, 'PX', ARGV[6 + 2 * i])
  end
end
for k = 3 + written, #KEYS do keep(KEYS[k], tonumber(ARGV[4 + written + k])) end
redis.call('DEL', lease)
return 'ok'
"""

RELEASE = """#!lua
-- KEYS: lease; ARGV: holder. Frees the user if this holder still holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class UserKeys:
    """Every key of one user; the phone's digits are the hash tag."""

    handled: str
    lease: str
    parts: dict[str, str]

    @classmethod
    def of(cls, digits: str) -> UserKeys:
        if not digits.isdigit():  # nothing but digits ever reaches a key
            raise ValueError(f"not a phone's digits: {digits!r}")
        tag = "{" + digits + "}"
        parts = {
            "user": f"user:{tag}:state",
            "session": f"session:{tag}:data",
            "form": f"form:{tag}:data",
            "token": f"token:{tag}",
        }
        return cls(f"handled:{tag}", f"lease:{tag}", parts)


@dataclass(frozen=True)
class Begun:
    """What a begin found: ``status`` 'ok' (the user is held), 'duplicate' or 'busy'."""

    status: str
    keys: UserKeys
    member: bytes
    holder: str
    fence: int = 0
    version: int = 0
    parts: dict[str, bytes | None] = field(default_factory=dict)
    busy_ms: int = 0


def digest(message_id: str) -> bytes:
    """A message id in the handled set: 8 bytes, whatever the id's length."""
    return hashlib.blake2b(message_id.encode(), digest_size=8).digest()


def _begun(keys: UserKeys, member: bytes, holder: str, reply: list[Any], values: Any) -> Begun:
    status = reply[0].decode()
    if status == "busy":
        return Begun(status, keys, member, holder, busy_ms=int(reply[1]))
    if status == "duplicate":
        return Begun(status, keys, member, holder)
    parts = dict(zip(PARTS, values, strict=True))
    return Begun(status, keys, member, holder, int(reply[1]), int(reply[2]), parts)


def _commit_call(begun: Begun, changes: Mapping[str, bytes | None]) -> tuple[list[str], list[Any]]:
    """commit's keys and arguments: ``changes`` maps a part to its new value (None deletes)."""
    keys = [begun.keys.lease, begun.keys.handled]
    args: list[Any] = [begun.holder, begun.fence, begun.member, KEPT_IDS, HANDLED_MS, len(changes)]
    for part, value in changes.items():
        keys.append(begun.keys.parts[part])
        args += [value or b"", TTL_MS[part]]
    for part in SLIDING:
        if part not in changes:
            keys.append(begun.keys.parts[part])
            args.append(TTL_MS[part])
    return keys, args


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


SHA = {script: _sha(script) for script in (BEGIN, COMMIT, RELEASE)}


class Floor:
    """The floor on a blocking redis-py client: EVALSHA, EVAL after a NOSCRIPT."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def begin(self, digits: str, message_id: str, lease_ms: int = LEASE_MS) -> Begun:
        keys, member, holder = UserKeys.of(digits), digest(message_id), secrets.token_hex(8)
        try:
            reply, values = self._begin(keys, member, holder, lease_ms)
        except redis.exceptions.NoScriptError:  # a restart or SCRIPT FLUSH forgot it
            self.client.script_load(BEGIN)
            reply, values = self._begin(keys, member, holder, lease_ms)
        return _begun(keys, member, holder, reply, values)

    def _begin(self, keys: UserKeys, member: bytes, holder: str, lease_ms: int) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(SHA[BEGIN], 2, keys.handled, keys.lease, member, holder, lease_ms)
        pipe.mget(*keys.parts.values())
        replies: list[Any] = pipe.execute()
        return replies

    def commit(self, begun: Begun, changes: Mapping[str, bytes | None]) -> str:
        """'ok', 'applied' (this holder's commit was applied before) or 'lease_lost'."""
        reply: bytes = self._run(COMMIT, *_commit_call(begun, changes))
        return reply.decode()

    def release(self, begun: Begun) -> bool:
        return bool(self._run(RELEASE, [begun.keys.lease], [begun.holder]))

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return self.client.evalsha(SHA[script], len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.client.eval(script, len(keys), *keys, *args)


class AsyncFloor:
    """The same on redis.asyncio."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client

    async def begin(self, digits: str, message_id: str, lease_ms: int = LEASE_MS) -> Begun:
        keys, member, holder = UserKeys.of(digits), digest(message_id), secrets.token_hex(8)
        try:
            reply, values = await self._begin(keys, member, holder, lease_ms)
        except redis.exceptions.NoScriptError:
            await self.client.script_load(BEGIN)
            reply, values = await self._begin(keys, member, holder, lease_ms)
        return _begun(keys, member, holder, reply, values)

    async def _begin(self, keys: UserKeys, member: bytes, holder: str, lease_ms: int) -> Any:
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(SHA[BEGIN], 2, keys.handled, keys.lease, member, holder, lease_ms)
        pipe.mget(*keys.parts.values())
        return await pipe.execute()

    async def commit(self, begun: Begun, changes: Mapping[str, bytes | None]) -> str:
        reply: bytes = await self._run(COMMIT, *_commit_call(begun, changes))
        return reply.decode()

    async def release(self, begun: Begun) -> bool:
        return bool(await self._run(RELEASE, [begun.keys.lease], [begun.holder]))

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(SHA[script], len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.client.eval(script, len(keys), *keys, *args)


# The realistic user and message (bench/realistic.py) on the floor ----------------------------

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def logged_in_parts(token_key: str) -> list[dict[str, bytes | None]]:
    """The writes of the user's first two messages: the login (profile, account, sealed
    token), then the offer menu with the form's first answer."""
    session = {
        "stage": OFFER_MENU,
        "option": OFFER_MENU,
        "direction": "OUT",
        "menu": ["handle_action_menu"],
        "context": {},
    }
    critical = {"member": MEMBER, "accounts": ACCOUNTS, "current_account_id": CURRENT_ACCOUNT}
    form = {
        "name": FORM_NAME,
        "required": FORM_FIELDS,
        "values": {"amount": "100", "denomination": "USD"},
    }
    menu = {**session, "stage": "handle_action_menu", "option": None, "menu": []}
    login: dict[str, bytes | None] = {
        "user": _encode(critical),
        "session": _encode(menu),
        "token": Fernet(token_key).encrypt(jwt().encode()),
    }
    offer: dict[str, bytes | None] = {"session": _encode(session), "form": _encode(form)}
    return [login, offer]


def changed(parts: Mapping[str, bytes | None], k: int) -> dict[str, bytes | None]:
    """The realistic message's three changes (navigation, context, a form answer) on the
    decoded parts; what to write. The profile is decoded too: a handler reads it."""
    _decode(parts["user"] or b"{}")
    session = _decode(parts["session"] or b'{"menu": [], "context": {}}')
    if k % 2 == 0:
        session["menu"].append(session["stage"])
        session["stage"] = session["option"] = OFFER_STEP
    else:
        session["stage"] = session["option"] = session["menu"].pop()
    answer = ANSWERS[k % 2]
    session["context"]["last_input"] = answer
    changes: dict[str, bytes | None] = {"session": _encode(session)}
    if parts["form"] is not None:
        form = _decode(parts["form"])
        form["values"]["recipient"] = answer
        changes["form"] = _encode(form)
    return changes


def _ok(begun: Begun) -> Begun:
    if begun.status != "ok":
        raise RuntimeError(f"the floor's begin answered {begun.status}")
    return begun


def log_in(floor: Floor, digits: str, token_key: str) -> None:
    for n, changes in enumerate(logged_in_parts(token_key)):
        floor.commit(_ok(floor.begin(digits, message_id(n))), changes)


class FloorMessages(RoundRobin):
    """Realistic messages on the floor, blocking (``phones`` are digits)."""

    def __init__(self, floor: Floor, phones: list[str]) -> None:
        super().__init__(phones)
        self.floor = floor

    def one(self) -> None:
        digits, n, k = self.next()
        begun = _ok(self.floor.begin(digits, message_id(n)))
        try:
            changes = changed(begun.parts, k)
        except BaseException:  # the handler failed: nothing is stored, the user is freed
            self.floor.release(begun)
            raise
        if self.floor.commit(begun, changes) != "ok":
            raise RuntimeError("the floor's commit lost its lease")


class AsyncFloorMessages(RoundRobin):
    """The same on an AsyncFloor."""

    def __init__(self, floor: AsyncFloor, phones: list[str]) -> None:
        super().__init__(phones)
        self.floor = floor

    async def one(self) -> None:
        digits, n, k = self.next()
        begun = _ok(await self.floor.begin(digits, message_id(n)))
        try:
            changes = changed(begun.parts, k)
        except BaseException:
            await self.floor.release(begun)
            raise
        if await self.floor.commit(begun, changes) != "ok":
            raise RuntimeError("the floor's commit lost its lease")
