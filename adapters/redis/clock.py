"""The Redis server's clock, for every host alike, without a round trip per message.

Bot processes run on hosts whose clocks differ by seconds or minutes; a deadline, a sliding
refresh or a dedupe window written from one host's clock would move on another's. So the
library keeps time by the server's ``TIME``: read now and then, carried forward in between by
this process's monotonic clock (which no wall-clock adjustment moves).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio
from redis.cluster import RedisCluster

from vimbiso_state.adapters.redis.aio import AsyncRedisClient, discovered
from vimbiso_state.adapters.redis.connection import AsyncRetryPolicy, RedisClient, RetryPolicy
from vimbiso_state.domain.errors import StateError

log = logging.getLogger(__name__)

# A cluster's nodes keep their own clocks: every host reads the node that owns this key.
CLOCK_KEY = "vimbiso-state:clock"


def _as_datetime(seconds: int, micros: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)


def server_time(client: Callable[[], RedisClient], retry: RetryPolicy) -> Callable[[], datetime]:
    """A function that reads the server's TIME (on a cluster, always the same node's) with the
    client ``client()`` gives, asked for at the first read."""

    def read() -> datetime:
        connection = client()
        if isinstance(connection, redis.Redis):
            return _as_datetime(*retry.call(connection.time))
        assert isinstance(connection, RedisCluster)
        node = connection.get_node_from_key(CLOCK_KEY)
        return _as_datetime(*retry.call(lambda: connection.time(target_nodes=node)))

    return read


def async_server_time(
    client: Callable[[], AsyncRedisClient], retry: RetryPolicy
) -> Callable[[], Awaitable[datetime]]:
    """server_time for asyncio: the same node's TIME, read with an asyncio client."""
    policy = AsyncRetryPolicy(retry)

    async def read() -> datetime:
        connection = client()

        async def time_of_server() -> tuple[int, int]:
            if isinstance(connection, redis.asyncio.Redis):
                return await connection.time()
            await discovered(connection)
            node = connection.get_node_from_key(CLOCK_KEY)
            return await connection.time(target_nodes=node)  # type: ignore[no-any-return]

        return _as_datetime(*await policy.call(time_of_server))

    return read


class ServerClock:
    """Time as the Redis server tells it, read every ``refresh`` and carried in between.

    After a failed read the last reading is carried on (a minute-old reading is off by the
    drift of a monotonic clock, microseconds) and the read is tried again a few seconds later;
    only a process that never read the server's time fails.

    With ``aread`` the clock also serves asyncio: the asyncio service awaits ``refresh()``
    before each operation, and once it has, ``now()`` called on a thread that runs an event
    loop never blocks it on a read (a due read waits for the next ``refresh()``; the reading
    it carries is at most a few seconds older than usual). Until then, and on threads without
    an event loop, a due read is made when ``now()`` is asked.
    """

    def __init__(
        self,
        read: Callable[[], datetime],
        refresh: timedelta = timedelta(seconds=60),
        monotonic: Callable[[], float] = time.monotonic,
        aread: Callable[[], Awaitable[datetime]] | None = None,
    ) -> None:
        self._read = read
        self._aread = aread
        self._refresh = refresh.total_seconds()
        self._monotonic = monotonic
        self._anchor: tuple[datetime, float] | None = None
        self._next_read = 0.0
        self._reading = False
        self._awaited = False  # an asyncio service refreshes this clock

    def now(self) -> datetime:
        if self._due() and not (self._anchor is not None and self._on_event_loop()):
            self._sync()
        assert self._anchor is not None
        server, read_at = self._anchor
        return server + timedelta(seconds=self._monotonic() - read_at)

    async def refresh(self) -> None:
        """Read the server's time if a read is due, without blocking the event loop."""
        if self._aread is None:
            return
        self._awaited = True
        if not self._due():
            return
        if self._reading and self._anchor is not None:
            return  # another coroutine is reading it; carry on meanwhile
        self._reading = True
        sent = self._monotonic()
        try:
            server = await self._aread()
        except StateError as exc:
            self._failed(exc)
            return
        finally:
            self._reading = False
        self._anchored(server, sent, self._monotonic())

    def _due(self) -> bool:
        return self._anchor is None or self._monotonic() >= self._next_read

    def _on_event_loop(self) -> bool:
        """Whether this runs on an event loop whose asyncio service refreshes the clock."""
        if not self._awaited:
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def _sync(self) -> None:
        sent = self._monotonic()
        try:
            server = self._read()
        except StateError as exc:
            self._failed(exc)
            return
        self._anchored(server, sent, self._monotonic())

    def _failed(self, exc: StateError) -> None:
        if self._anchor is None:
            raise exc
        log.warning("could not read the Redis server's time, carrying on: %s", exc)
        self._next_read = self._monotonic() + 5

    def _anchored(self, server: datetime, sent: float, received: float) -> None:
        # The server read its clock somewhere within the round trip: the middle is the best
        # guess, off by at most half a round trip.
        self._anchor = (server, (sent + received) / 2)
        self._next_read = received + self._refresh
