"""Redis Cluster fixtures for tests/cluster (the shared three-master `cluster_url` lives in
tests/conftest.py, so that the contract suite in tests/contract can use it too).

replicated_cluster (function) three masters with one replica each, private to the test: it
                              may fail over, kill or restart nodes.
cluster_state      (function) a StateService on the shared cluster (`cluster_url`).
new_phones         (function) new_phones(n) gives n numbers nobody else uses.
cluster_container  (function) cluster_container(url, **settings) builds a Container on it.

Both mark their tests `redis` and `cluster` (tests/conftest.py's CLUSTER_FIXTURES).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

import pytest
from cryptography.fernet import Fernet
from redis_cluster import LocalCluster

from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

# A random block per run: the shared cluster may be $VIMBISO_STATE_TEST_CLUSTER_URL, used by
# earlier runs.
_phones = itertools.count(263_780_000_000 + random.randrange(0, 9_000_000, 100_000))


def _new_phones(count: int) -> list[str]:
    return [f"+{next(_phones)}" for _ in range(count)]


@pytest.fixture
def new_phones() -> Callable[[int], list[str]]:
    """new_phones(n): n numbers no other test (or earlier run) uses."""
    return _new_phones


def _cluster_container(url: str, **settings: object) -> Container:
    key = Fernet.generate_key().decode()
    return Container.from_settings(
        Settings(backend="redis-cluster", redis_url=url, token_keys=(key,)), **settings
    )


@pytest.fixture
def cluster_container() -> Callable[..., Container]:
    """cluster_container(url, **settings): a Container on the cluster of that node."""
    return _cluster_container


@pytest.fixture
def replicated_cluster(redis_server_bin: str, redis_cli_bin: str) -> Iterator[LocalCluster]:
    with LocalCluster(
        masters=3, replicas=1, executable=redis_server_bin, cli=redis_cli_bin
    ) as cluster:
        yield cluster


@pytest.fixture
def cluster_container_on_url(cluster_url: str) -> Iterator[Container]:
    container = _cluster_container(cluster_url)
    yield container
    container.redis_client().close()


@pytest.fixture
def cluster_state(cluster_container_on_url: Container) -> StateService:
    return cluster_container_on_url.state_service()
