"""Several bot processes on one conversation (Redis only): nothing lost, nothing applied twice.

Each process is a fresh interpreter ("spawn"), with its own container, connection pool and
system clock, as separate bot workers would be. They share nothing but the Redis server.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
from collections import Counter
from typing import Any

import redis
from cryptography.fernet import Fernet

from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container

PROCESSES = 4
PER_PROCESS = 25
START_TIMEOUT = 15.0  # spawning an interpreter and importing the library takes about a second
RUN_TIMEOUT = 30.0


def _worker(
    index: int, url: str, key: str, phone: str, gate: Any, results: Any
) -> None:  # pragma: no cover - runs in the child process
    """Append PER_PROCESS unique entries, each change run once; report back."""
    try:
        container = Container.from_settings(
            Settings(backend="redis", redis_url=url, token_keys=(key,))
        )
        state = container.state_service()
        state.token(phone)  # connect and load the scripts before the race starts
        gate.wait(START_TIMEOUT)
        runs = 0
        applied = []
        for i in range(PER_PROCESS):
            entry = f"p{index}-{i}"

            def change(conv: Any, entry: str = entry) -> None:
                nonlocal runs
                runs += 1
                conv.context.setdefault("entries", []).append(entry)

            state.update(phone, change)
            applied.append(entry)
            if i == 0:
                # Everyone has written once before anyone goes on: on a busy machine one
                # process could otherwise finish before the next is scheduled at all.
                gate.wait(RUN_TIMEOUT)
        container.redis_client().close()
        results.put((index, applied, runs, None))
    except BaseException as exc:
        results.put((index, [], 0, repr(exc)))


def handled_since(url: str, phone: str, version: int) -> int:
    """How many commits of the user (each records one id, scored by its version) came after
    ``version``."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcount(f"handled:{{{phone.lstrip('+')}}}", f"({version}", "+inf"))
    finally:
        client.close()


def test_processes_appending_to_one_conversation_lose_and_duplicate_nothing(
    redis_url: str,
) -> None:
    key = Fernet.generate_key().decode()
    phone = f"+{263_790_000_000 + random.randrange(10_000_000)}"
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(key,))
    )
    state = container.state_service()
    base = state.start(phone).version

    ctx = multiprocessing.get_context("spawn")
    gate = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_worker, args=(i, redis_url, key, phone, gate, results), daemon=True)
        for i in range(PROCESSES)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=START_TIMEOUT + RUN_TIMEOUT) for _ in processes]
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
    elapsed = time.monotonic() - started

    failures = [(i, error) for i, _, _, error in reports if error]
    assert not failures, f"worker processes failed: {failures}"
    applied = [entry for _, entries, _, _ in reports for entry in entries]
    assert len(applied) == PROCESSES * PER_PROCESS

    conv = state.start(phone)
    entries = conv.context["entries"]
    assert Counter(entries) == Counter(applied), "entries lost or duplicated"
    assert len(set(entries)) == PROCESSES * PER_PROCESS
    assert conv.version > base
    # Every update committed once: each of them recorded its id in the handled set.
    assert handled_since(redis_url, phone, base) == PROCESSES * PER_PROCESS
    for index in range(PROCESSES):
        mine = [e for e in entries if e.startswith(f"p{index}-")]
        assert mine == [f"p{index}-{i}" for i in range(PER_PROCESS)]
    # The writers really raced: their entries interleave in the stored list (were they run one
    # after another there would be exactly PROCESSES runs and the test would prove nothing).
    writers = [entry.split("-")[0] for entry in entries]
    runs = 1 + sum(a != b for a, b in itertools.pairwise(writers))
    assert runs > PROCESSES, "the processes did not overlap"
    # Each change ran once: none was run again after a conflict.
    assert sum(changes for _, _, changes, _ in reports) == PROCESSES * PER_PROCESS
    print(f"{PROCESSES} processes in {elapsed:.1f}s, {runs} interleaved runs")
    state.reset(phone)
    container.redis_client().close()
