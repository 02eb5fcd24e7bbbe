"""The asyncio pool's turns (adapters/redis/aio.py FairBlockingConnectionPool) without a
server: a connect that fails or is cancelled gives back the turn it took.

With one connection and a lost turn, the next caller would wait out the pool timeout and get
"No connection available." instead of trying the server.
"""

from __future__ import annotations

import asyncio

import fakes
import pytest
import redis.exceptions

from vimbiso_state.adapters.redis.aio import FairBlockingConnectionPool, connect_async


def _pool(url: str, socket_timeout: float = 0.5) -> FairBlockingConnectionPool:
    client = connect_async(url, socket_timeout=socket_timeout, max_connections=1, pool_timeout=0.2)
    pool = client.connection_pool
    assert isinstance(pool, FairBlockingConnectionPool)
    return pool


def test_refused_connects_give_their_turns_back() -> None:
    pool = _pool(f"redis://127.0.0.1:{fakes.free_port()}/0")

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(redis.exceptions.ConnectionError) as failure:
                await pool.get_connection()
            # Refused by the port each time, never turned away by the pool.
            assert "No connection available" not in str(failure.value)
        assert pool._turns._value == 1 and not pool._on_turn
        await pool.aclose()

    asyncio.run(scenario())


def test_a_connect_cancelled_mid_handshake_gives_its_turn_back() -> None:
    with fakes.hung_server() as address:
        pool = _pool(f"redis://{address}/0", socket_timeout=0.3)

        async def scenario() -> None:
            stuck = asyncio.create_task(pool.get_connection())
            await asyncio.sleep(0.05)
            assert pool._turns._value == 0
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            assert pool._turns._value == 1
            # The next caller reaches the (silent) server and times out reading its reply.
            with pytest.raises(redis.exceptions.TimeoutError):
                await pool.get_connection()
            assert pool._turns._value == 1 and not pool._on_turn
            await pool.aclose()

        asyncio.run(scenario())
