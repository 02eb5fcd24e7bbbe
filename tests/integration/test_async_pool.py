"""The asyncio client's connection pool under more coroutines than connections.

A coroutine that releases a connection and at once asks for another must queue behind the
coroutines already waiting; otherwise they starve past the pool timeout and fail with
"No connection available." although the server answers every command at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from vimbiso_state.adapters.redis.aio import FairBlockingConnectionPool, connect_async

COROUTINES = 32
CONNECTIONS = 2
POOL_TIMEOUT = 0.3
SECONDS = 1.5


def test_coroutines_outnumbering_connections_all_get_turns_within_the_pool_timeout(
    redis_url: str,
) -> None:
    """32 coroutines in tight loops of GET on a 2-connection pool for 1.5 s: no call fails and
    every coroutine completes calls throughout, not only at the start."""

    async def scenario() -> list[tuple[int, int]]:
        client = connect_async(redis_url, max_connections=CONNECTIONS, pool_timeout=POOL_TIMEOUT)
        key = f"test:async-pool:{time.monotonic_ns()}"
        halfway = time.monotonic() + SECONDS / 2
        stop = halfway + SECONDS / 2

        async def loop() -> tuple[int, int]:
            early = late = 0
            while (now := time.monotonic()) < stop:
                await client.get(key)
                if now < halfway:
                    early += 1
                else:
                    late += 1
            return early, late

        try:
            return await asyncio.gather(*(loop() for _ in range(COROUTINES)))
        finally:
            await client.aclose()

    started = time.monotonic()
    counts = asyncio.run(scenario())
    assert time.monotonic() - started < SECONDS + 1
    starved = [n for n, (early, late) in enumerate(counts) if early < 5 or late < 5]
    assert not starved, f"coroutines {starved} barely ran: {counts}"


def test_releasing_a_connection_twice_gives_back_one_turn(redis_url: str) -> None:
    """A second release of the same connection is refused by redis-py and returns no second
    turn: the pool never hands out more turns than it has connections."""

    async def scenario() -> None:
        client = connect_async(redis_url, max_connections=2, pool_timeout=POOL_TIMEOUT)
        pool = client.connection_pool
        assert isinstance(pool, FairBlockingConnectionPool)
        try:
            connection = await pool.get_connection()
            assert pool._turns._value == 1
            await pool.release(connection)
            with pytest.raises(KeyError):
                await pool.release(connection)
            assert pool._turns._value == 2 and not pool._on_turn
            assert await client.ping()
        finally:
            await client.aclose()

    asyncio.run(scenario())
