"""A redis-py client that fails fast, and the one retry loop around every Redis call.

redis-py nests its retries (each command retry reconnects, and each reconnect retries the
handshake), so a hung server took 58 s with its defaults and 4.7 s with three retries. Here
redis-py retries nothing; ``call`` retries the whole call a bounded number of times, so the
worst case is about (retries + 1) * socket_timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from domain.errors import StateError, StateUnavailable

T = TypeVar("T")

# Errors after which the same call may be sent again. A write sent again is safe because it
# carries an operation id (see save.lua). BusyLoadingError (a restart reading its AOF) is a
# ConnectionError subclass in redis-py, so it is retried too.
_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "LOADING", "CLUSTERDOWN", "TRYAGAIN")


def connect(
    url: str,
    *,
    socket_timeout: float = 0.5,
    connect_timeout: float = 0.25,
    max_connections: int = 64,
) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix://, with user and password if given)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        max_connections=max_connections,
    )


class RetryPolicy:
    """Runs a Redis call, retrying transient failures; every failure becomes a StateError."""

    def __init__(self, retries: int = 2, backoff: float = 0.02, cap: float = 0.2) -> None:
        self.retries = retries
        self._backoff = backoff
        self._cap = cap

    def call(self, operation: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return operation()
            except _TRANSIENT as exc:
                if attempt == self.retries:
                    raise StateUnavailable(
                        f"Redis is unreachable or did not answer in time: {exc}"
                    ) from exc
                time.sleep(min(self._cap, self._backoff * 2**attempt))
            except redis.exceptions.ResponseError as exc:
                if str(exc).startswith(_UNAVAILABLE_REPLIES):
                    raise StateUnavailable(f"Redis refused the command: {exc}") from exc
                raise StateError(f"Redis rejected the command: {exc}") from exc
            except redis.exceptions.RedisError as exc:
                raise StateUnavailable(f"Redis failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
