"""``vimbiso-state stats``: conversations, keys by kind, memory, and where conversations stand
(users per stage, forms by the first field they lack), from one SCAN of the keyspace."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

from vimbiso_state.entrypoints.commands.common import (
    CliError,
    close,
    container,
    describe,
    is_redis,
    redact,
)
from vimbiso_state.entrypoints.commands.output import ProgressBar
from vimbiso_state.services.config import Settings
from vimbiso_state.services.operations.keyspace import (
    KINDS,
    Funnel,
    KeyspaceStats,
    keyspace_stats,
)
from vimbiso_state.services.operations.server_checks import human_bytes

WHAT = {
    "user": "critical data: profile, current account (user:{phone}:state)",
    "session": "live sessions: navigation, offer, context (session:{phone}:data)",
    "form": "forms in progress (form:{phone}:data)",
    "handled": "ids of each user's last 128 units of work (handled:{phone})",
    "token": "sealed auth tokens (token:{phone})",
    "lease": "users held by a message or write right now, and who waits (lease:{phone}*)",
    "effects": "effect records, one hash a user; none expire while in doubt (effects:{phone})",
    "expiry": "the expiry index: one key, or a partition in each hash slot (expiry:{...})",
    "other": "keys outside the library's schema",
}
NO_SESSION = "(no live session)"
ANSWERED = "(all answered)"


def run(
    config: Settings, out: TextIO, err: TextIO, *, sample: int = 200, as_json: bool = False
) -> int:
    if not is_redis(config):
        raise CliError(
            "stats reads a Redis keyspace: pass --redis URL or set STATE_BACKEND=redis "
            "(the memory backend lives inside one process)"
        )
    stats, pending, overdue, elapsed = _measured(config, err, sample)
    if as_json:
        document = _document(config, stats, elapsed)
        document["expiry_events"] = {"pending": pending, "overdue": overdue}
        json.dump(document, out, indent=2)
        print(file=out)
        return 0
    print(f"vimbiso-state stats: {describe(config)}", file=out)
    print(f"scanned {stats.scanned:,} keys in {elapsed:.2f} s", file=out)
    print(
        f"conversations: {stats.users:,} known (critical data kept), "
        f"{stats.active:,} active (a live session)",
        file=out,
    )
    print("keys by kind:", file=out)
    width = len(f"{max(stats.by_kind.values(), default=0):,}")
    for kind in (*KINDS, "effects", "expiry", "other"):
        print(f"  {kind:<8} {stats.by_kind[kind]:>{width},}  {WHAT[kind]}", file=out)
    print(
        f"expiry events: {pending:,} pending (deadline not reached), {overdue:,} overdue "
        "(due, not yet handed to a consumer: state.expirations)",
        file=out,
    )
    print(f"memory per conversation: {_memory(stats, sample)}", file=out)
    if stats.funnel is not None:
        _print_funnel(stats.funnel, out)
    return 0


def _measured(config: Settings, err: TextIO, sample: int) -> tuple[KeyspaceStats, int, int, float]:
    """One SCAN of the keyspace (a progress bar on ``err``), the expiry index's counts
    (pending, overdue) and the seconds they took."""
    built, _ = container(config)
    bar = ProgressBar(err, "scanning")
    started = time.monotonic()
    try:
        now = built.clock().now()  # the server's time: deadlines as the bot sees them
        stats = keyspace_stats(
            built.redis_client(),
            retry=built.redis_retry(),
            sample=sample,
            progress=bar,
            timeouts=built.timeouts(),
            now=now,
        )
        pending, overdue = built.conversations().expiry_counts(now)
    finally:
        bar.close()
        close(built)
    return stats, pending, overdue, time.monotonic() - started


def _memory(stats: KeyspaceStats, sample: int) -> str:
    per = stats.bytes_per_conversation
    if stats.memory_problem:
        return stats.memory_problem
    if per is None:
        return "not measured (--sample 0)" if sample == 0 else "no conversations to measure"
    return (
        f"{human_bytes(per)} on average "
        f"(MEMORY USAGE of every key of {stats.sampled:,} sampled user(s)); "
        f"about {human_bytes(per * stats.users)} for all {stats.users:,}"
    )


def _print_funnel(funnel: Funnel, out: TextIO) -> None:
    rows = [*_ranked(funnel.stages), (NO_SESSION, funnel.without_session)]
    known = sum(count for _, count in rows)
    print("where conversations stand (known users by the stage of their live session):", file=out)
    if not known:
        rows = []
        print("  no conversations", file=out)
    name_width = max((len(name) for name, _ in rows), default=0)
    count_width = len(f"{max((count for _, count in rows), default=0):,}")
    for name, count in rows:
        share = f"{count / known:6.1%}"
        print(f"  {name:<{name_width}}  {count:>{count_width},}  {share}", file=out)
    print(
        "forms by the first field they lack (abandoned: the user's session expired mid-form):",
        file=out,
    )
    forms = _forms(funnel)
    if not forms:
        print("  no forms in progress", file=out)
    for row in forms:
        where = f"{row['form']} / {row['missing'] or ANSWERED}"
        print(
            f"  {where:<32}  {row['in_progress']:,} in progress, {row['abandoned']:,} abandoned",
            file=out,
        )
    if funnel.unreadable:
        print(f"unreadable sessions or forms (damaged, skipped): {funnel.unreadable:,}", file=out)


def _ranked(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Most users first, then by name: the funnel's widest stages at the top."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _forms(funnel: Funnel) -> list[dict[str, Any]]:
    places = set(funnel.in_progress) | set(funnel.abandoned)
    rows = [
        {
            "form": name,
            "missing": missing,
            "in_progress": funnel.in_progress[(name, missing)],
            "abandoned": funnel.abandoned[(name, missing)],
        }
        for name, missing in places
    ]
    return sorted(rows, key=lambda r: (-r["abandoned"] - r["in_progress"], r["form"], r["missing"]))


def _document(config: Settings, stats: KeyspaceStats, elapsed: float) -> dict[str, Any]:
    """The report as JSON, for dashboards and scripts: the same figures as the text."""
    funnel = stats.funnel or Funnel()
    per = stats.bytes_per_conversation
    return {
        "backend": config.backend,
        "redis_url": redact(config.redis_url),
        "scanned_keys": stats.scanned,
        "seconds": round(elapsed, 3),
        "conversations": {"known": stats.users, "active": stats.active},
        "keys": dict(stats.by_kind),
        "memory": {
            "sampled_users": stats.sampled,
            "bytes_per_conversation": None if per is None else round(per, 1),
            "problem": stats.memory_problem or None,
        },
        "stages": dict(_ranked(funnel.stages)),
        "without_live_session": funnel.without_session,
        "forms": _forms(funnel),
        "unreadable": funnel.unreadable,
    }
