"""Messages a second with 1, 4 and 8 processes (each its own container and users), raw
GET+SET of the same bytes likewise, the server's CPU meanwhile, and redis-benchmark's rate for
the same commands: which side is the limit.
"""

from __future__ import annotations

import contextlib
import csv
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

import redis
from harness import Bench
from raw_store import TTL_MS, copy_user, get_set, raw_key
from realistic import ANSWERS, Messages, change, log_in, message_id
from server_stats import main_thread_cpu
from timing import table

from vimbiso_state.services.state_service import StateService

PROCESSES = (1, 4, 8)
USERS_PER_PROCESS = 8
# Forked, as gunicorn --preload and Celery prefork start their workers; each builds its own
# container after the fork, as a bot's post-fork hook would.
_FORK = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class Cell:
    rate: float  # messages a second, all processes
    redis_cpu: float  # the server's main thread, share of one core
    client_cpu: float  # the processes' CPU, in cores


def _ours(bench: Bench, phones: list[str]) -> Callable[[], object]:
    state = bench.container().state_service()
    for phone in phones:
        log_in(state, phone)
    return Messages(state, phones).one


def _raw(bench: Bench, phones: list[str], value: bytes) -> Callable[[], object]:
    client = bench.raw_client()
    for phone in phones:
        client.set(raw_key(phone), value, px=TTL_MS)
    return get_set(client, phones)


def _worker(
    make: Callable[[], Callable[[], object]],
    ready: Barrier,
    seconds: float,
    results: Any,
) -> None:
    operation = make()
    for _ in range(20):
        operation()  # connections open, scripts known
    ready.wait()
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        operation()
        count += 1
    results.put((count, time.process_time() - cpu))


def _cell(bench: Bench, processes: int, seconds: float, make: Callable[[list[str]], Any]) -> Cell:
    ready = _FORK.Barrier(processes + 1)
    results = _FORK.Queue()
    workers = []
    for _ in range(processes):
        phones = bench.users.take(USERS_PER_PROCESS)
        worker = _FORK.Process(
            target=_worker, args=(lambda p=phones: make(p), ready, seconds, results)
        )
        worker.start()
        workers.append(worker)
    ready.wait(timeout=120)
    cpu = main_thread_cpu(bench.probe)
    time.sleep(seconds)
    redis_cpu = main_thread_cpu(bench.probe) - cpu
    done = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join()
    return Cell(
        sum(count for count, _ in done) / seconds,
        redis_cpu / seconds,
        sum(cpu for _, cpu in done) / seconds,
    )


def redis_benchmark(
    probe: redis.Redis, clients: int, args: list[str], requests: int
) -> dict[str, float]:
    """redis-benchmark's requests a second per test, on the probe's server."""
    options = probe.connection_pool.connection_kwargs
    command = [
        "redis-benchmark",
        "-h", str(options.get("host", "127.0.0.1")),
        "-p", str(options.get("port", 6379)),
        "-c", str(clients),
        "-n", str(requests),
        "--csv",
        *args,
    ]  # fmt: skip
    if options.get("password"):
        command[1:1] = ["-a", str(options["password"])]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {row["test"]: float(row["rps"]) for row in csv.DictReader(output.splitlines())}


def _benchmark_rows(bench: Bench, size: int, begin: list[bytes] | None) -> list[list[str]]:
    """redis-benchmark: GET+SET of the same bytes, and the message's first script call
    replayed as the library sent it."""
    rows = []
    for clients in PROCESSES:
        rates = redis_benchmark(
            bench.probe, clients, ["-t", "get,set", "-d", str(size), "-r", "100000"], 100_000
        )
        pair = 1 / (1 / rates["GET"] + 1 / rates["SET"])
        # A NUL cannot pass on a command line: the replay's message digest has 0s there.
        begin_rate = "-"
        if begin is not None:
            replay = [arg.replace(b"\0", b"0").decode("latin-1") for arg in begin]
            replayed = redis_benchmark(bench.probe, clients, replay, 50_000)
            begin_rate = f"{next(iter(replayed.values())):,.0f}"
        rows.append(
            [
                str(clients),
                f"{rates['GET']:,.0f}",
                f"{rates['SET']:,.0f}",
                f"{pair:,.0f}",
                begin_rate,
            ]
        )
    return rows


class _Unfinished(Exception):
    """A handler's failure: the message stores nothing and its id stays unhandled."""


