"""The real-Redis test infrastructure does what the other suites rely on."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Any

import pytest
import redis
from redis_servers import RedisProcess

FSYNC_WAIT = 1.3  # appendfsync everysec: more than a second after the write it is on disk


def _config(client: redis.Redis, name: str) -> Any:
    return client.config_get(name)[name]


def _run_id(client: redis.Redis) -> str:
    return str(client.info("server")["run_id"])


def test_private_redis_is_a_fresh_server_with_the_seed_config(
    private_redis: RedisProcess, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("redis") is not None  # `-m "not redis"` skips it
    client = private_redis.client(decode_responses=True)
    assert client.ping() is True
    assert private_redis.port != 6379
    assert private_redis.url == f"redis://127.0.0.1:{private_redis.port}/0"
    # It is our process in our temp dir, not some other server that happens to answer.
    assert os.path.samefile(_config(client, "dir"), private_redis.dir)
    assert client.dbsize() == 0
    assert _config(client, "maxmemory-policy") == "allkeys-lru"
    assert _config(client, "maxmemory") == "268435456"
    assert _config(client, "appendonly") == "yes"
    assert _config(client, "appendfsync") == "everysec"
    assert _config(client, "save") == ""


def test_restart_reloads_fsynced_data(private_redis: RedisProcess) -> None:
    client = private_redis.client()
    client.set("user:{263771234567}:state", b"v1")
    before = _run_id(client)
    time.sleep(FSYNC_WAIT)

    private_redis.restart()

    assert _run_id(client) != before  # really a new process, on the same port
    assert client.get("user:{263771234567}:state") == b"v1"


def test_kill9_then_restart_keeps_data_written_a_second_before(
    private_redis: RedisProcess,
) -> None:
    client = private_redis.client()
    client.set("token:{263771234567}", b"secret", ex=600)
    before = _run_id(client)
    time.sleep(FSYNC_WAIT)

    private_redis.kill9()
    assert not private_redis.running
    with pytest.raises(redis.ConnectionError):
        private_redis.client(retry_on_timeout=False).ping()

    private_redis.restart()

    assert _run_id(client) != before
    assert client.get("token:{263771234567}") == b"secret"
    assert 0 < client.ttl("token:{263771234567}") <= 600  # the TTL survives the AOF reload


def test_data_survives_only_through_the_aof(private_redis: RedisProcess) -> None:
    # Control for the two tests above: with the AOF gone, a restart comes back empty, so their
    # passing depends on the AOF being reloaded and not on anything else keeping the data.
    client = private_redis.client()
    client.set("k", b"v")
    private_redis.kill9()
    shutil.rmtree(private_redis.dir / "appendonlydir")

    private_redis.restart()

    assert client.get("k") is None


def test_redis_url_answers_and_is_marked(redis_url: str, request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("redis") is not None
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    key = f"test:{{fixtures}}:{uuid.uuid4().hex}"  # shared server: unique key, never flush
    try:
        assert client.ping() is True
        assert client.set(key, b"x", ex=60)
        assert client.get(key) == b"x"
    finally:
        client.delete(key)
        client.close()


def test_close_stops_the_server_and_removes_its_dir(redis_server_bin: str) -> None:
    with RedisProcess(executable=redis_server_bin) as server:
        client = server.client(retry_on_timeout=False)
        assert client.ping() is True
        directory = server.dir
    assert not directory.exists()
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_start_failure_reports_the_server_error(redis_server_bin: str) -> None:
    server = RedisProcess(["--maxmemory-policy", "no-such-policy"], executable=redis_server_bin)
    try:
        with pytest.raises(RuntimeError, match="exited during start-up") as info:
            server.start(timeout=5)
        assert "no-such-policy" in str(info.value) or "maxmemory-policy" in str(info.value)
        assert not server.running
    finally:
        server.close()
