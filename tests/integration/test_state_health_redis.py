"""state.health() on a real private Redis: the server's facts while it can serve, and
StateUnavailable within 2 s when it cannot (stopped, full under noeviction, a read-only
replica). Each test runs with the sync and the asyncio service."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from fakes import TOKEN_KEY
from redis_servers import RedisProcess
from service_kinds import KINDS, service_of

from vimbiso_state import Container, StateService, StateUnavailable
from vimbiso_state.domain.health import HEALTH_DEADLINE


def _container(url: str) -> Container:
    # No STATE_BACKEND: the URL alone selects Redis.
    return Container.from_env({"REDIS_STATE_URL": url, "STATE_TOKEN_KEYS": TOKEN_KEY})


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def state(private_redis: RedisProcess, kind: str) -> Iterator[StateService]:
    with service_of(_container(private_redis.url), kind) as service:
        yield service


def _unavailable_in_time(state: StateService, match: str) -> float:
    started = time.monotonic()
    with pytest.raises(StateUnavailable, match=match):
        state.health()
    elapsed = time.monotonic() - started
    assert elapsed < HEALTH_DEADLINE, elapsed
    return elapsed


def test_health_reports_the_servers_facts(state: StateService, private_redis: RedisProcess) -> None:
    admin = private_redis.client()
    info = admin.info()
    facts = state.health()
    assert facts.backend == "redis" and facts.servers == 1 and facts.users is None
    assert facts.server_version == info["redis_version"]
    # The seed's settings, which the private server runs.
    assert facts.maxmemory_policy == "allkeys-lru" and facts.evicts_state is True
    assert facts.maxmemory == 256 * 1024 * 1024
    assert facts.used_memory is not None and 0 < facts.used_memory < facts.maxmemory
    assert facts.latency_ms is not None and 0 < facts.latency_ms < 100
    admin.config_set("maxmemory-policy", "noeviction")
    facts = state.health()
    assert facts.maxmemory_policy == "noeviction" and facts.evicts_state is False
    admin.close()


def test_health_writes_nothing(state: StateService, private_redis: RedisProcess) -> None:
    admin = private_redis.client()
    state.health()
    assert admin.dbsize() == 0
    admin.close()


def test_a_stopped_server_is_unavailable_within_two_seconds(
    state: StateService, private_redis: RedisProcess
) -> None:
    state.health()  # connected: the pool holds a connection the stop will break
    private_redis.stop()
    _unavailable_in_time(state, "unreachable")
    private_redis.start()
    assert state.health().backend == "redis"  # back as soon as the server is


def test_a_full_server_under_noeviction_is_unavailable(
    state: StateService, private_redis: RedisProcess
) -> None:
    admin = private_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.set("filler", b"x" * 200_000)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used - 100_000)
    _unavailable_in_time(state, "full")
    admin.delete("filler")
    admin.config_set("maxmemory", 0)
    assert state.health().maxmemory == 0
    admin.close()


def test_a_read_only_replica_is_unavailable(
    private_redis: RedisProcess, redis_server_bin: str, kind: str
) -> None:
    replica_of = ("--replicaof", "127.0.0.1", str(private_redis.port))
    with (
        RedisProcess(replica_of, executable=redis_server_bin) as replica,
        service_of(_container(replica.url), kind) as state,
    ):
        _unavailable_in_time(state, "replica")


def test_a_server_that_refuses_writes_after_a_failed_save_is_unavailable(
    state: StateService, private_redis: RedisProcess
) -> None:
    """MISCONF: an RDB save failed and stop-writes-on-bgsave-error is on."""
    admin = private_redis.client()
    admin.set("k", "v")
    # Redis refuses writes after a failed save only when it is configured to save.
    admin.config_set("save", "3600 1")
    admin.config_set("stop-writes-on-bgsave-error", "yes")
    # A directory where the RDB file (dump.rdb, the default name) should be: the save
    # cannot rename its temp file onto it.
    (private_redis.dir / "dump.rdb").mkdir()
    admin.bgsave()
    deadline = time.monotonic() + 10
    while admin.info("persistence")["rdb_last_bgsave_status"] != "err":
        assert time.monotonic() < deadline, "the save did not fail"
        time.sleep(0.05)
    _unavailable_in_time(state, "MISCONF")
    (private_redis.dir / "dump.rdb").rmdir()
    admin.config_set("save", "")
    assert state.health().backend == "redis"
    admin.close()


def test_health_does_not_hang_on_a_stalled_server(private_redis: RedisProcess, kind: str) -> None:
    """SIGSTOP: the process is there, its socket accepts, nothing answers."""
    with service_of(_container(private_redis.url), kind) as state:
        state.health()
        assert private_redis.proc is not None
        private_redis.proc.send_signal(19)  # SIGSTOP
        try:
            _unavailable_in_time(state, "unreachable|did not answer")
        finally:
            private_redis.proc.send_signal(18)  # SIGCONT
        assert state.health().backend == "redis"


def test_acl_user_without_info_still_gets_health(private_redis: RedisProcess, kind: str) -> None:
    """A managed Redis may deny INFO: health() reports what it can and still checks writes."""
    admin = private_redis.client()
    admin.acl_setuser(
        "bot", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-info"]
    )
    url = f"redis://bot:pw@127.0.0.1:{private_redis.port}/0"
    with service_of(_container(url), kind) as state:
        facts = state.health()
    assert facts.backend == "redis" and facts.server_version is None
    assert facts.latency_ms is not None
    admin.close()


def test_redis_errors_never_leak_as_other_exceptions(private_redis: RedisProcess) -> None:
    container = _container(private_redis.url)
    state = container.state_service()
    private_redis.kill9()
    with pytest.raises(StateUnavailable) as caught:
        state.health()
    assert isinstance(caught.value.__cause__, redis.RedisError)
    container.close()
