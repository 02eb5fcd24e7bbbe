"""What one user costs in Redis: every key of theirs, found by pattern (SCAN), so that the
measurement follows the library's key layout wherever it goes; and what a message changed in
those keys, for the AOF comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

Value = tuple[str, Any]  # (Redis type, contents)


def user_pattern(digits: str) -> str:
    """Every key of this library's user: the phone's hash tag is in each of them."""
    return f"*{{{digits}}}*"


def keys_of(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000))


@dataclass(frozen=True)
class KeyCost:
    key: str
    kind: str  # Redis type
    encoding: str
    bytes: int  # MEMORY USAGE key SAMPLES 0
    entries: int  # members of a set, zset or hash; 1 for a string


def key_costs(client: redis.Redis, keys: Iterable[bytes]) -> list[KeyCost]:
    costs = []
    for key in keys:
        kind = _text(client.type(key))
        entries = {"zset": client.zcard, "hash": client.hlen, "set": client.scard}.get(
            kind, lambda _: 1
        )(key)
        costs.append(
            KeyCost(
                _text(key),
                kind,
                _text(client.object("encoding", key)),
                int(client.memory_usage(key, samples=0) or 0),
                int(entries),
            )
        )
    return costs


def describe(costs: list[KeyCost]) -> str:
    """``user:{p}:state 1,864 B, ...``: each key with its bytes, and its encoding and entries
    for the non-string ones."""
    parts = []
    for cost in costs:
        extra = f" ({cost.kind} {cost.encoding}, {cost.entries})" if cost.kind != "string" else ""
        parts.append(f"{cost.key} {cost.bytes:,}{extra}")
    return "; ".join(parts)


def snapshot(client: redis.Redis, pattern: str) -> dict[bytes, Value]:
    """The contents of every key matching ``pattern`` (reads only: nothing reaches the AOF)."""
    found: dict[bytes, Value] = {}
    for key in keys_of(client, pattern):
        kind = _text(client.type(key))
        reader = {
            "string": client.get,
            "hash": client.hgetall,
            "zset": lambda k: dict(client.zrange(k, 0, -1, withscores=True)),
            "set": client.smembers,
            "list": lambda k: client.lrange(k, 0, -1),
        }[kind]
        found[key] = (kind, reader(key))
    return found


def changed_bytes(before: dict[bytes, Value], after: dict[bytes, Value]) -> tuple[int, int]:
    """The bytes a message changed in a user's keys, two ways.

    First, its content: the whole value of a string whose text changed (a JSON document is
    rewritten whole), only the differing digits of a string whose only change is in its
    numbers (a last-seen time, a version: bookkeeping, not content), and new or changed
    members and fields of sets, sorted sets and hashes with their values. Second, for
    reference, the whole value of every string that differs at all. Deletions write no data
    and count 0, as does a key made and deleted between the two snapshots (a lease).
    """
    content = whole = 0
    for key, (kind, new) in after.items():
        old_kind, old = before.get(key, (kind, None))
        if old_kind != kind:
            old = None
        if kind == "string":
            if new != old:
                content += _string_change(old, new)
                whole += len(new)
            continue
        added = _added_bytes(kind, old, new)
        content += added
        whole += added
    return content, whole


_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def _string_change(old: bytes | None, new: bytes) -> int:
    if old is None or old.translate(_DIGITS) != new.translate(_DIGITS):
        return len(new)
    return sum(a != b for a, b in zip(old, new, strict=True))


def _added_bytes(kind: str, old: Any, new: Any) -> int:
    if kind in ("hash", "zset"):
        old = old or {}
        return sum(
            len(name) + len(_as_bytes(value))
            for name, value in new.items()
            if old.get(name) != value
        )
    if kind == "set":
        return sum(len(member) for member in new - (old or set()))
    old = old or []
    same = 0
    while same < min(len(old), len(new)) and old[same] == new[same]:
        same += 1
    return sum(len(item) for item in new[same:])


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else repr(value).encode()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
