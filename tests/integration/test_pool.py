"""The sync client ``connect`` builds (redis-py's stock BlockingConnectionPool) on a real
server: bounded, blocking, fork-safe, and it never hands on a connection with someone else's
reply on it or one the server closed."""

from __future__ import annotations

import inspect
import os
import threading
import time
from typing import Any

import pytest
import redis

from vimbiso_state.adapters.redis.connection import close, connect

THREADS = 8
CONNECTIONS = 2
POOL_TIMEOUT = 0.5
SECONDS = 1.5
THINK = 0.002  # a handler's own work between two calls


def _checkout(pool: redis.BlockingConnectionPool) -> Any:
    """``pool.get_connection()`` as every supported redis-py spells it: before 5.3 it requires
    a command name, from 5.3 on passing one is deprecated."""
    name = inspect.signature(pool.get_connection).parameters.get("command_name")
    if name is not None and name.default is inspect.Parameter.empty:
        return pool.get_connection("PING")
    return pool.get_connection()


def test_threads_outnumbering_connections_all_get_turns_and_the_bound_holds(
    redis_url: str,
) -> None:
    """8 threads, each a handler making a Redis call between short stretches of its own work,
    on a 2-connection pool: they queue, none fails, and the server never sees a third
    connection. (A thread that gives a connection back and asks again in the same breath can
    take it back from under a waiter in redis-py's LIFO pool: size ``max_connections`` to the
    worker's threads, see docs/configuration.md.)"""
    client = connect(redis_url, max_connections=CONNECTIONS, pool_timeout=POOL_TIMEOUT)
    key = f"test:pool:{time.monotonic_ns()}"
    halfway = time.monotonic() + SECONDS / 2
    stop = halfway + SECONDS / 2
    counts: list[list[int]] = []
    failures: list[BaseException] = []
    admin = redis.Redis.from_url(redis_url)
    before = {c["id"] for c in admin.client_list()}
    most = [0]

    def loop() -> None:
        mine = [0, 0]
        counts.append(mine)
        try:
            while (now := time.monotonic()) < stop:
                client.incr(key)
                mine[now >= halfway] += 1
                time.sleep(THINK)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    def watch() -> None:
        while time.monotonic() < stop:
            ours = [c for c in admin.client_list() if c["id"] not in before]
            most[0] = max(most[0], len(ours))
            time.sleep(0.05)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    watcher = threading.Thread(target=watch)
    for thread in [*threads, watcher]:
        thread.start()
    for thread in [*threads, watcher]:
        thread.join()
    assert not failures
    assert all(early >= 5 and late >= 5 for early, late in counts), counts
    assert int(client.get(key) or 0) == sum(map(sum, counts))
    assert 1 <= most[0] <= CONNECTIONS  # the server never saw more than the pool's bound
    close(client)
    admin.close()


def test_a_caller_waits_for_a_connection_and_gives_up_after_the_pool_timeout(
    redis_url: str,
) -> None:
    client = connect(redis_url, max_connections=1, pool_timeout=0.2)
    pool = client.connection_pool
    held = _checkout(pool)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
        _checkout(pool)
    assert 0.15 <= time.monotonic() - started < 1.0

    # A connection given back while someone waits goes to that waiter.
    threading.Timer(0.05, pool.release, args=(held,)).start()
    started = time.monotonic()
    handed = _checkout(pool)
    assert handed is held and time.monotonic() - started < 0.2
    pool.release(handed)
    assert client.ping()
    close(client)


def test_a_connection_left_with_an_unread_reply_is_not_handed_on(redis_url: str) -> None:
    client = connect(redis_url, max_connections=1)
    client.set("test:pool:mine", b"mine")
    pool = client.connection_pool
    connection = _checkout(pool)
    connection.send_command("ECHO", "someone else's reply")
    time.sleep(0.05)  # the reply is on the socket, unread
    pool.release(connection)
    assert client.get("test:pool:mine") == b"mine"
    close(client)


def test_a_forked_child_makes_its_own_connections_and_leaves_the_parents_alone(
    redis_url: str,
) -> None:
    client = connect(redis_url)
    key = f"test:pool:fork:{time.monotonic_ns()}"
    client.set(key, "parent")
    parent_id = client.client_id()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child, reported by its exit status)
        status = 1
        try:
            client.append(key, ":child")
            status = 0 if client.client_id() != parent_id else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection was neither used nor closed by the child.
    assert client.client_id() == parent_id
    assert client.get(key) == b"parent:child"
    close(client)


def test_a_connection_the_server_closed_is_replaced_before_it_is_handed_on(
    redis_url: str,
) -> None:
    client = connect(redis_url, max_connections=1)
    assert client.ping()
    admin = redis.Redis.from_url(redis_url)
    killed = admin.client_kill_filter(_id=client.client_id())
    assert killed == 1
    time.sleep(0.05)  # the server's close reaches the client's socket
    assert client.ping()  # on a fresh connection, not an error
    admin.close()
    close(client)
