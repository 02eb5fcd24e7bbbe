"""The redis-cluster backend's client and errors: configuration, bounded failures, and which
cluster errors are retried. Only the last test needs a cluster; the rest need no server, so
they are marked `cluster` (run with the cluster tests) but not `redis`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import fakes
import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis_servers import free_port

from vimbiso_state.adapters.redis import RetryPolicy, connect_cluster
from vimbiso_state.adapters.redis.aio import connect_async, discovered
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import ConfigurationError, StateError, StateUnavailable

pytestmark = pytest.mark.cluster


def _discovery_failed(cause: Exception) -> RedisClusterException:
    """What a cluster client raises when its only attempt to read the slot map failed."""
    error = RedisClusterException(f"Redis Cluster cannot be connected. ...: {cause}")
    error.__cause__ = cause
    return error


# What RedisCluster raises while a failover or a resharding is under way. Each is answered
# (or detected) before the command ran, and redis-py refreshes its slot map before raising.
TRANSIENT = [
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    MasterDownError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
    TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    SlotNotCoveredError('Slot "42" not covered by the cluster.'),
    ClusterError("TTL exhausted."),
    redis.ConnectionError("Connection refused"),
    redis.TimeoutError("Timeout reading from socket"),
    # Not a RedisError, and sent nothing: a discovery whose one connection timed out.
    _discovery_failed(redis.TimeoutError("Timeout connecting to server")),
]


def _failing(errors: list[Exception], value: str = "done") -> tuple[list[int], Callable[[], str]]:
    calls = [0]

    def operation() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return value

    return calls, operation


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_cluster_transient_errors_are_retried(error: Exception) -> None:
    calls, operation = _failing([error, error])
    assert RetryPolicy(retries=2, backoff=0).call(operation) == "done"
    assert calls[0] == 3


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_cluster_transient_errors_past_the_retries_are_unavailable(error: Exception) -> None:
    calls, operation = _failing([error] * 5)
    with pytest.raises(StateUnavailable):
        RetryPolicy(retries=2, backoff=0).call(operation)
    assert calls[0] == 3


def test_no_reachable_node_is_unavailable_not_a_crash() -> None:
    # RedisClusterException is not a RedisError: it must not escape as a raw exception.
    _, operation = _failing([RedisClusterException("Redis Cluster cannot be connected.")])
    with pytest.raises(StateUnavailable, match="Cluster"):
        RetryPolicy(retries=2, backoff=0).call(operation)


def test_cross_slot_is_a_bug_not_an_outage() -> None:
    calls, operation = _failing([ClusterCrossSlotError("CROSSSLOT Keys in request don't hash")])
    with pytest.raises(StateError) as raised:
        RetryPolicy(retries=2, backoff=0).call(operation)
    assert not isinstance(raised.value, StateUnavailable)
    assert calls[0] == 1


def test_settings_accept_a_cluster_and_refuse_what_it_cannot_use() -> None:
    settings = Settings.from_env(
        {"STATE_BACKEND": "redis-cluster", "REDIS_STATE_URL": "redis://10.0.0.7:7000"}
    )
    assert settings.backend == "redis-cluster"
    Settings(backend="redis-cluster", redis_url="rediss://user:pw@node-1:6380/0")
    with pytest.raises(ConfigurationError, match="database 0"):
        Settings(backend="redis-cluster", redis_url="redis://127.0.0.1:7000/1")
    with pytest.raises(ConfigurationError, match="node address"):
        Settings(backend="redis-cluster", redis_url="unix:///run/redis.sock")


@pytest.fixture
def hung_node() -> Iterator[str]:
    """Accepts connections and never answers: a stalled node."""
    with fakes.hung_server() as address:
        yield f"redis://{address}"


def test_a_refused_node_fails_fast() -> None:
    container = Container.from_settings(
        Settings(
            backend="redis-cluster",
            redis_url=f"redis://127.0.0.1:{free_port()}",
            token_keys=(fakes.TOKEN_KEY,),
        )
    )
    began = time.monotonic()
    with pytest.raises(StateUnavailable, match="could not be reached"):
        container.state_service()
    assert time.monotonic() - began < 0.5


def test_a_hung_node_fails_within_the_socket_timeout(hung_node: str) -> None:
    began = time.monotonic()
    with pytest.raises(StateUnavailable):
        connect_cluster(hung_node, socket_timeout=0.3, connect_timeout=0.2)
    assert time.monotonic() - began < 1.0


def test_the_client_has_short_timeouts_and_no_retries_of_its_own(cluster_url: str) -> None:
    client = connect_cluster(cluster_url, socket_timeout=0.4, connect_timeout=0.3)
    try:
        assert isinstance(client, RedisCluster)
        assert client.retry.get_retries() == 0  # RetryPolicy is the only retry loop
        assert len(client.get_primaries()) >= 3  # found every master from one address
        for node in client.get_nodes():
            assert node.redis_connection is not None
            pool = node.redis_connection.connection_pool
            assert pool.connection_kwargs["socket_timeout"] == 0.4
            assert pool.connection_kwargs["socket_connect_timeout"] == 0.3
            assert pool.connection_kwargs["retry"].get_retries() == 0
    finally:
        client.close()


FIRST_CALLS = 64


async def _first_calls_at_once(client: object) -> int:
    """FIRST_CALLS coroutines make a new client's first command at the same moment, each after
    ``discovered``; how many of them failed."""
    assert isinstance(client, AsyncRedisCluster)

    async def first(n: int) -> bool:
        try:
            await discovered(client)
            await client.get(f"test:first-call:{{{n}}}")
            return True
        except Exception:
            return False

    try:
        outcomes = await asyncio.gather(*(first(n) for n in range(FIRST_CALLS)))
    finally:
        await client.aclose()
    return outcomes.count(False)


def test_first_commands_made_at_once_all_succeed_after_one_discovery(cluster_url: str) -> None:
    for _ in range(3):
        assert asyncio.run(_first_calls_at_once(connect_async(cluster_url, cluster=True))) == 0


def test_a_new_asyncio_service_s_first_messages_made_at_once_all_succeed(
    cluster_url: str, new_phones: Callable[[int], list[str]]
) -> None:
    """What a freshly started asyncio worker sees: its first messages, all at once, each
    handled. (redis-py 8.1.0's asyncio cluster client failed 1 to 64 of such first commands
    with ConnectionError or AttributeError unless its slot map was read once first.)"""

    async def first_messages(phones: list[str]) -> list[str]:
        container = Container.from_settings(
            Settings(backend="redis-cluster", redis_url=cluster_url, token_keys=(fakes.TOKEN_KEY,))
        )
        state = container.async_state_service()

        async def handle(phone: str) -> str:
            try:
                async with state.message(phone, "wamid.first") as msg:
                    return "duplicate" if msg.duplicate else "handled"
            except Exception as exc:
                return repr(exc)

        try:
            outcomes = await asyncio.gather(*(handle(p) for p in phones))
            for phone in phones:
                await state.reset(phone)
            return outcomes
        finally:
            await container.aclose()

    for _ in range(3):
        outcomes = asyncio.run(first_messages(new_phones(FIRST_CALLS)))
        assert outcomes == ["handled"] * len(outcomes)


def test_first_waits_made_at_once_all_succeed(
    cluster_url: str, new_phones: Callable[[int], list[str]]
) -> None:
    """A message waits on a second asyncio cluster client (the waits client, with its long
    socket timeout); it must be discovered once like the first, or a process's first waits
    made at once fail as above (AttributeError from inside redis-py, seen on 8.1.0)."""

    async def first_waits(phones: list[str]) -> list[str]:
        container = Container.from_settings(
            Settings(backend="redis-cluster", redis_url=cluster_url, token_keys=(fakes.TOKEN_KEY,))
        )
        state = container.async_state_service()

        async def hold(phone: str, holding: asyncio.Event) -> None:
            async with state.message(phone, "wamid.holder"):
                holding.set()
                await asyncio.sleep(0.2)

        async def wait(phone: str) -> str:
            try:
                async with state.message(phone, "wamid.waiter") as msg:
                    return "duplicate" if msg.duplicate else "handled"
            except Exception as exc:
                return repr(exc)

        try:
            held = [asyncio.Event() for _ in phones]
            holders = [asyncio.create_task(hold(p, h)) for p, h in zip(phones, held, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(h.wait() for h in held)), 5)
            outcomes = await asyncio.gather(*(wait(p) for p in phones))
            await asyncio.gather(*holders)
            for phone in phones:
                await state.reset(phone)
            return outcomes
        finally:
            await container.aclose()

    for _ in range(3):
        outcomes = asyncio.run(first_waits(new_phones(FIRST_CALLS // 2)))
        assert outcomes == ["handled"] * len(outcomes)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_node_that_stalls_on_first_contact_costs_a_retry_not_the_message(
    kind: str, cluster_url: str, new_phones: Callable[[int], list[str]]
) -> None:
    """Both clients read the slot map before their first call: the sync one when built, the
    asyncio one on its first call. When that first connection to the node they were given
    stalls (a loaded host), they retry as after any timeout."""
    (phone,) = new_phones(1)
    with fakes.stalls_once(urlsplit(cluster_url).netloc) as front:
        settings = Settings(
            backend="redis-cluster", redis_url=f"redis://{front}", token_keys=(fakes.TOKEN_KEY,)
        )
        container = Container.from_settings(settings)
        if kind == "sync":
            try:
                stored = container.state_service().update(phone, lambda c: c.context.update(n=1))
            finally:
                container.close()
            assert stored.context == {"n": 1}
            return
        container.clock.override(fakes.FakeClock())  # so the asyncio client connects first

        async def first_message() -> dict[str, object]:
            state = container.async_state_service()
            try:
                stored = await state.update(phone, lambda c: c.context.update(n=1))
                return stored.context
            finally:
                await container.aclose()

        assert asyncio.run(first_message()) == {"n": 1}
