"""Read-only views of the keyspace for operators' tools: one user's keys, and SCAN statistics.

Nothing here writes, and nothing here is on the bot's path: ``vimbiso-state inspect`` and
``stats`` use it. SCAN walks the keyspace in small batches, so it never blocks the server the
way KEYS would; MEMORY USAGE is asked for a bounded sample of users only.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from vimbiso_state.adapters.redis.connection import RetryPolicy
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.domain.phone import PhoneNumber

KINDS = ("user", "session", "form", "handled", "token", "lease")
# A message's lease comes with two helper keys while others wait for it: one lease.
_COUNTED_AS = {"waiters": "lease", "wake": "lease"}


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
    keys = KeySchema().for_user(phone)
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
class KeyspaceStats:
    """What ``stats`` reports. Counts come from SCAN, so they are a snapshot, not a census
    (a key created or expired during the walk may or may not be counted)."""

    scanned: int = 0
    by_kind: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*KINDS, "effects", "other"), 0)
    )
    sampled: int = 0  # users whose keys were measured with MEMORY USAGE
    sampled_bytes: int = 0
    memory_problem: str = ""  # why memory could not be measured, if it could not

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


def nodes(client: Any) -> list[tuple[str, redis.Redis]]:
    """The servers to walk: the client itself, or every primary of a cluster."""
    primaries = getattr(client, "get_primaries", None)
    if primaries is None:
        return [("", client)]
    return [(node.name, client.get_redis_connection(node)) for node in primaries()]


def keyspace_stats(
    client: Any,
    *,
    retry: RetryPolicy | None = None,
    batch: int = 1000,
    sample: int = 200,
    progress: Progress | None = None,
    rng: random.Random | None = None,
) -> KeyspaceStats:
    """Walk the keyspace with SCAN, count keys by kind and measure a sample of users."""
    policy = retry or RetryPolicy()
    schema = KeySchema()
    chooser = rng or random.Random()
    stats = KeyspaceStats()
    servers = nodes(client)
    total = sum(int(policy.call(server.dbsize)) for _, server in servers)
    chosen: list[tuple[redis.Redis, str]] = []  # reservoir sample of (server, digits)
    seen_users = 0
    if progress:
        progress(0, total)
    for _, server in servers:
        for keys in _scan(server, policy, batch):
            for key in keys:
                stats.scanned += 1
                parsed = schema.parse(key)
                if parsed is None:
                    stats.by_kind["other"] += 1
                    continue
                kind, digits = parsed
                stats.by_kind[_COUNTED_AS.get(kind, kind)] += 1
                if kind == "user":
                    seen_users += 1
                    if len(chosen) < sample:
                        chosen.append((server, digits))
                    else:
                        slot = chooser.randrange(seen_users)
                        if slot < sample:
                            chosen[slot] = (server, digits)
            if progress:
                progress(stats.scanned, max(total, stats.scanned))
    _measure(stats, chosen, policy)
    return stats


def _scan(server: redis.Redis, policy: RetryPolicy, batch: int) -> Iterator[list[bytes | str]]:
    cursor = 0

    def step(at: int) -> Callable[[], Any]:
        return lambda: server.scan(at, count=batch)

    while True:
        cursor, keys = policy.call(step(cursor))
        yield list(keys)
        if int(cursor) == 0:
            return


def _measure(
    stats: KeyspaceStats, chosen: list[tuple[redis.Redis, str]], policy: RetryPolicy
) -> None:
    schema = KeySchema()
    for server, digits in chosen:
        keys = schema.for_user(PhoneNumber(digits)).all

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
