"""What the state server's settings risk (the findings behind ``vimbiso-state doctor``), and
whether it can serve now (``state.health()``).

Read-only: INFO, CONFIG GET, PING and one trivial EVAL. Every doctor check survives a server
that denies it (an ACL user, a managed Redis with CONFIG disabled): the finding then says it
cannot read the value instead of failing. Only an unreachable server raises (StateUnavailable).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from vimbiso_state.adapters.redis.aio import AsyncRedisClient, discovered
from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy
from vimbiso_state.adapters.redis.keyspace import nodes
from vimbiso_state.domain.errors import StateError, StateUnavailable
from vimbiso_state.domain.health import HEALTH_DEADLINE, StoreHealth

# A realistic conversation (three-account profile, session, form, handled ids, token) took
# about 4 KB of used_memory in bench/run.py (docs/performance.md); `vimbiso-state stats`
# measures the real figure on a live server.
CONVERSATION_BYTES = 4096
LATENCY_WARN_MS = 5.0
MEMORY_WARN_RATIO = 0.8
PINGS = 20


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return (Verdict.OK, Verdict.WARN, Verdict.FAIL).index(self)


@dataclass(frozen=True, slots=True)
class Finding:
    """One checked setting: its value, what it means for conversation state, what to do."""

    name: str
    value: str
    verdict: Verdict
    advice: str = ""


def overall(findings: list[Finding]) -> Verdict:
    """The worst verdict (OK for no findings)."""
    return max((f.verdict for f in findings), key=lambda v: v.rank, default=Verdict.OK)


class _Unreadable(Exception):
    """A read the server refused: permission (ACL) or a disabled command."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def _denied(name: str, reason: str) -> Finding:
    return Finding(name, f"cannot read ({reason})", Verdict.WARN, "")


def check_server(
    client: redis.Redis,
    *,
    retry: RetryPolicy | None = None,
    pings: int = PINGS,
    latency_warn_ms: float = LATENCY_WARN_MS,
    conversation_bytes: int = CONVERSATION_BYTES,
) -> list[Finding]:
    """Check the server behind ``client``; StateUnavailable if it cannot be reached."""
    policy = retry or RetryPolicy()
    policy.call(client.ping)  # the reachability check: unreachable raises StateUnavailable

    def read(command: Callable[[], Any]) -> Any:
        try:
            return policy.call(command)
        except Exception as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if isinstance(cause, redis.exceptions.NoPermissionError):
                raise _Unreadable("ACL") from exc
            if isinstance(cause, redis.exceptions.ResponseError):
                raise _Unreadable(f"refused: {_first_line(cause)}") from exc
            raise

    info: Mapping[str, Any] | None
    try:
        info = read(lambda: client.info())
        info_problem = ""
    except _Unreadable as exc:
        info, info_problem = None, exc.reason

    def config(name: str, info_field: str | None = None) -> str:
        """CONFIG GET name; when denied, the same value from INFO if INFO has it."""
        try:
            values = read(lambda: client.config_get(name))
        except _Unreadable as exc:
            if info is not None and info_field is not None and info_field in info:
                return str(info[info_field])
            raise exc
        for key, value in (values or {}).items():
            if _text(key) == name:
                return _text(value)
        raise _Unreadable("not reported by this server")

    findings = [
        _version(info, info_problem),
        _guard("maxmemory-policy", lambda: _policy(config("maxmemory-policy", "maxmemory_policy"))),
        _guard("appendonly", lambda: _appendonly(config("appendonly", "aof_enabled"), info)),
        _guard(
            "appendfsync",
            lambda: _appendfsync(config("appendfsync"), config("appendonly", "aof_enabled")),
        ),
        _guard(
            "maxmemory",
            lambda: _maxmemory(int(config("maxmemory", "maxmemory")), conversation_bytes),
        ),
        _used_memory(info, info_problem),
        _evictions(info, info_problem),
        _latency(client, read, pings, latency_warn_ms),
        _scripting(client, read),
    ]
    return findings


def _guard(name: str, check: Callable[[], Finding]) -> Finding:
    try:
        return check()
    except _Unreadable as exc:
        return _denied(name, exc.reason)
    except ValueError:
        return Finding(name, "unexpected value", Verdict.WARN, "")


# Script shebangs (#!lua), and with them the refusal of writing scripts on a full server.
MINIMUM_REDIS = (7, 0)


def _version(info: Mapping[str, Any] | None, problem: str) -> Finding:
    if info is None:
        return _denied("version", problem)
    facts = ServerFacts.from_info(info)
    value = f"Redis {facts.version} ({facts.mode})"
    release = facts.release
    if release is None:
        return Finding("version", value, Verdict.WARN, "unrecognised version string")
    if release < MINIMUM_REDIS:
        return Finding(
            "version",
            value,
            Verdict.FAIL,
            "older than 7.0: the library's scripts declare themselves with a #!lua shebang "
            "(so that a full server refuses them before they write), which Redis 7.0 "
            "introduced; upgrade the server",
        )
    return Finding("version", value, Verdict.OK)


_POLICY_ALTERNATIVES = (
    "Alternatives: noeviction (nothing is ever dropped silently; when memory is full writes fail "
    "with StateUnavailable, so size maxmemory and alert on used memory) or volatile-ttl (drops "
    "the keys nearest their expiry first: sessions, then forms and tokens; profiles go last)."
)


