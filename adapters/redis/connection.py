"""A redis-py client that fails fast, and the one retry loop around every Redis call.

redis-py nests its retries (each command retry reconnects, and each reconnect retries the
handshake), so a hung server took 58 s with its defaults and 4.7 s with three retries. Here
redis-py retries nothing; ``call`` retries the whole call a bounded number of times, so the
worst case is about (retries + 1) * socket_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from vimbiso_state.adapters.otel import ERROR_TYPE, REDIS_RETRIES
from vimbiso_state.domain.errors import StateError, StateUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

# What the repositories accept: a client of one server, or of a cluster. Every call they make
# names keys of one user only, so both route it the same way.
RedisClient = redis.Redis | RedisCluster

# Errors after which the same call may be sent again. A write sent again is safe because it
# carries an operation id (see save.lua). BusyLoadingError (a restart reading its AOF) is a
# ConnectionError subclass in redis-py, so it is retried too. The cluster's own transient
# states are answered before the command runs: CLUSTERDOWN (a shard without a master during a
# failover; MASTERDOWN is its subclass), TRYAGAIN (a multi-key command during resharding), a
# slot the client's map does not cover yet, and ClusterError ("TTL exhausted": too many
# MOVED/ASK redirections in a row while the slot map settles). RedisCluster refreshes its slot
# map on each of them before raising, so the next attempt goes to the new owner.
_TRANSIENT: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    ClusterError,
)


def _is_transient(exc: Exception) -> bool:
    """A failure that a retry may outlive. That includes a cluster client finding no node to
    read the slot map from because its one connection attempt timed out or was refused: it
    raises RedisClusterException (not a RedisError) from that ConnectionError or TimeoutError,
    before any command was sent, and is no more final than a timeout on one server."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, RedisClusterException) and isinstance(exc.__cause__, _TRANSIENT)


# Replies for a server state that time (or an operator) fixes: MISCONF is a server that cannot
# persist (disk full, unwritable dir) and refuses writes; "BUSY " one running a long script.
_UNAVAILABLE_REPLIES = (
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MISCONF",
    "BUSY ",
)


def client_options(
    socket_timeout: float, connect_timeout: float, max_connections: int
) -> dict[str, object]:
    """What every client of this library gets, sync or asyncio, one server or a cluster:
    bounded timeouts, no retries inside redis-py (RetryPolicy is the only loop), a health
    check after 30 s idle, a bounded pool, and RESP2 on every redis-py release. (8.0 made
    RESP3 the default; on 8.1.0 its pool skipped the check for a reply left unread on a
    connection it hands out, so a caller could read another's reply. 8.2.0 checks again.
    RESP2 is what every supported release speaks the same way, so the pin stays.)"""
    return {
        "protocol": 2,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
        "max_connections": max_connections,
    }


def connect(
    url: str,
    *,
    socket_timeout: float = 0.5,
    connect_timeout: float = 0.25,
    max_connections: int = 64,
    pool_timeout: float | None = None,
) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix://, with user and password if given).

    The pool blocks: with every connection busy, a caller waits for one up to
    ``pool_timeout`` (default: the socket timeout, so a saturated pool is given up on as
    soon as a hung server would be) instead of failing at once with "Too many connections".
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        timeout=socket_timeout if pool_timeout is None else pool_timeout,
        **client_options(socket_timeout, connect_timeout, max_connections),
    )
    return redis.Redis(connection_pool=pool)


def close(client: RedisClient) -> None:
    """Close the client and every connection of its pool (``Redis.close`` alone leaves a
    pool it was given open, in every redis-py release from 5.0); never raises: a socket that
    fails to close is given up on (logged at DEBUG), as aio.close_async does."""
    try:
        client.close()
        if isinstance(client, redis.Redis):
            client.connection_pool.disconnect()
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        log.debug("gave up closing a Redis connection: %s", exc)


def connect_cluster(
    url: str,
    *,
    socket_timeout: float = 0.5,
    connect_timeout: float = 0.25,
    max_connections: int = 64,
    retry: RetryPolicy | None = None,
) -> RedisCluster:
    """A Redis Cluster client discovered from ``url``, the address of any one node.

    Fails fast like ``connect``: no retries inside redis-py (``retry`` with 0 retries is the
    cluster client's own loop; its node connections never retry either), so RetryPolicy's
    loop is the only one. MOVED and ASK are not errors but redirections, followed inside one
    call whatever the retry settings: that is how a call finds a slot's new master after a
    failover. The slot map is read here, retried as ``retry`` says (default: not retried), so
    an unreachable cluster raises StateUnavailable now.
    """

    def discover() -> RedisCluster:
        return RedisCluster.from_url(
            url, **client_options(socket_timeout, connect_timeout, max_connections)
        )

    try:
        return (retry or RetryPolicy(retries=0)).call(discover)
    except StateError as exc:
        raise StateUnavailable(f"Redis Cluster could not be reached: {exc}") from exc


