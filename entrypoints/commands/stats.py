"""``vimbiso-state stats``: conversations, keys by kind and memory, from a SCAN of the keyspace."""

from __future__ import annotations

import time
from typing import TextIO

from vimbiso_state.adapters.redis.health import human_bytes
from vimbiso_state.adapters.redis.keyspace import KINDS, keyspace_stats
from vimbiso_state.entrypoints.commands.common import CliError, close, container, describe, is_redis
from vimbiso_state.entrypoints.commands.output import ProgressBar
from vimbiso_state.services.config import Settings

WHAT = {
    "user": "critical data: profile, current account (user:{phone}:state)",
    "session": "live sessions: navigation, offer, context (session:{phone}:data)",
    "form": "forms in progress (form:{phone}:data)",
    "handled": "handled operation and message ids (handled:{phone}:ids)",
    "token": "sealed auth tokens (token:{phone})",
    "lease": "messages being handled right now (lease:{phone})",
    "effects": "effects of messages not committed yet (effects:{phone}:*)",
    "other": "keys outside the library's schema",
}


def run(config: Settings, out: TextIO, err: TextIO, *, sample: int = 200) -> int:
    if not is_redis(config):
        raise CliError(
            "stats reads a Redis keyspace: pass --redis URL or set STATE_BACKEND=redis "
            "(the memory backend lives inside one process)"
        )
    built, _ = container(config)
    bar = ProgressBar(err, "scanning")
    started = time.monotonic()
    try:
        stats = keyspace_stats(
            built.redis_client(), retry=built.redis_retry(), sample=sample, progress=bar
        )
    finally:
        bar.close()
        close(built)
    elapsed = time.monotonic() - started
    print(f"vimbiso-state stats: {describe(config)}", file=out)
    print(f"scanned {stats.scanned:,} keys in {elapsed:.2f} s", file=out)
    print(
        f"conversations: {stats.users:,} known (critical data kept), "
        f"{stats.active:,} active (a live session)",
        file=out,
    )
    print("keys by kind:", file=out)
    width = len(f"{max(stats.by_kind.values(), default=0):,}")
    for kind in (*KINDS, "effects", "other"):
        print(f"  {kind:<8} {stats.by_kind[kind]:>{width},}  {WHAT[kind]}", file=out)
    per = stats.bytes_per_conversation
    if stats.memory_problem:
        print(f"memory per conversation: {stats.memory_problem}", file=out)
    elif per is None:
        why = "not measured (--sample 0)" if sample == 0 else "no conversations to measure"
        print(f"memory per conversation: {why}", file=out)
    else:
        print(
            f"memory per conversation: {human_bytes(per)} on average "
            f"(MEMORY USAGE of every key of {stats.sampled:,} sampled user(s)); "
            f"about {human_bytes(per * stats.users)} for all {stats.users:,}",
            file=out,
        )
    return 0
