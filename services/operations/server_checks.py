"""The doctor's checks: what a state server's settings risk for conversation state
(``vimbiso-state doctor``), one finding per setting.

Read-only: INFO, CONFIG GET, PING and one trivial EVAL. Every check survives a server that
denies it (an ACL user, a managed Redis with CONFIG disabled): the finding then says it cannot
read the value instead of failing. Only an unreachable server raises (StateUnavailable).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from vimbiso_state.adapters.redis.connection import RetryPolicy
from vimbiso_state.adapters.redis.health import ServerFacts

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


def _denied(name: str, reason: str) -> Finding:
    return Finding(name, f"cannot read ({reason})", Verdict.WARN, "")


class _Reader:
    """Reads one server's settings through the retry policy: INFO once, then CONFIG GET by
    name. A read the server refuses raises _Unreadable; an unreachable one StateUnavailable."""

    def __init__(self, client: redis.Redis, retry: RetryPolicy) -> None:
        self._client = client
        self._retry = retry
        self.info: Mapping[str, Any] | None = None
        self.info_problem = ""
        try:
            self.info = self.read(lambda: client.info())
        except _Unreadable as exc:
            self.info_problem = exc.reason

    def read(self, command: Callable[[], Any]) -> Any:
        try:
            return self._retry.call(command)
        except Exception as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if isinstance(cause, redis.exceptions.NoPermissionError):
                raise _Unreadable("ACL") from exc
            if isinstance(cause, redis.exceptions.ResponseError):
                raise _Unreadable(f"refused: {_first_line(cause)}") from exc
            raise

    def config(self, name: str, info_field: str | None = None) -> str:
        """CONFIG GET name; when denied, the same value from INFO if INFO has it."""
        try:
            values = self.read(lambda: self._client.config_get(name))
        except _Unreadable:
            info = self.info
            if info is not None and info_field is not None and info_field in info:
                return str(info[info_field])
            raise
        for key, value in (values or {}).items():
            if _text(key) == name:
                return _text(value)
        raise _Unreadable("not reported by this server")


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
    server = _Reader(client, policy)
    info, problem, config = server.info, server.info_problem, server.config
    return [
        _version(info, problem),
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
        _used_memory(info, problem),
        _evictions(info, problem),
        _latency(client, server.read, pings, latency_warn_ms),
        _scripting(client, server.read),
    ]


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