def _recorded(bench: Bench, action: Callable[[StateService, str], object]) -> list[list[bytes]]:
    """The commands ``action`` sends for a logged-in user of its own, as redis-py packs
    their arguments."""
    container = bench.container()
    state = container.state_service()
    (phone,) = bench.users.take(1)
    log_in(state, phone)
    client = container.redis_client()
    sent: list[list[bytes]] = []
    original = client.execute_command

    def recording(*args: Any, **options: Any) -> Any:
        sent.append([a if isinstance(a, bytes) else str(a).encode() for a in args])
        return original(*args, **options)

    client.execute_command = recording  # type: ignore[method-assign]
    try:
        with contextlib.suppress(_Unfinished):
            action(state, phone)
    finally:
        client.execute_command = original  # type: ignore[method-assign]
        container.close()
    return sent


def _unfinished(state: StateService, phone: str) -> None:
    with state.message(phone, message_id(2), ANSWERS[0]) as msg:
        change(msg, 0)
        raise _Unfinished


def script_calls(bench: Bench) -> tuple[str, list[bytes] | None]:
    """The names of the commands a realistic message sends, and the arguments of its first
    (the begin) as sent by a message that then failed: replayed, that begin finds the id
    unhandled and does its whole work each time, holding the lease again. None when the
    begin was not one command through the client (a pipeline, say): then nothing is
    replayed."""
    message = _recorded(bench, lambda state, phone: Messages(state, [phone]).one())
    unfinished = _recorded(bench, _unfinished)
    begin = unfinished[0] if unfinished else None
    return " + ".join(call[0].decode() for call in message), begin


def throughput(bench: Bench, seconds: float) -> str:
    (sample,) = bench.users.take(1)
    state = bench.container().state_service()
    log_in(state, sample)
    size = copy_user(bench.probe, sample)
    value = bench.probe.get(raw_key(sample)) or b""
    rows = []
    cells: dict[int, Cell] = {}
    for processes in PROCESSES:
        ours = cells[processes] = _cell(bench, processes, seconds, lambda p: _ours(bench, p))
        raw = _cell(bench, processes, seconds, lambda p: _raw(bench, p, value))
        rows.append(
            [
                str(processes),
                f"{ours.rate:,.0f}",
                f"{raw.rate:,.0f}",
                f"{ours.rate / raw.rate:.2f}",
                f"{ours.redis_cpu:.0%} / {raw.redis_cpu:.0%}",
                f"{ours.client_cpu:.2f} / {raw.client_cpu:.2f}",
                f"{ours.rate / max(ours.redis_cpu, 1e-9):,.0f}",
            ]
        )
    headers = [
        "processes",
        "ours msg/s",
        "raw GET+SET msg/s",
        "ours/raw",
        "Redis main thread busy (ours / raw)",
        "client CPU, cores (ours / raw)",
        "ours at 100% Redis",
    ]
    lines = [
        f"Throughput: realistic messages, {seconds:g} s per cell, each process its own "
        f"container and {USERS_PER_PROCESS} users; raw GET+SET of the same {size:,} B",
        table(headers, rows),
        _limit(cells[max(PROCESSES)]),
    ]
    if shutil.which("redis-benchmark"):
        names, begin = script_calls(bench)
        lines += [
            "",
            f"redis-benchmark on the same server (requests/s; a message sends {names}). "
            "GET+SET: -t get,set -d SIZE -r 100000; the begin: the message's first call "
            "replayed as sent (it holds the lease again each time, so it does its whole "
            "work); the commit cannot be replayed: it consumes its lease and bumps the version",
            table(
                ["clients", "GET", "SET", "GET+SET pairs", "message begin (EVALSHA)"],
                _benchmark_rows(bench, size, begin),
            ),
        ]
    return "\n".join(lines)


def _limit(cell: Cell) -> str:
    processes = max(PROCESSES)
    if cell.redis_cpu >= 0.9:
        busy = f"{cell.redis_cpu:.0%}"
        return f"At {processes} processes Redis's main thread is {busy} busy: Redis is the limit."
    return (
        f"At {processes} processes Redis's main thread is {cell.redis_cpu:.0%} busy and the "
        f"client processes use {cell.client_cpu:.2f} of the machine's "
        f"{multiprocessing.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}: the "
        "rest is other work on the machine): the clients and the machine are the limit, not "
        "Redis."
    )
