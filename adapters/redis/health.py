"""Whether the state server can take the library's writes now: ``state.health()`` on Redis,
for one server or every primary of a cluster, answered within a deadline.

Read-only: INFO, one trivial EVAL that the server refuses exactly when it would refuse the
library's commits, and one PING for the round trip.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from vimbiso_state.adapters.redis.aio import AsyncRedisClient, discovered
from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy, nodes
from vimbiso_state.domain.errors import StateError, StateUnavailable
from vimbiso_state.domain.health import HEALTH_DEADLINE, StoreHealth


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What INFO says about one server: read by the doctor's findings and by health()."""

    version: str
    mode: str
    role: str
    used_memory: int
    maxmemory: int  # 0: no limit
    policy: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServerFacts:
        return cls(
            version=str(info.get("redis_version", "unknown")),
            mode=str(info.get("redis_mode", "standalone")),
            role=str(info.get("role", "master")),
            used_memory=int(info.get("used_memory", 0)),
            maxmemory=int(info.get("maxmemory", 0) or 0),
            policy=str(info.get("maxmemory_policy", "")),
        )

    @property
    def release(self) -> tuple[int, int] | None:
        """(major, minor), or None for a version string that is not one."""
        try:
            major, minor = (int(part) for part in self.version.split(".")[:2])
        except ValueError:
            return None
        return major, minor

    @property
    def evicts_state(self) -> bool:
        """Whether a full server drops keys: every key the library writes has a TTL, so the
        volatile-* policies evict conversation state as allkeys-* do; only noeviction
        refuses the write instead."""
        return self.policy != "noeviction"


# A script that declares itself (#!lua) without flags is one that may write, so the server
# refuses it exactly when it would refuse the library's commits: over maxmemory with nothing to
# evict (OOM), a read-only replica (READONLY), a failed disk write (MISCONF), too few replicas
# (NOREPLICAS). It writes nothing.
WRITE_CHECK = "#!lua\nreturn 1"


@dataclass(frozen=True, slots=True)
class ServerReading:
    """What health() read from one server: its facts and one PING's round trip."""

    facts: ServerFacts | None  # None: INFO was denied (an ACL user)
    latency_ms: float


def _served(info: Any, write: Any) -> ServerFacts | None:
    """The facts from one server's INFO and write-check replies; StateUnavailable when the
    server cannot take writes."""
    facts = None if isinstance(info, Exception) else ServerFacts.from_info(info)
    if facts is not None and facts.role != "master":
        raise StateUnavailable(
            f"the state Redis is a {facts.role} (a read-only replica): point REDIS_STATE_URL "
            "at the primary"
        )
    if isinstance(write, Exception):
        raise write
    if isinstance(info, Exception) and not isinstance(info, redis.exceptions.ResponseError):
        raise info
    return facts


def _unavailable(exc: Exception) -> StateUnavailable:
    """``exc`` (a Redis failure) as the StateUnavailable health() raises."""
    if isinstance(exc, StateUnavailable):
        return exc
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return StateUnavailable(f"the state Redis refuses writes (a read-only replica): {exc}")
    try:
        RetryPolicy(retries=0).pause_after(exc, 0)
    except StateUnavailable as mapped:
        return mapped
    except StateError as mapped:
        return StateUnavailable(f"the state Redis cannot serve the library: {mapped}")
    raise AssertionError("pause_after raises for every error when no retry is left")


def _late(deadline: float, exc: Exception | None = None) -> StateUnavailable:
    cause = f": {exc}" if exc is not None else ""
    return StateUnavailable(f"the state Redis did not answer within {deadline:g} s{cause}")


# One more attempt after a connection error or timeout (a connection the server reset),
# when it fits in the deadline.
_RETRY_ONCE = RetryPolicy(retries=1)


def _pause_or_raise(
    exc: Exception, attempt: int, until: float, bound: float, deadline: float
) -> float:
    """The pause before the next attempt after ``exc``; StateUnavailable when there is none
    (not a transient error, retried already, or another attempt of up to ``bound`` seconds
    would end past ``until``). A non-Redis error propagates unchanged."""
    if isinstance(exc, StateUnavailable | redis.exceptions.ReadOnlyError):
        raise _unavailable(exc) from exc
    try:
        pause = _RETRY_ONCE.pause_after(exc, attempt)
    except StateError:
        raise _unavailable(exc) from exc
    if time.monotonic() + pause + bound > until:
        raise _late(deadline, exc) from exc
    return pause


