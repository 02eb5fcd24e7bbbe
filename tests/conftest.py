"""Real-Redis fixtures shared by every test folder.

redis_url      (session)  a server the whole run shares: $VIMBISO_STATE_TEST_REDIS_URL, else a
                          testcontainers Redis when a Docker engine answers, else one private
                          redis-server. Tests on it must use unique keys and never flush, kill
                          or reconfigure it. Never $REDIS_URL: that is the bot's cache Redis.
private_redis  (function) a fresh private RedisProcess per test, for anything destructive.
redis_server_bin (session) path of redis-server, for tests that build their own RedisProcess.
cluster_url    (session)  a Redis Cluster of three masters the run shares:
                          $VIMBISO_STATE_TEST_CLUSTER_URL (any node), else a LocalCluster of
                          private redis-server processes (tests/redis_cluster.py). Same rules
                          as redis_url: unique keys only.
redis_cli_bin  (session)  path of redis-cli, which forms a LocalCluster.
loop_thread    (session)  the event loop that drives the asyncio services behind the blocking
                          facade of tests/service_kinds.py.

Each of them skips (fails under CI=true) when no server can be had, and marks its tests
`redis`, so `pytest -m "not redis"` runs the fast suite without any server. The cluster ones
(and tests/cluster's replicated_cluster) also mark their tests `cluster`: `pytest -m cluster`.
This module deliberately imports nothing from domain/, adapters/ or services/ at import time.

The run records into OpenTelemetry's SDK (tests/otel_sdk.py), as a bot that configured it
would: every test exercises the instrumentation, and the telemetry tests read the figures.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn
from urllib.parse import urlsplit

import otel_sdk
import pytest
import redis
from redis_cluster import LocalCluster, find_redis_cli
from redis_servers import RedisProcess, docker_available, find_redis_server, start_container

# The suite's own server variables: names no application uses. REDIS_URL is the bot's cache
# Redis (DESIGN.md), and this suite writes and deletes keys: a developer who has it exported
# must not run the suite against their cache.
TEST_REDIS_URL = "VIMBISO_STATE_TEST_REDIS_URL"
TEST_CLUSTER_URL = "VIMBISO_STATE_TEST_CLUSTER_URL"

# Fixtures that need a local Redis Cluster; a test using any of them gets the `cluster` marker.
CLUSTER_FIXTURES = {"cluster_url", "redis_cli_bin", "replicated_cluster"}
# Fixtures that need a real server; a test using any of them (directly or through another
# fixture) gets the `redis` marker. Other conftests may add names here.
REDIS_FIXTURES = {"redis_url", "private_redis", "redis_server_bin", *CLUSTER_FIXTURES}

INSTALL_HELP = (
    "Install redis-server (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew "
    "install redis) and put it on PATH or set REDIS_SERVER=/path/to/redis-server. "
    'Run `pytest -m "not redis"` for the suite that needs no server.'
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _no_server(reason: str) -> NoReturn:
    # Locally a missing server is a skip; in CI a silent skip would hide the real-Redis suite.
    if _in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _redacted(url: str) -> str:
    # Never print a password from the URL.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"


def pytest_configure(config: pytest.Config) -> None:
    otel_sdk.install()


@pytest.fixture(autouse=True)
def _forget_spans() -> Iterator[None]:
    # Each test starts with no finished spans, and the run does not keep them all.
    otel_sdk.clear_spans()
    yield
    otel_sdk.clear_spans()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # fixturenames is the transitive closure, so backend fixtures built on these count too.
        names = set(getattr(item, "fixturenames", ()))
        if REDIS_FIXTURES & names:
            item.add_marker(pytest.mark.redis)
        if CLUSTER_FIXTURES & names:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[Any]:
    """The event loop every AsyncStateService of the run is driven on, behind the blocking
    facade of tests/service_kinds.py (imported here only when a test asks for it)."""
    from service_kinds import LoopThread

    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    explicit = os.environ.get(TEST_REDIS_URL)
    if not explicit and os.environ.get("REDIS_URL"):
        warnings.warn(
            f"REDIS_URL is ignored (the cache Redis's name); set {TEST_REDIS_URL} to run the "
            "Redis tests on a server of your choice",
            stacklevel=1,
        )
    if explicit:
        client = redis.Redis.from_url(explicit, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        except redis.RedisError as exc:
            reason = f"{TEST_REDIS_URL}={_redacted(explicit)} does not answer PING: {exc}"
            pytest.fail(reason, pytrace=False)
        finally:
            client.close()
        yield explicit
        return

    if docker_available():
        try:
            container = start_container()
        except Exception as exc:  # e.g. image pull failed offline: fall back to a process
            warnings.warn(f"testcontainers Redis failed: {exc!r}; using redis-server", stacklevel=1)
        else:
            try:
                yield container.url
            finally:
                container.stop()
            return

    if find_redis_server() is None:
        _no_server(
            f"no Redis for the real-Redis tests: {TEST_REDIS_URL} is unset, no Docker engine "
            f"answers and redis-server is not installed. Set {TEST_REDIS_URL}, or: {INSTALL_HELP}"
        )
    with RedisProcess() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_server_bin() -> str:
    path = find_redis_server()
    if path is None:
        _no_server(f"redis-server is not installed (private servers need it). {INSTALL_HELP}")
    return path


@pytest.fixture
def private_redis(redis_server_bin: str) -> Iterator[RedisProcess]:
    # Always a fresh process: never the shared server, a container or the machine's own 6379.
    with RedisProcess(executable=redis_server_bin) as server:
        yield server


@pytest.fixture
def debug_redis(redis_server_bin: str) -> Iterator[RedisProcess]:
    """A private server with DEBUG enabled (Redis 7 refuses it by default): for stalling the
    server, and so that a refusal of DEBUG is an ACL's doing."""
    with RedisProcess(
        extra_args=("--enable-debug-command", "yes"), executable=redis_server_bin
    ) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cli_bin(redis_server_bin: str) -> str:
    path = find_redis_cli(redis_server_bin)
    if path is None:
        _no_server(
            "redis-cli is not installed (it forms the test cluster; Debian/Ubuntu: redis-tools) "
            f"or set REDIS_CLI=/path/to/redis-cli. {INSTALL_HELP}"
        )
    return path


@pytest.fixture(scope="session")
def cluster_url(request: pytest.FixtureRequest) -> Iterator[str]:
    explicit = os.environ.get(TEST_CLUSTER_URL)
    if explicit:
        client = redis.Redis.from_url(explicit, socket_timeout=3, socket_connect_timeout=3)
        try:
            state = client.cluster("info")["cluster_state"]
        except redis.RedisError as exc:
            reason = f"{TEST_CLUSTER_URL}={_redacted(explicit)} does not answer CLUSTER INFO: {exc}"
            pytest.fail(reason, pytrace=False)
        finally:
            client.close()
        if state != "ok":
            pytest.fail(f"{TEST_CLUSTER_URL}={_redacted(explicit)}: {state=}", pytrace=False)
        yield explicit
        return
    server = request.getfixturevalue("redis_server_bin")
    cli = request.getfixturevalue("redis_cli_bin")
    with LocalCluster(masters=3, executable=server, cli=cli) as cluster:
        yield cluster.url
