"""The Redis server's clock, for every host alike, without a round trip per message.

Bot processes run on hosts whose clocks differ by seconds or minutes; a deadline, a sliding
refresh or a dedupe window written from one host's clock would move on another's. So the
library keeps time by the server's ``TIME``: read now and then, carried forward in between by
this process's monotonic clock (which no wall-clock adjustment moves).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from redis.cluster import RedisCluster

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy
from vimbiso_state.domain.errors import StateError

log = logging.getLogger(__name__)

# A cluster's nodes keep their own clocks: every host reads the node that owns this key.
CLOCK_KEY = "vimbiso-state:clock"


def server_time(client: RedisClient, retry: RetryPolicy) -> Callable[[], datetime]:
    """A function that reads the server's TIME (on a cluster, always the same node's)."""

    def read() -> datetime:
        if isinstance(client, redis.Redis):
            seconds, micros = retry.call(client.time)
        else:
            assert isinstance(client, RedisCluster)
            node = client.get_node_from_key(CLOCK_KEY)
            seconds, micros = retry.call(lambda: client.time(target_nodes=node))
        return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)

    return read


class ServerClock:
    """Time as the Redis server tells it, read every ``refresh`` and carried in between.

    After a failed read the last reading is carried on (a minute-old reading is off by the
    drift of a monotonic clock, microseconds) and the read is tried again a few seconds later;
    only a process that never read the server's time fails.
    """

    def __init__(
        self,
        read: Callable[[], datetime],
        refresh: timedelta = timedelta(seconds=60),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._refresh = refresh.total_seconds()
        self._monotonic = monotonic
        self._anchor: tuple[datetime, float] | None = None
        self._next_read = 0.0

    def now(self) -> datetime:
        at = self._monotonic()
        if self._anchor is None or at >= self._next_read:
            self._sync()
        assert self._anchor is not None
        server, read_at = self._anchor
        return server + timedelta(seconds=self._monotonic() - read_at)

    def _sync(self) -> None:
        sent = self._monotonic()
        try:
            server = self._read()
        except StateError as exc:
            if self._anchor is None:
                raise
            log.warning("could not read the Redis server's time, carrying on: %s", exc)
            self._next_read = self._monotonic() + 5
            return
        received = self._monotonic()
        # The server read its clock somewhere within the round trip: the middle is the best
        # guess, off by at most half a round trip.
        self._anchor = (server, (sent + received) / 2)
        self._next_read = received + self._refresh