def _version_order(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def store_health(backend: str, readings: Sequence[ServerReading]) -> StoreHealth:
    """The facts of every server checked, as one StoreHealth (see its docstring)."""
    known = [r.facts for r in readings if r.facts is not None]
    policies = sorted({f.policy for f in known})
    return StoreHealth(
        backend=backend,
        servers=len(readings),
        server_version=min((f.version for f in known), key=_version_order, default=None),
        maxmemory_policy=",".join(policies) or None,
        used_memory=sum(f.used_memory for f in known) if known else None,
        maxmemory=(0 if any(f.maxmemory == 0 for f in known) else sum(f.maxmemory for f in known))
        if known
        else None,
        evicts_state=any(f.evicts_state for f in known) if known else None,
        latency_ms=round(max(r.latency_ms for r in readings), 3),
    )


class RedisHealthProbe:
    """health() for one Redis or every primary of a cluster, answered within ``deadline``.

    ``client`` gives a client whose connect plus socket timeout is at most ``attempt``
    seconds; a failed attempt is tried once more only when another fits in the deadline.
    """

    def __init__(
        self,
        client: Callable[[], RedisClient],
        backend: str,
        attempt: float,
        deadline: float = HEALTH_DEADLINE,
    ) -> None:
        self._client = client
        self._backend = backend
        self._attempt = attempt
        self._deadline = deadline

    def health(self) -> StoreHealth:
        until = time.monotonic() + self._deadline
        for attempt in itertools.count():
            try:
                return store_health(self._backend, self._read_all(until))
            except Exception as exc:
                time.sleep(_pause_or_raise(exc, attempt, until, self._attempt, self._deadline))
        raise AssertionError("unreachable")  # pragma: no cover - count() never ends

    def _read_all(self, until: float) -> list[ServerReading]:
        readings = []
        for _, server in nodes(self._client()):
            if time.monotonic() > until:  # a cluster's primaries, one after another
                raise _late(self._deadline)
            readings.append(_read(server))
        return readings


def _read(server: redis.Redis) -> ServerReading:
    pipe = server.pipeline(transaction=False)
    pipe.info()
    pipe.eval(WRITE_CHECK, 0)
    info, write = pipe.execute(raise_on_error=False)
    facts = _served(info, write)
    started = time.perf_counter()  # after the pipeline: the connection is open, RTT only
    server.ping()
    return ServerReading(facts, (time.perf_counter() - started) * 1000)


class AsyncRedisHealthProbe:
    """RedisHealthProbe for asyncio; the deadline is also a hard timeout around the calls."""

    def __init__(
        self,
        client: Callable[[], AsyncRedisClient],
        backend: str,
        attempt: float,
        deadline: float = HEALTH_DEADLINE,
    ) -> None:
        self._client = client
        self._backend = backend
        self._attempt = attempt
        self._deadline = deadline

    async def health(self) -> StoreHealth:
        until = time.monotonic() + self._deadline
        for attempt in itertools.count():
            try:
                async with asyncio.timeout(until - time.monotonic()):
                    return store_health(self._backend, await self._read_all())
            except TimeoutError as exc:
                raise _late(self._deadline, exc) from exc
            except Exception as exc:
                pause = _pause_or_raise(exc, attempt, until, self._attempt, self._deadline)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover - count() never ends

    async def _read_all(self) -> list[ServerReading]:
        client = self._client()
        if isinstance(client, AsyncRedisCluster):
            await discovered(client)
            return [await _aread_node(client, node) for node in client.get_primaries()]
        return [await _aread(client)]


async def _aread(server: redis.asyncio.Redis) -> ServerReading:
    async with server.pipeline(transaction=False) as pipe:
        pipe.info()
        pipe.eval(WRITE_CHECK, 0)
        info, write = await pipe.execute(raise_on_error=False)
    facts = _served(info, write)
    return ServerReading(facts, await _timed(server.ping()))


async def _aread_node(client: AsyncRedisCluster, node: ClusterNode) -> ServerReading:
    info: Any
    try:
        info = await client.info(target_nodes=node)
    except redis.exceptions.ResponseError as exc:
        info = exc
    write: Any
    try:
        write = await client.execute_command("EVAL", WRITE_CHECK, 0, target_nodes=node)
    except redis.exceptions.ResponseError as exc:
        write = exc
    facts = _served(info, write)
    return ServerReading(facts, await _timed(client.ping(target_nodes=node)))


async def _timed(call: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await call
    return (time.perf_counter() - started) * 1000
