"""The connection pool of every client ``connect`` builds: bounded, blocking, fair and cheap.

redis-py 8's BlockingConnectionPool spends 7 to 13 us on each checkout and return (a
LifoQueue, and metric hooks that look for a collector on every call even with observability
off): more than decoding the conversation it carries. This pool keeps its meaning (at most
``max_connections``, a caller waits up to ``timeout`` for one, a connection with unread data is
never handed on, a forked child starts afresh) on a list under one lock. A returned connection
goes straight to the longest waiter, so a thread that gives one back and asks again at once
cannot take it back from under a thread that was already waiting.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections import deque
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError

# redis-py's own annotations of its pool disagree with each other (ConnectionInterface here,
# Connection there); connections are whatever the parent's make_connection makes.
Connection = Any

# How many forks this process is removed from the one that imported this module: a pool made
# before the last fork belongs to the parent.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def _has_input(connection: Connection) -> bool:
    """Whether anything waits to be read on ``connection``: a reply nobody read, or the end of
    a connection the server closed. Either way it must not be handed on.

    What redis-py's ``can_read()`` answers, without its error message and poll object built
    on every checkout (3 to 4 us of a 100 us call here); redis-py's own check wherever this
    one cannot see everything (no hiredis reader, or TLS, which buffers above the socket).
    """
    sock = connection._sock
    reader = getattr(connection._parser, "_reader", None)
    if type(sock) is not socket.socket or reader is None:
        return bool(connection.can_read())
    if reader.has_data():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)  # hang-ups and errors are reported regardless
    return bool(poller.poll(0))


class _Waiter:
    """A caller waiting for a connection, or for the right to make one (connection None)."""

    __slots__ = ("connection", "granted", "handed")

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.granted = False
        self.handed = threading.Lock()
        self.handed.acquire()  # released by whoever grants this waiter its turn


class LeanConnectionPool(redis.BlockingConnectionPool):
    """``redis.BlockingConnectionPool`` with a faster, FIFO-fair checkout (see the module)."""

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]  # the parent's state, then ours
        self._forks = _forks
        self._guard = threading.Lock()
        self._free: list[Connection] = []
        self._made = 0
        self._waiters: deque[_Waiter] = deque()

    def _checkpid(self) -> None:
        # redis-py asks the OS for the pid on every checkout and every return; the fork
        # counter tells the same for free, and only after a fork does the parent's check
        # (pid, lock, reset) run.
        if self._forks != _forks:
            super()._checkpid()

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        self._checkpid()
        connection = self._take()
        try:
            connection.connect()
            # Unread data means an earlier caller left a reply behind; handing the connection
            # on would give that reply to someone else, so reconnect instead. A connection the
            # server closed (a restart) raises here, and is reconnected the same way.
            try:
                stale = _has_input(connection)
            except (RedisConnectionError, redis.exceptions.TimeoutError, OSError):
                stale = True
            if stale:
                connection.disconnect()
                connection.connect()
                if _has_input(connection):
                    raise RedisConnectionError("Connection not ready")
        except BaseException:
            self.release(connection)
            raise
        return connection

    def _take(self) -> Connection:
        with self._guard:
            if self._free:
                return self._free.pop()
            if self._made >= self.max_connections:
                waiter = _Waiter()
                self._waiters.append(waiter)
            else:
                self._made += 1
                waiter = None
        if waiter is not None:
            timeout = -1 if self.timeout is None else self.timeout
            if not waiter.handed.acquire(timeout=timeout):
                with self._guard:
                    if not waiter.granted:  # nobody granted it a turn while it timed out
                        self._waiters.remove(waiter)
                        raise RedisConnectionError("No connection available.")
            if waiter.connection is not None:
                return waiter.connection
        try:
            return self.make_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._forget_one()
            raise

    def release(self, connection: Connection) -> None:
        self._checkpid()
        if not self.owns_connection(connection):
            # Made before a fork, by the parent's pool: not ours to count or reuse.
            connection.disconnect()
            return
        if connection.should_reconnect():
            connection.disconnect()
        with self._guard:
            if self._waiters:
                self._grant(connection)
            else:
                self._free.append(connection)

    def _forget_one(self) -> None:
        """A counted connection could not be made: the longest waiter may make one instead."""
        with self._guard:
            if self._waiters:
                self._grant(None)
            else:
                self._made -= 1

    def _grant(self, connection: Connection | None) -> None:
        waiter = self._waiters.popleft()
        waiter.connection = connection
        waiter.granted = True
        waiter.handed.release()

    # What the parent reads from its queue, for disconnect(inuse_connections=False) and
    # maintenance handling.
    def _get_free_connections(self) -> set[Connection]:
        with self._guard:
            return set(self._free)

    def _get_in_use_connections(self) -> set[Connection]:
        with self._guard:
            free = set(self._free)
        return {c for c in self._connections if c not in free}
