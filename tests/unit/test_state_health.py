"""state.health(): facts about a store that can serve, StateUnavailable within 2 s otherwise.

The memory backend, a refused port and a hung server need no Redis; tests/integration has
the real server's facts and failures.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fakes import TOKEN_KEY, hung_server
from redis_servers import free_port

from vimbiso_state import ConfigurationError, Container, StateService, StateUnavailable
from vimbiso_state.adapters.clock import SystemClock
from vimbiso_state.adapters.memory import MemoryConversationRepository, MemoryTokenRepository
from vimbiso_state.adapters.redis.health import ServerFacts, ServerReading, store_health
from vimbiso_state.domain.health import HEALTH_DEADLINE, StoreHealth
from vimbiso_state.domain.timeouts import Timeouts


def _container(**config: object) -> Container:
    container = Container()
    container.config.from_dict({"token_keys": TOKEN_KEY, **config})
    return container


def test_memory_health_counts_the_users_held() -> None:
    container = _container(backend="memory")
    state = container.state_service()
    assert state.health() == StoreHealth(backend="memory", users=0)
    state.start("+263771234567")
    state.start("+263771234568")
    facts = state.health()
    assert facts.backend == "memory" and facts.users == 2
    assert facts.server_version is None and facts.latency_ms is None
    assert facts.as_dict()["users"] == 2


def test_memory_health_asyncio_sees_the_same_store() -> None:
    container = _container(backend="memory")
    container.state_service().start("+263771234567")

    async def main() -> StoreHealth:
        return await container.async_state_service().health()

    assert asyncio.run(main()) == StoreHealth(backend="memory", users=1)


def test_a_service_built_by_hand_without_a_probe_says_so() -> None:
    clock, timeouts = SystemClock(), Timeouts()
    tokens = MemoryTokenRepository(clock)
    conversations = MemoryConversationRepository(clock, timeouts, tokens)
    state = StateService(conversations, tokens, clock, timeouts, cipher=None)
    with pytest.raises(ConfigurationError, match="health probe"):
        state.health()


def _refused() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_a_refused_port_is_unavailable_at_once() -> None:
    container = _container(backend="redis", redis_url=_refused())
    state = container.state_service()
    started = time.monotonic()
    with pytest.raises(StateUnavailable, match="unreachable"):
        state.health()
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("socket_timeout", [0.5, 30.0])
@pytest.mark.slow
def test_a_hung_server_is_unavailable_within_two_seconds(socket_timeout: float) -> None:
    """Whatever the configured socket timeout: health() has its own, shorter one."""
    with hung_server() as address:
        container = _container(
            backend="redis",
            redis_url=f"redis://{address}/0",
            socket_timeout=socket_timeout,
            connect_timeout=5.0,
        )
        try:
            state = container.state_service()
            started = time.monotonic()
            with pytest.raises(StateUnavailable):
                state.health()
            elapsed = time.monotonic() - started
        finally:
            container.close()
    assert elapsed < HEALTH_DEADLINE, elapsed


@pytest.mark.slow
def test_a_hung_server_is_unavailable_within_two_seconds_asyncio() -> None:
    with hung_server() as address:
        container = _container(
            backend="redis", redis_url=f"redis://{address}/0", socket_timeout=30.0
        )

        async def main() -> float:
            state = container.async_state_service()
            started = time.monotonic()
            try:
                with pytest.raises(StateUnavailable):
                    await state.health()
                return time.monotonic() - started
            finally:
                await container.aclose()

        elapsed = asyncio.run(main())
    assert elapsed < HEALTH_DEADLINE, elapsed


def test_a_refused_port_is_unavailable_asyncio() -> None:
    container = _container(backend="redis", redis_url=_refused())

    async def main() -> None:
        try:
            with pytest.raises(StateUnavailable, match="unreachable"):
                await container.async_state_service().health()
        finally:
            await container.aclose()

    asyncio.run(main())


def _facts(version: str, policy: str, used: int, limit: int) -> ServerFacts:
    return ServerFacts(version, "cluster", "master", used, limit, policy)


def test_a_clusters_facts_are_the_worst_of_its_primaries() -> None:
    readings = [
        ServerReading(_facts("7.2.4", "noeviction", 100, 1000), 0.2),
        ServerReading(_facts("7.0.15", "noeviction", 300, 2000), 0.9),
    ]
    facts = store_health("redis-cluster", readings)
    assert facts == StoreHealth(
        backend="redis-cluster",
        servers=2,
        server_version="7.0.15",
        maxmemory_policy="noeviction",
        used_memory=400,
        maxmemory=3000,
        evicts_state=False,
        latency_ms=0.9,
    )
    unbounded = [*readings, ServerReading(_facts("7.2.4", "allkeys-lru", 5, 0), 0.1)]
    facts = store_health("redis-cluster", unbounded)
    assert facts.maxmemory == 0 and facts.evicts_state is True
    assert facts.maxmemory_policy == "allkeys-lru,noeviction"
