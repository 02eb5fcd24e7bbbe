"""The asyncio client ``connect_async`` builds (redis-py's stock asyncio
BlockingConnectionPool): under more coroutines than connections every coroutine gets turns,
none fails although the server answers every command at once, and no caller ever reads a
reply meant for another."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import Any

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


async def _checkout(pool: Any) -> Any:
    """``pool.get_connection()`` as every supported redis-py spells it: before 5.3 it requires
    a command name, from 5.3 on passing one is deprecated."""
    name = inspect.signature(pool.get_connection).parameters.get("command_name")
    if name is not None and name.default is inspect.Parameter.empty:
        return await pool.get_connection("PING")
    return await pool.get_connection()


def test_a_reply_left_unread_never_reaches_the_next_caller(redis_url: str) -> None:
    """A reply left on a pooled connection (its caller was cancelled, or sent and gave up)
    is never read by the next caller as its own. (redis-py 8.1.0's pool skipped this check on
    RESP3, which is why every client of the library speaks RESP2.)"""
    key = f"test:async-pool:mine:{time.monotonic_ns()}"

    async def scenario() -> tuple[Any, Any]:
        client = connect_async(redis_url, max_connections=1, socket_timeout=2)
        try:
            await client.set(key, b"mine")
            pool = client.connection_pool
            connection = await _checkout(pool)
            await connection.send_command("ECHO", "someone else's reply")
            await asyncio.sleep(0.05)  # the reply is on the socket, unread
            await pool.release(connection)
            after_unread = await client.get(key)
            # A caller cancelled while its reply is on the way.
            waiting = asyncio.create_task(client.blpop([f"{key}:list"], timeout=0.2))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.3)  # BLPOP's nil reply has arrived by now
            return after_unread, await client.get(key)
        finally:
            await close_async(client)

    assert asyncio.run(scenario()) == (b"mine", b"mine")
