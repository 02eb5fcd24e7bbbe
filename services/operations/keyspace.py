"""Read-only views of a Redis keyspace for operators' tools: one user's keys, and SCAN
statistics.

Nothing here writes, and nothing here is on the bot's path: ``vimbiso-state inspect`` and
``stats`` use it. SCAN walks the keyspace in small batches, so it never blocks the server the
way KEYS would; MEMORY USAGE is asked for a bounded sample of users only, and the funnel reads
the session and form of the users each batch found with one pipeline per batch.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from vimbiso_state.adapters import codec
from vimbiso_state.adapters.redis.connection import RetryPolicy, nodes
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.layout import read_session
from vimbiso_state.domain.conversation import Session, is_step
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.lifecycle import session_alive
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.timeouts import Timeouts

KINDS = ("user", "session", "form", "handled", "token", "lease")
# A message's lease comes with two helper keys while others wait for it: one lease.
_COUNTED_AS = {"waiters": "lease", "wake": "lease"}
_SCHEMA = KeySchema()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key of one user as Redis holds it now."""

    kind: str  # a UserKeys field: user, session, form, handled, token or lease
    name: str
    type: str  # hash, string, zset... or "none" when the key does not exist
    ttl_ms: int | None  # None: missing, or no TTL at all (see ``persistent``)
    persistent: bool = False  # exists without a TTL: never written like this by the library
    members: int | None = None  # handled ids in the sorted set

    @property
    def exists(self) -> bool:
        return self.type != "none"


def describe_user_keys(
    client: Any, phone: PhoneNumber, retry: RetryPolicy | None = None
) -> list[KeyInfo]:
    """Every key of this user (TYPE, PTTL and the handled-id count), in one round trip."""
    keys = _SCHEMA.for_user(phone)
    names = {kind: getattr(keys, kind) for kind in KINDS}

    def read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for name in names.values():
            pipe.type(name)
            pipe.pttl(name)
        pipe.zcard(keys.handled)
        return list(pipe.execute())

    replies = (retry or RetryPolicy()).call(read)
    found: list[KeyInfo] = []
    for index, (kind, name) in enumerate(names.items()):
        kind_of, pttl = _text(replies[2 * index]), int(replies[2 * index + 1])
        found.append(
            KeyInfo(
                kind=kind,
                name=name,
                type=kind_of,
                ttl_ms=pttl if pttl >= 0 else None,
                persistent=pttl == -1,
                members=int(replies[-1]) if kind == "handled" and kind_of != "none" else None,
            )
        )
    return found


@dataclass
class Funnel:
    """Where conversations stand, by the domain's deadlines at the server's time: known users
    by the stage of their live session, and forms still open by the first field they lack,
    in progress (the user's session is live) or abandoned (it expired mid-form)."""

    stages: Counter[str] = field(default_factory=Counter)
    without_session: int = 0  # known users whose session expired or is gone
    in_progress: Counter[tuple[str, str]] = field(default_factory=Counter)  # (form, field)
    abandoned: Counter[tuple[str, str]] = field(default_factory=Counter)
    unreadable: int = 0  # sessions or forms that could not be read (damaged, foreign)

    def count(self, session: bytes | None, form: bytes | None, now: datetime, t: Timeouts) -> None:
        """Count one known user from their stored session and form values."""
        live = self._session(session)
        alive = live is not None and session_alive(live, now, t)
        if alive:
            assert live is not None
            self.stages[live.stage] += 1
        else:
            self.without_session += 1
        open_form = self._form(form)
        if open_form is not None and not open_form.is_expired(now):
            missing = open_form.missing()
            # "" when every field is answered and the form awaits its completion.
            where = (open_form.name, missing[0] if missing else "")
            (self.in_progress if alive else self.abandoned)[where] += 1

    def _session(self, value: bytes | None) -> Session | None:
        if value is None:
            return None
        try:
            session = read_session(value)
        except codec.DecodeError:
            self.unreadable += 1
            return None
        if session.step_problem():  # never print a stored value that is not a step name
            self.unreadable += 1
            return None
        return session

    def _form(self, value: bytes | None) -> Form | None:
        if value is None:
            return None
        try:
            form = codec.decode(Form, value)
        except codec.DecodeError:
            self.unreadable += 1
            return None
        if not is_step(form.name) or not all(is_step(name) for name in form.required):
            self.unreadable += 1
            return None
        return form


@dataclass
class KeyspaceStats:
    """What ``stats`` reports. Counts come from SCAN, so they are a snapshot, not a census
    (a key created or expired during the walk may or may not be counted)."""

    scanned: int = 0
    by_kind: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*KINDS, "effects", "expiry", "other"), 0)
    )
    sampled: int = 0  # users whose keys were measured with MEMORY USAGE
    sampled_bytes: int = 0
    memory_problem: str = ""  # why memory could not be measured, if it could not
    funnel: Funnel | None = None  # when asked for (``timeouts`` and ``now``)

    @property
    def users(self) -> int:
        """Users with critical data (``user:{phone}:state``): known conversations."""
        return self.by_kind["user"]

    @property
    def active(self) -> int:
        """Users with a live session key: a message within the session timeout (+ grace)."""
        return self.by_kind["session"]

    @property
    def bytes_per_conversation(self) -> float | None:
        return self.sampled_bytes / self.sampled if self.sampled else None