def _policy(policy: str) -> Finding:
    name = "maxmemory-policy"
    if policy.startswith("allkeys-"):
        return Finding(
            name,
            policy,
            Verdict.WARN,
            "when memory is full Redis may evict any key, critical state included. The library "
            "treats a missing key as an expiry (the user is told and starts at the menu), but "
            "the member's profile, current account or unfinished form is lost. "
            + _POLICY_ALTERNATIVES,
        )
    if policy in ("volatile-lru", "volatile-lfu", "volatile-random"):
        return Finding(
            name,
            policy,
            Verdict.WARN,
            "every key this library writes has a TTL, so on a state-only server this evicts "
            "like allkeys-*: profiles and forms can be lost. " + _POLICY_ALTERNATIVES,
        )
    if policy == "volatile-ttl":
        return Finding(
            name,
            policy,
            Verdict.OK,
            "when full, the keys nearest their expiry go first (sessions, then forms and "
            "tokens); a user may be sent back to the menu, profiles are kept longest",
        )
    if policy == "noeviction":
        return Finding(
            name,
            policy,
            Verdict.OK,
            "nothing is evicted; when memory is full writes fail (StateUnavailable) and users "
            "must retry: keep used memory well below maxmemory",
        )
    return Finding(name, policy, Verdict.WARN, "unknown policy")


def _appendonly(value: str, info: Mapping[str, Any] | None) -> Finding:
    enabled = value.lower() in ("yes", "1")
    if not enabled:
        return Finding(
            "appendonly",
            "no",
            Verdict.FAIL,
            "no AOF: a Redis restart loses every conversation written since the last RDB "
            "snapshot, if any. Run redis-server with --appendonly yes --appendfsync everysec.",
        )
    if info is not None and str(info.get("aof_last_write_status", "ok")) != "ok":
        return Finding(
            "appendonly",
            "yes, but the last AOF write failed",
            Verdict.FAIL,
            "Redis cannot write its AOF (disk full or read-only?) and refuses writes until it can",
        )
    return Finding("appendonly", "yes", Verdict.OK, "writes are logged and replayed on restart")


def _appendfsync(value: str, appendonly: str) -> Finding:
    if appendonly.lower() not in ("yes", "1"):
        return Finding("appendfsync", f"{value} (unused: appendonly is no)", Verdict.OK)
    if value == "everysec":
        return Finding(
            "appendfsync",
            value,
            Verdict.OK,
            "up to about 1 s of acknowledged writes can be lost if the machine or Redis crashes",
        )
    if value == "always":
        return Finding(
            "appendfsync",
            value,
            Verdict.OK,
            "nothing acknowledged is lost; every write waits for the disk (slower)",
        )
    return Finding(
        "appendfsync",
        value,
        Verdict.WARN,
        "the OS flushes when it chooses (often about 30 s): a machine crash can lose that much; "
        "use everysec",
    )


def _maxmemory(limit: int, conversation_bytes: int) -> Finding:
    if limit <= 0:
        return Finding(
            "maxmemory",
            "0 (unbounded)",
            Verdict.WARN,
            "Redis grows until the machine runs out of memory, where the OS (not the eviction "
            "policy) decides what dies; set maxmemory (the seed uses 256mb)",
        )
    fits = limit // max(1, conversation_bytes)
    return Finding(
        "maxmemory",
        human_bytes(limit),
        Verdict.OK,
        f"room for about {fits:,} conversations of ~{human_bytes(conversation_bytes)}",
    )


def _used_memory(info: Mapping[str, Any] | None, problem: str) -> Finding:
    if info is None:
        return _denied("used memory", problem)
    facts = ServerFacts.from_info(info)
    used, limit = facts.used_memory, facts.maxmemory
    if limit <= 0:
        return Finding("used memory", human_bytes(used), Verdict.OK)
    ratio = used / limit
    value = f"{human_bytes(used)} of {human_bytes(limit)} ({ratio:.0%})"
    if ratio >= MEMORY_WARN_RATIO:
        effect = (
            "Redis will start evicting keys" if facts.evicts_state else "writes will start failing"
        )
        return Finding("used memory", value, Verdict.WARN, f"close to maxmemory: {effect}")
    return Finding("used memory", value, Verdict.OK)


def _evictions(info: Mapping[str, Any] | None, problem: str) -> Finding:
    if info is None:
        return _denied("evicted keys", problem)
    evicted = int(info.get("evicted_keys", 0))
    if evicted:
        return Finding(
            "evicted keys",
            f"{evicted:,} since the server started",
            Verdict.WARN,
            "memory ran out and keys were dropped: those users lost state (seen as an expiry); "
            "raise maxmemory or change the policy",
        )
    return Finding("evicted keys", "0 since the server started", Verdict.OK)


def _latency(
    client: redis.Redis, read: Callable[[Callable[[], Any]], Any], pings: int, warn_ms: float
) -> Finding:
    samples: list[float] = []
    for _ in range(max(1, pings)):
        started = time.perf_counter()
        read(client.ping)
        samples.append((time.perf_counter() - started) * 1000)
    median = statistics.median(samples)
    value = f"median {median:.2f} ms, max {max(samples):.2f} ms over {len(samples)} PINGs"
    if median > warn_ms:
        return Finding(
            "latency",
            value,
            Verdict.WARN,
            f"above {warn_ms:g} ms: every message costs at least two round trips (load and "
            "save); put Redis next to the bot",
        )
    return Finding("latency", value, Verdict.OK)


def _scripting(client: redis.Redis, read: Callable[[Callable[[], Any]], Any]) -> Finding:
    try:
        reply = read(lambda: client.eval("return 1", 0))
    except _Unreadable as exc:
        return Finding(
            "scripting",
            f"cannot run EVAL ({exc.reason})",
            Verdict.FAIL,
            "the library loads and saves with Lua scripts: allow EVAL, EVALSHA and SCRIPT LOAD",
        )
    if reply != 1:
        return Finding("scripting", f"EVAL returned {reply!r}", Verdict.FAIL, "")
    return Finding("scripting", "EVAL works", Verdict.OK)


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# health(): can the server take the library's writes now?
#
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
