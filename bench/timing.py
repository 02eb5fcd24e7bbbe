"""Timing in alternation: every case runs in short blocks, one case after another, round after
round, so that load from elsewhere on a shared machine hits them all alike. Ratios are taken
per round against the case's baseline; the median round is reported beside the lowest and
highest, which show how far one run's ratio can be trusted. Each block's process time (the
client's CPU, every thread of this process) is recorded beside its wall time; for an asyncio
case it includes starting the block's event-loop run, a microsecond or so a message.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

BLOCK = 25  # operations per timed block


@dataclass
class Case:
    """Something to time: ``run(n)`` performs n operations and returns the seconds they took."""

    name: str
    run: Callable[[int], float]
    baseline: str | None = None  # the case it is compared with (its ratio's denominator)
    rounds: list[float] = field(default_factory=list)  # microseconds per operation
    cpu_rounds: list[float] = field(default_factory=list)  # client CPU, microseconds per op


def blocking(operation: Callable[[], object]) -> Callable[[int], float]:
    def run(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            operation()
        return time.perf_counter() - started

    return run


def in_loop(
    loop: asyncio.AbstractEventLoop, operation: Callable[[], Awaitable[object]]
) -> Callable[[int], float]:
    """Timed inside the event loop, so that starting the loop is not counted."""

    async def block(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await operation()
        return time.perf_counter() - started

    return lambda n: loop.run_until_complete(block(n))


def interleave(cases: list[Case], per_round: int, rounds: int, block: int = BLOCK) -> None:
    """Time every case in alternating blocks; fills each case's ``rounds`` (wall) and
    ``cpu_rounds`` (process time) with the median block of each round, in microseconds per
    operation."""
    for case in cases:  # warm-up: connections open, scripts known, caches hot
        case.run(max(block, per_round // 10))
    for _ in range(rounds):
        blocks: dict[str, list[float]] = {case.name: [] for case in cases}
        cpu: dict[str, list[float]] = {case.name: [] for case in cases}
        for _ in range(max(1, per_round // block)):
            for case in cases:
                started = time.process_time()
                blocks[case.name].append(case.run(block) / block * 1e6)
                cpu[case.name].append((time.process_time() - started) / block * 1e6)
        for case in cases:
            case.rounds.append(statistics.median(blocks[case.name]))
            case.cpu_rounds.append(statistics.median(cpu[case.name]))


@dataclass(frozen=True)
class Ratio:
    us: float  # median round
    baseline_us: float
    ratio: float  # median of the rounds' ratios
    low: float
    high: float


def ratio(case: Case, baseline: Case, cpu: bool = False) -> Ratio:
    """Wall time (or, with ``cpu``, the client's CPU) of ``case`` against ``baseline``."""
    mine, theirs = (case.cpu_rounds, baseline.cpu_rounds) if cpu else (case.rounds, baseline.rounds)
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return Ratio(
        statistics.median(mine),
        statistics.median(theirs),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
    )


def verdict(value: float, target: float) -> str:
    return f"<= {target:g}: {'PASS' if value <= target else 'FAIL'}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table whose columns line up."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