Progress = Callable[[int, int], None]  # (keys scanned so far, keys in the database)


def keyspace_stats(
    client: Any,
    *,
    retry: RetryPolicy | None = None,
    batch: int = 1000,
    sample: int = 200,
    progress: Progress | None = None,
    rng: random.Random | None = None,
    timeouts: Timeouts | None = None,
    now: datetime | None = None,
) -> KeyspaceStats:
    """Walk the keyspace with SCAN, count keys by kind and measure a sample of users; with
    ``timeouts`` and ``now`` (the server's time), also where every known user stands."""
    policy = retry or RetryPolicy()
    stats = KeyspaceStats()
    funnel = None
    if timeouts is not None and now is not None:
        stats.funnel = funnel = Funnel()
    servers = nodes(client)
    total = sum(int(policy.call(server.dbsize)) for _, server in servers)
    chosen = _Sample(sample, rng or random.Random())
    if progress:
        progress(0, total)
    for _, server in servers:
        for keys in _scan(server, policy, batch):
            found = _count(stats, keys)  # the users of this batch
            for digits in found:
                chosen.offer((server, digits))
            if funnel is not None and found:
                assert timeouts is not None and now is not None
                for session, form in _documents(server, found, policy):
                    funnel.count(session, form, now, timeouts)
            if progress:
                progress(stats.scanned, max(total, stats.scanned))
    _measure(stats, chosen.taken, policy)
    return stats


class _Sample:
    """A uniform sample of ``size`` from a stream of unknown length (reservoir sampling)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self._size = size
        self._rng = rng
        self._seen = 0
        self.taken: list[tuple[redis.Redis, str]] = []

    def offer(self, item: tuple[redis.Redis, str]) -> None:
        self._seen += 1
        if len(self.taken) < self._size:
            self.taken.append(item)
        else:
            slot = self._rng.randrange(self._seen)
            if slot < self._size:
                self.taken[slot] = item


def _count(stats: KeyspaceStats, keys: list[bytes | str]) -> list[str]:
    """Count a batch of keys by kind; the phone digits of the users among them."""
    users = []
    for key in keys:
        stats.scanned += 1
        parsed = _SCHEMA.parse(key)
        if parsed is None:
            stats.by_kind["other"] += 1
            continue
        kind, digits = parsed
        stats.by_kind[_COUNTED_AS.get(kind, kind)] += 1
        if kind == "user":
            users.append(digits)
    return users


def _scan(server: redis.Redis, policy: RetryPolicy, batch: int) -> Iterator[list[bytes | str]]:
    cursor = 0

    def step(at: int) -> Callable[[], Any]:
        return lambda: server.scan(at, count=batch)

    while True:
        cursor, keys = policy.call(step(cursor))
        yield list(keys)
        if int(cursor) == 0:
            return


def _documents(
    server: redis.Redis, users: list[str], policy: RetryPolicy
) -> list[tuple[bytes | None, bytes | None]]:
    """The stored session and form values of ``users``: one pipeline of GETs (their keys
    share the user key's hash slot, so on a cluster this node holds them too)."""

    def read() -> list[Any]:
        pipe = server.pipeline(transaction=False)
        for digits in users:
            keys = _SCHEMA.for_user(PhoneNumber(digits))
            pipe.get(keys.session)
            pipe.get(keys.form)
        # A key of another type, or one that moved during resharding, reads as unreadable.
        return list(pipe.execute(raise_on_error=False))

    replies = [_value(reply) for reply in policy.call(read)]
    return list(zip(replies[0::2], replies[1::2], strict=True))


def _value(reply: object) -> bytes | None:
    if reply is None or isinstance(reply, bytes):
        return reply
    return b""  # an error in its place: counted as unreadable, never as missing


def _measure(
    stats: KeyspaceStats, chosen: list[tuple[redis.Redis, str]], policy: RetryPolicy
) -> None:
    for server, digits in chosen:
        keys = _SCHEMA.for_user(PhoneNumber(digits)).all

        def usage(server: redis.Redis = server, keys: list[str] = keys) -> list[Any]:
            pipe = server.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)
            return list(pipe.execute())

        try:
            sizes = policy.call(usage)
        except Exception as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if isinstance(cause, redis.exceptions.NoPermissionError):
                stats.memory_problem = "cannot read (ACL: MEMORY USAGE denied)"
                return
            if isinstance(cause, redis.exceptions.ResponseError):
                stats.memory_problem = f"cannot read ({str(cause).splitlines()[0]})"
                return
            raise
        stats.sampled += 1
        stats.sampled_bytes += sum(int(size) for size in sizes if size is not None)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
