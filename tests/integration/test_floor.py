"""The benchmark's semantic floor (bench/floor.py) keeps the promises it is the yardstick of:
one holder at a time, duplicates refused, stale holders fenced off, the last 128 ids kept."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio
from cryptography.fernet import Fernet
from redis_servers import RedisProcess

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import floor

DIGITS = "263771234567"
CHANGE = {"session": b'{"stage": "a"}', "form": b'{"values": {}}'}


@pytest.fixture
def client(private_redis: RedisProcess) -> redis.Redis:
    return private_redis.client()


@pytest.fixture
def store(client: redis.Redis) -> floor.Floor:
    return floor.Floor(client)


def _values(client: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key with its serialized value (DUMP): what a write would change."""
    return {key: client.dump(key) for key in client.scan_iter(match=f"*{{{DIGITS}}}*")}


def test_a_second_holder_is_refused_while_the_first_holds_the_user(store: floor.Floor) -> None:
    first = store.begin(DIGITS, "wamid.1")
    second = store.begin(DIGITS, "wamid.2")
    assert (first.status, second.status) == ("ok", "busy")
    assert 0 < second.busy_ms <= floor.LEASE_MS
    assert store.commit(first, CHANGE) == "ok"
    assert store.begin(DIGITS, "wamid.2").status == "ok"


def test_concurrent_begins_hold_the_user_once(private_redis: RedisProcess) -> None:
    stores = [floor.Floor(private_redis.client()) for _ in range(8)]
    start = threading.Barrier(len(stores))
    found: list[str] = []

    def begin(n: int) -> None:
        start.wait()
        found.append(stores[n].begin(DIGITS, f"wamid.{n}").status)

    threads = [threading.Thread(target=begin, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(found) == ["busy"] * 7 + ["ok"]


def test_a_duplicate_is_reported_and_writes_nothing(
    store: floor.Floor, client: redis.Redis
) -> None:
    assert store.commit(store.begin(DIGITS, "wamid.1"), CHANGE) == "ok"
    before = _values(client)
    again = store.begin(DIGITS, "wamid.1")
    assert again.status == "duplicate"
    assert _values(client) == before  # no lease taken, nothing read back into a write
    assert store.begin(DIGITS, "wamid.2").status == "ok"


def test_a_stale_holder_whose_lease_was_taken_cannot_commit(
    store: floor.Floor, client: redis.Redis
) -> None:
    stale = store.begin(DIGITS, "wamid.1", lease_ms=50)
    time.sleep(0.1)
    fresh = store.begin(DIGITS, "wamid.1")
    assert fresh.status == "ok" and fresh.fence > stale.fence
    assert store.commit(stale, CHANGE) == "lease_lost"
    assert _values(client).keys() == {f"lease:{{{DIGITS}}}".encode()}  # nothing written
    assert store.commit(fresh, CHANGE) == "ok"
    assert store.commit(stale, CHANGE) == "lease_lost"  # the id is recorded, not its fence


def test_a_retried_commit_is_applied_only_for_the_same_holder(
    store: floor.Floor, client: redis.Redis
) -> None:
    begun = store.begin(DIGITS, "wamid.1")
    assert store.commit(begun, CHANGE) == "ok"
    before = _values(client)
    assert store.commit(begun, {"session": b"another"}) == "applied"  # the reply was lost
    assert _values(client) == before
    other = store.begin(DIGITS, "wamid.2")
    assert store.commit(other, CHANGE) == "ok"
    assert store.commit(other, CHANGE) == "applied"


def test_the_handled_set_keeps_the_last_128_ids(store: floor.Floor, client: redis.Redis) -> None:
    for n in range(floor.KEPT_IDS + 1):
        assert store.commit(store.begin(DIGITS, f"wamid.{n}"), CHANGE) == "ok"
    handled = f"handled:{{{DIGITS}}}"
    assert client.zcard(handled) == floor.KEPT_IDS
    assert client.object("encoding", handled) == b"listpack"
    assert store.begin(DIGITS, f"wamid.{floor.KEPT_IDS}").status == "duplicate"  # the newest
    assert store.begin(DIGITS, "wamid.1").status == "duplicate"  # the oldest kept
    assert store.begin(DIGITS, "wamid.0").status == "ok"  # forgotten


def test_a_commit_makes_its_fence_the_version(store: floor.Floor) -> None:
    first = store.begin(DIGITS, "wamid.1")
    assert store.commit(first, CHANGE) == "ok"
    second = store.begin(DIGITS, "wamid.2")
    assert second.version == first.fence
    assert second.fence > first.fence


def test_a_released_holder_stores_nothing_and_frees_the_user(
    store: floor.Floor, client: redis.Redis
) -> None:
    begun = store.begin(DIGITS, "wamid.1")
    assert store.release(begun)
    assert _values(client) == {}
    assert store.commit(begun, CHANGE) == "lease_lost"
    assert store.begin(DIGITS, "wamid.1").status == "ok"


def test_the_realistic_message_writes_only_the_changed_parts_with_their_ttls(
    store: floor.Floor, client: redis.Redis
) -> None:
    key = Fernet.generate_key().decode()
    floor.log_in(store, DIGITS, key)
    keys = floor.UserKeys.of(DIGITS).parts
    before = {part: client.get(name) for part, name in keys.items()}
    floor.FloorMessages(store, [DIGITS]).one()
    after = {part: client.get(name) for part, name in keys.items()}
    assert [part for part in keys if before[part] != after[part]] == ["session", "form"]
    assert b'"last_input":"jane_doe"' in (after["session"] or b"")
    for part, name in keys.items():
        assert 0 < client.pttl(name) <= floor.TTL_MS[part] * 301 // 300
    assert client.exists(f"lease:{{{DIGITS}}}") == 0


def test_the_async_floor_keeps_the_same_promises(private_redis: RedisProcess) -> None:
    async def scenario() -> list[str]:
        client = redis.asyncio.Redis.from_url(private_redis.url)
        try:
            store = floor.AsyncFloor(client)
            first = await store.begin(DIGITS, "wamid.1")
            busy = await store.begin(DIGITS, "wamid.2")
            committed = await store.commit(first, CHANGE)
            duplicate = await store.begin(DIGITS, "wamid.1")
            return [first.status, busy.status, committed, duplicate.status]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == ["ok", "busy", "ok", "duplicate"]
