"""Where a message's client CPU goes, by part, beside the floor's whole message.

    .venv/bin/python bench/client_parts.py [--messages N]

A private redis-server (the seed's flags), 16 users of the library and 16 of the floor in
their steady state (bench/run.py's), then N realistic messages of each. The CPU time of the
calling thread (no profiler: its overhead would follow the number of Python calls, not their
cost) is added up inside each part below; what is left is the message API, the flows, the
driver, telemetry, the server clock and the pool around them. redis-py's share is taken the
same way for the floor. It measures, it does not test: it always exits 0.
"""

from __future__ import annotations

import argparse
import collections
import functools
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import realistic
import redis.client
from harness import bench
from run import sync_systems

from vimbiso_state.adapters.redis import calls
from vimbiso_state.services import flows

REDIS_PY = "redis-py (packing, sending, reading and parsing; I/O's own CPU)"
spent: collections.Counter[str] = collections.Counter()
_inside = [False]


def _timed(function: Callable[..., Any], part: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if _inside[0]:  # a part within a part counts once, in the outer one
            return function(*args, **kwargs)
        _inside[0] = True
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[part] += time.thread_time() - started
            _inside[0] = False

    return timed


def _time(owner: Any, name: str, part: str) -> None:
    function = getattr(owner, name)
    timed = _timed(function, part)
    is_static = isinstance(vars(owner).get(name), staticmethod)
    setattr(owner, name, staticmethod(timed) if is_static else timed)


_time(redis.client.Redis, "execute_command", REDIS_PY)
_time(redis.client.Pipeline, "execute", REDIS_PY)
_time(calls.ScriptCalls, "begin_reply", "decode and check the stored documents")
_time(calls.ScriptCalls, "begin_args", "encode: begin's arguments")
_time(calls.ScriptCalls, "commit_args", "encode: the changed parts, commit's arguments")
_time(flows.Flows, "open", "domain: resume (expiry rules, greeting)")
_time(flows, "_write_of", "domain: what changed")
realistic.change = _timed(realistic.change, "domain: the handler's three changes")


def _per_message(operation: Callable[[], object], messages: int) -> float:
    """Microseconds of this thread's CPU a message."""
    spent.clear()
    started = time.thread_time()
    for _ in range(messages):
        operation()
    return (time.thread_time() - started) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=3000)
    messages = parser.parse_args().messages
    with bench(None) as b, ExitStack() as stack:
        systems = sync_systems(b, stack, 16)
        _per_message(systems["library"], 500)  # warm: caches, connections
        library = _per_message(systems["library"], messages)
        parts = {part: seconds / messages * 1e6 for part, seconds in spent.items()}
        floor = _per_message(systems["floor"], messages)
        floor_redis = spent[REDIS_PY] / messages * 1e6
    print(f"client CPU a message, us: library {library:.0f}, floor {floor:.0f}")
    print(f"  floor: {REDIS_PY} {floor_redis:.0f}; the rest {floor - floor_redis:.0f}")
    for part, us in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  library: {part} {us:.0f}")
    rest = library - sum(parts.values())
    print(f"  library: the rest (message API, flows, driver, telemetry, clock, pool) {rest:.0f}")


if __name__ == "__main__":
    main()
