"""state.health() on a Redis Cluster: every primary is checked, sync and asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
from redis.cluster import RedisCluster

from vimbiso_state import Container
from vimbiso_state.domain.health import StoreHealth


def _primaries(url: str) -> list[redis.Redis]:
    cluster = RedisCluster.from_url(url)
    return [cluster.get_redis_connection(node) for node in cluster.get_primaries()]


def _expected(facts: StoreHealth, url: str) -> None:
    primaries = _primaries(url)
    infos = [primary.info() for primary in primaries]
    assert facts.backend == "redis-cluster" and facts.servers == len(primaries) == 3
    assert facts.server_version == min(i["redis_version"] for i in infos)
    assert facts.maxmemory_policy == "allkeys-lru" and facts.evicts_state is True
    assert facts.maxmemory == sum(int(i["maxmemory"]) for i in infos)
    assert facts.used_memory is not None and facts.used_memory > 0
    assert facts.latency_ms is not None and facts.latency_ms > 0


def test_health_checks_every_primary(
    cluster_url: str, cluster_container: Callable[..., Container]
) -> None:
    container = cluster_container(cluster_url)
    try:
        _expected(container.state_service().health(), cluster_url)
    finally:
        container.close()


def test_health_checks_every_primary_asyncio(
    cluster_url: str, cluster_container: Callable[..., Container]
) -> None:
    container = cluster_container(cluster_url)

    async def main() -> StoreHealth:
        try:
            return await container.async_state_service().health()
        finally:
            await container.aclose()

    _expected(asyncio.run(main()), cluster_url)
