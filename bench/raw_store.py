"""The baseline: raw redis-py GET and SET of the same bytes a message of the library reads
(every string value of the user: conversation and token), under a key of their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import cycle

import redis
import redis.asyncio
from harness import digits
from user_bytes import keys_of, user_pattern

TTL_MS = 300_000


def raw_key(phone: str) -> str:
    # Not the user's hash tag: the user's own keys are found by it (user_bytes.user_pattern).
    return f"bench:raw:{digits(phone)}"


def copy_user(client: redis.Redis, phone: str) -> int:
    """Store the user's string values, joined, under the raw key; their size in bytes."""
    values = [
        client.get(key)
        for key in keys_of(client, user_pattern(digits(phone)))
        if client.type(key) == b"string"
    ]
    value = b"".join(v for v in values if v is not None)
    client.set(raw_key(phone), value, px=TTL_MS)
    return len(value)


def get_set(client: redis.Redis, phones: list[str]) -> Callable[[], None]:
    """One raw message: GET the value, SET it back (round robin over the users' raw keys)."""
    keys = cycle([raw_key(p) for p in phones])

    def message() -> None:
        key = next(keys)
        client.set(key, client.get(key) or b"", px=TTL_MS)

    return message


def async_get_set(client: redis.asyncio.Redis, phones: list[str]) -> Callable[[], Awaitable[None]]:
    """The same on redis.asyncio."""
    keys = cycle([raw_key(p) for p in phones])

    async def message() -> None:
        key = next(keys)
        await client.set(key, await client.get(key) or b"", px=TTL_MS)

    return message