def nodes(client: Any) -> list[tuple[str, redis.Redis]]:
    """The servers behind a client: the client itself (named ""), or every primary of a
    cluster, each a client of its own under the node's name."""
    primaries = getattr(client, "get_primaries", None)
    if primaries is None:
        return [("", client)]
    return [(node.name, client.get_redis_connection(node)) for node in primaries()]


def is_wrong_type(exc: Exception) -> bool:
    """A key of the library's schema holds another Redis type (written by something else)."""
    return str(exc).startswith("WRONGTYPE")


class RetryPolicy:
    """Runs a Redis call, retrying transient failures; every failure becomes a StateError."""

    def __init__(self, retries: int = 2, backoff: float = 0.02, cap: float = 0.2) -> None:
        self.retries = retries
        self._backoff = backoff
        self._cap = cap

    def call(self, operation: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return operation()
            except Exception as exc:
                time.sleep(self.pause_after(exc, attempt))
                attempt += 1

    def pause_after(self, exc: Exception, attempt: int) -> float:
        """How long to wait before retrying after ``exc``; raises when there is no retry.

        Shared by the sync and the asyncio services, so both give up on the same errors.
        """
        if isinstance(exc, redis.exceptions.AuthenticationError):
            # A ConnectionError subclass, but no retry can fix a wrong user or password, and
            # "unreachable" would send the operator looking at the network. redis-py's
            # message never contains the password.
            raise StateUnavailable(
                f"Redis refused the credentials in the state Redis URL: {exc}"
            ) from exc
        if _is_transient(exc):
            if attempt >= self.retries:
                raise StateUnavailable(
                    f"Redis is unreachable or did not answer in time: {exc}"
                ) from exc
            # The one place every Redis retry passes, sync and asyncio alike.
            REDIS_RETRIES.add(1, _retried(type(exc)))
            log.debug("retrying a Redis call (attempt %d) after %s", attempt + 2, exc)
            return float(min(self._cap, self._backoff * 2**attempt))
        if isinstance(exc, redis.exceptions.ReadOnlyError):
            # A replica (a failover under way, or a URL that names one): redis-py strips the
            # reply's READONLY prefix, the type is what says it. Nothing was written.
            raise StateUnavailable(
                f"Redis refused the write: the server is a read-only replica ({exc})"
            ) from exc
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            # redis-py strips the reply's OOM prefix: the type is what says it. Scripts that
            # write are refused before their first command, so nothing was written.
            raise StateUnavailable(
                "Redis is full (used memory is over maxmemory and the eviction policy frees "
                f"nothing): nothing was stored. Raise maxmemory or free memory. ({exc})"
            ) from exc
        if isinstance(exc, redis.exceptions.ResponseError):
            reply = _server_reply(exc)
            if reply.startswith(_UNAVAILABLE_REPLIES):
                raise StateUnavailable(f"Redis refused the command: {reply}") from exc
            raise StateError(f"Redis rejected the command: {exc}") from exc
        if isinstance(exc, redis.exceptions.RedisError):
            raise StateUnavailable(f"Redis failed: {exc}") from exc
        if isinstance(exc, RedisClusterException):
            # Not a RedisError: raised when no node of the cluster answers a topology
            # refresh, or when a command cannot be routed.
            raise StateUnavailable(f"Redis Cluster failed: {exc}") from exc
        raise exc  # not a Redis failure: the caller's own error, unchanged


def _server_reply(exc: Exception) -> str:
    """The server's error reply; redis-py puts which command of a pipeline it answered in
    front of it."""
    text = str(exc)
    if text.startswith("Command # "):
        _, found, reply = text.partition(" of pipeline caused error: ")
        if found:
            return reply
    return text


_RETRIED: dict[type[Exception], dict[str, str]] = {}


def _retried(kind: type[Exception]) -> dict[str, str]:
    """The retry counter's attributes for an error class, made once per class."""
    attributes = _RETRIED.get(kind)
    if attributes is None:
        attributes = _RETRIED.setdefault(kind, {ERROR_TYPE: kind.__name__})
    return attributes


class AsyncRetryPolicy:
    """RetryPolicy for coroutines: the same decisions, awaited pauses."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await operation()
            except Exception as exc:
                await asyncio.sleep(self._policy.pause_after(exc, attempt))
                attempt += 1
