"""Async throughput: AsyncStateService.update against raw redis.asyncio GET+SET (issue 8).

N coroutines on one event loop, each updating its own conversation as fast as it can for a
fixed time; the raw side does a GET and a SET of the same bytes per operation.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import redis.asyncio

from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.services.container import Container

CONCURRENCY = (1, 8, 32, 128)


async def _throughput(jobs: list[Callable[[], Awaitable[object]]], seconds: float) -> float:
    stop = False
    counts = [0] * len(jobs)

    async def work(i: int, job: Callable[[], Awaitable[object]]) -> None:
        for _ in range(5):
            await job()  # warm-up: connections opened before the clock starts
        await ready.wait()
        while not stop:
            await job()
            counts[i] += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(work(i, job)) for i, job in enumerate(jobs)]
    await asyncio.sleep(0.2)
    ready.set()
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop = True
    total = sum(counts)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return total / elapsed


async def _measure(
    container: Container, url: str, phones: list[str], account_ids: list[str], seconds: float
) -> str:
    state = container.async_state_service()
    # The same pool as the library's: 64 connections, callers wait for a free one.
    raw = redis.asyncio.Redis(
        connection_pool=redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=64)
    )
    try:
        for phone in phones:
            digits = PhoneNumber.parse(phone).digits
            await raw.set(f"bench:{{{digits}}}:async", b"x" * 2200, px=600_000)

        def ours(phone: str) -> Callable[[], Awaitable[object]]:
            ids = itertools.cycle(account_ids)
            return lambda: state.update(phone, lambda c: c.select_account(next(ids)))

        def plain(phone: str) -> Callable[[], Awaitable[object]]:
            key = f"bench:{{{PhoneNumber.parse(phone).digits}}}:async"

            async def get_set() -> None:
                value = await raw.get(key)
                await raw.set(key, value or b"", px=600_000)

            return get_set

        rows = []
        for n in CONCURRENCY:
            mine = await _throughput([ours(p) for p in phones[:n]], seconds)
            theirs = await _throughput([plain(p) for p in phones[:n]], seconds)
            rows.append((n, mine, theirs))
    finally:
        for phone in phones:
            await raw.delete(f"bench:{{{PhoneNumber.parse(phone).digits}}}:async")
        await raw.aclose()
        await container.async_redis_client().aclose()
    width = "-" * 12
    lines = [
        "coroutines | ours update ops/s | raw GET+SET ops/s | ours/raw",
        f"-----------+-------------------+-------------------+{width[:9]}",
    ]
    lines += [f"{n:<10} | {a:>17,.0f} | {b:>17,.0f} | {a / b:.2f}" for n, a, b in rows]
    return "\n".join(lines)


def async_scaling(
    container: Container, url: str, phones: list[str], account_ids: list[str], seconds: float
) -> str:
    """The table, for phones whose conversations (with these accounts) exist already."""
    return asyncio.run(_measure(container, url, phones, account_ids, seconds))
