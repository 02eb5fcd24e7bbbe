"""A redis-py client that fails fast: bounded timeouts and retries instead of redis-py's minute."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(
    url: str,
    *,
    socket_timeout: float = 0.5,
    connect_timeout: float = 0.25,
    retries: int = 2,
    max_connections: int = 64,
) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, with user and password if given).

    Worst case before StateUnavailable is about (retries + 1) * socket_timeout plus small
    backoffs: a hung server is given up on in well under two seconds by default. Retrying a
    write is safe because every write carries an operation id (see save.lua).
    """
    retry = Retry(ExponentialBackoff(cap=0.1, base=0.01), retries)
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=retry,
        retry_on_error=[redis.exceptions.BusyLoadingError],
        health_check_interval=30,
        max_connections=max_connections,
    )
