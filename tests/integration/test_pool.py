"""The sync client's pool (adapters/redis/pool.py) on a real server: bounded, blocking, fair,
and never hands on a connection with someone else's reply on it."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import redis

from vimbiso_state.adapters.redis.connection import connect
from vimbiso_state.adapters.redis.pool import LeanConnectionPool

THREADS = 8
CONNECTIONS = 2
POOL_TIMEOUT = 0.5
SECONDS = 1.5


def _pool(client: redis.Redis) -> LeanConnectionPool:
    pool = client.connection_pool
    assert isinstance(pool, LeanConnectionPool)
    return pool


def test_threads_outnumbering_connections_all_get_turns_and_the_bound_holds(
    redis_url: str,
) -> None:
    client = connect(redis_url, max_connections=CONNECTIONS, pool_timeout=POOL_TIMEOUT)
    key = f"test:pool:{time.monotonic_ns()}"
    halfway = time.monotonic() + SECONDS / 2
    stop = halfway + SECONDS / 2
    counts: list[list[int]] = []
    failures: list[BaseException] = []

    def loop() -> None:
        mine = [0, 0]
        counts.append(mine)
        try:
            while (now := time.monotonic()) < stop:
                client.incr(key)
                mine[now >= halfway] += 1
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert all(early >= 5 and late >= 5 for early, late in counts), counts
    assert int(client.get(key) or 0) == sum(map(sum, counts))
    assert len(_pool(client)._connections) == CONNECTIONS
    client.close()


def test_a_caller_waits_for_a_connection_and_gives_up_after_the_pool_timeout(
    redis_url: str,
) -> None:
    client = connect(redis_url, max_connections=1, pool_timeout=0.2)
    pool = _pool(client)
    held = pool.get_connection()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
        pool.get_connection()
    assert 0.15 <= time.monotonic() - started < 1.0

    # A connection given back while someone waits goes to that waiter.
    threading.Timer(0.05, pool.release, args=(held,)).start()
    started = time.monotonic()
    handed = pool.get_connection()
    assert handed is held and time.monotonic() - started < 0.2
    pool.release(handed)
    assert client.ping()
    client.close()


def test_a_connection_left_with_an_unread_reply_is_not_handed_on(redis_url: str) -> None:
    client = connect(redis_url, max_connections=1)
    client.set("test:pool:mine", b"mine")
    pool = _pool(client)
    connection: Any = pool.get_connection()
    connection.send_command("ECHO", "someone else's reply")
    time.sleep(0.05)  # the reply is on the socket, unread
    pool.release(connection)
    assert client.get("test:pool:mine") == b"mine"
    client.close()


def test_a_connection_that_cannot_be_made_lets_a_waiter_make_one(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = connect(redis_url, max_connections=1, pool_timeout=2)
    pool = _pool(client)
    made = pool.make_connection
    gate = threading.Event()

    def failing_once() -> Any:
        monkeypatch.setattr(pool, "make_connection", made)
        gate.wait(1)  # until the second caller queues behind this one
        raise redis.exceptions.ConnectionError("cannot make it")

    monkeypatch.setattr(pool, "make_connection", failing_once)
    outcome: list[object] = []
    first = threading.Thread(target=lambda: outcome.append(_try(pool)))
    first.start()
    while pool._made == 0:
        time.sleep(0.001)
    second = threading.Thread(target=lambda: outcome.append(_try(pool)))
    second.start()
    while not pool._waiters:
        time.sleep(0.001)
    gate.set()
    first.join()
    second.join()
    assert sorted(map(str, outcome)) == ["cannot make it", "connected"]
    assert pool._made == 1 and client.ping()
    client.close()


def _try(pool: LeanConnectionPool) -> str:
    try:
        connection = pool.get_connection()
    except redis.exceptions.ConnectionError as exc:
        return str(exc)
    pool.release(connection)
    return "connected"


def test_a_forked_child_makes_its_own_connections_and_leaves_the_parents_alone(
    redis_url: str,
) -> None:
    client = connect(redis_url)
    key = f"test:pool:fork:{time.monotonic_ns()}"
    client.set(key, "parent")
    pool = _pool(client)
    parents = {id(connection) for connection in pool._free}
    assert parents
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child, reported by its exit status)
        status = 1
        try:
            client.append(key, ":child")
            fresh = pool._made == 1 and not {id(c) for c in pool._free} & parents
            status = 0 if fresh else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection was neither used nor closed by the child.
    assert {id(connection) for connection in pool._free} == parents
    assert client.get(key) == b"parent:child"
    client.close()


def test_a_connection_the_server_closed_is_replaced_before_it_is_handed_on(
    redis_url: str,
) -> None:
    client = connect(redis_url, max_connections=1)
    pool = _pool(client)
    assert client.ping()
    admin = redis.Redis.from_url(redis_url)
    killed = admin.client_kill_filter(_id=client.client_id())
    assert killed == 1
    time.sleep(0.05)  # the server's close reaches the client's socket
    connection: Any = pool.get_connection()
    try:
        connection.send_command("PING")
        assert connection.read_response() in (b"PONG", "PONG")  # a fresh connection
    finally:
        pool.release(connection)
    admin.close()
    client.close()


def test_plain_connections_are_checked_without_redis_pys_can_read(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lean check must be the one that runs on a plain TCP connection with hiredis, or
    # the cost it saves is still paid; both checks see the unread reply (test above).
    client = connect(redis_url, max_connections=1)
    pool = _pool(client)
    assert client.ping()
    connection: Any = pool.get_connection()
    pool.release(connection)

    def refused(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("redis-py's can_read ran")

    monkeypatch.setattr(connection, "can_read", refused)
    assert client.ping()
    client.close()
