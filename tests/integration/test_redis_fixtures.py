"""The real-Redis test infrastructure does what the other suites rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_servers import RedisProcess

FSYNC_WAIT = 1.3  # appendfsync everysec: more than a second after the write it is on disk
ROOT = Path(__file__).resolve().parents[2]
# A test that writes a conversation on the shared server (redis_url).
WRITER = "tests/contract/test_state_contract.py::test_first_contact_creates_state_at_the_menu"


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


def _run_the_writer(**env: str) -> subprocess.CompletedProcess[str]:
    """WRITER on its Redis backend, in a pytest of its own, with ``env`` and without the
    suite's own server variables of this run."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("VIMBISO_STATE_TEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"{WRITER}[redis-sync]"],
        cwd=ROOT,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_suite_never_writes_to_the_server_redis_url_names(
    private_redis: RedisProcess,
) -> None:
    """REDIS_URL is the bot's cache Redis: a developer who has it exported and runs the suite
    must find their cache untouched."""
    cache = private_redis.client()
    run = _run_the_writer(REDIS_URL=private_redis.url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "REDIS_URL is ignored" in run.stdout  # and the developer is told so
    assert cache.dbsize() == 0
    cache.close()


def test_the_suite_writes_to_the_server_its_own_variable_names(
    private_redis: RedisProcess, redis_server_bin: str
) -> None:
    """The same run with VIMBISO_STATE_TEST_REDIS_URL set does write there: the test above
    would see a write that went to the wrong server."""
    with RedisProcess(executable=redis_server_bin) as cache:
        run = _run_the_writer(VIMBISO_STATE_TEST_REDIS_URL=private_redis.url, REDIS_URL=cache.url)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "REDIS_URL is ignored" not in run.stdout
        assert cache.client().dbsize() == 0
    chosen = private_redis.client()
    assert chosen.dbsize() > 0
    chosen.close()
