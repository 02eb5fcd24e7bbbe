"""The asyncio client ``connect_async`` builds (redis-py's stock asyncio
BlockingConnectionPool) under more coroutines than connections: every coroutine gets turns,
none fails although the server answers every command at once."""

from __future__ import annotations

import asyncio
import time

from vimbiso_state.adapters.redis.aio import close_async, connect_async

COROUTINES = 32
CONNECTIONS = 2
POOL_TIMEOUT = 0.3
SECONDS = 1.5
THINK = 0.002


def test_coroutines_outnumbering_connections_all_get_turns_within_the_pool_timeout(
    redis_url: str,
) -> None:
    """32 coroutines, each a handler awaiting a GET between short awaits of its own (an HTTP
    call, a reply), on a 2-connection pool for 1.5 s: no call fails and every coroutine
    completes calls throughout, not only at the start."""

    async def scenario() -> list[tuple[int, int]]:
        client = connect_async(redis_url, max_connections=CONNECTIONS, pool_timeout=POOL_TIMEOUT)
        key = f"test:async-pool:{time.monotonic_ns()}"
        halfway = time.monotonic() + SECONDS / 2
        stop = halfway + SECONDS / 2

        async def loop() -> tuple[int, int]:
            early = late = 0
            while (now := time.monotonic()) < stop:
                await client.get(key)
                await asyncio.sleep(THINK)
                if now < halfway:
                    early += 1
                else:
                    late += 1
            return early, late

        try:
            return await asyncio.gather(*(loop() for _ in range(COROUTINES)))
        finally:
            await close_async(client)

    started = time.monotonic()
    counts = asyncio.run(scenario())
    assert time.monotonic() - started < SECONDS + 1
    starved = [n for n, (early, late) in enumerate(counts) if early < 5 or late < 5]
    assert not starved, f"coroutines {starved} barely ran: {counts}"
