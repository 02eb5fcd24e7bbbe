"""Where `start` and `update` spend their time beyond the Redis round trip (issue 4).

    .venv/bin/python bench/hot_path.py [--redis-url URL] [--iterations N] [--cprofile]

Times are CPU time of this thread (time.thread_time_ns), which a busy machine disturbs far
less than wall time. Without knowing the library's internals, it wraps the client's
execute_command to

- split each operation's time into "inside redis-py" (packing, socket, parsing) and the
  library code around it, in the real run;
- capture the commands and replies, replay the commands through redis-py alone, and rerun
  the operation against the recorded replies with no I/O at all (the library's own cost with
  warm caches), which is then split into the codec, resume() and the phone number.

On its private server (not with --redis-url: it resets the statistics) it also reads the
server's own time per call from INFO commandstats. --cprofile adds cProfile tables of the
library code alone.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import redis  # noqa: E402
import run as bench  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from redis_servers import RedisProcess  # noqa: E402

from adapters import codec  # noqa: E402
from adapters.redis.keys import KeySchema  # noqa: E402
from domain.conversation import CriticalData, Session  # noqa: E402
from domain.form import Form  # noqa: E402
from domain.lifecycle import resume  # noqa: E402
from domain.phone import PhoneNumber  # noqa: E402
from services.config import Settings  # noqa: E402
from services.container import Container  # noqa: E402


def cpu_us(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Median CPU microseconds of this thread per call."""
    for _ in range(max(20, n // 10)):
        fn()
    results = []
    for _ in range(rounds):
        started = time.thread_time_ns()
        for _ in range(n):
            fn()
        results.append((time.thread_time_ns() - started) / n / 1000)
    return statistics.median(results)


@contextmanager
def captured(client: redis.Redis) -> Iterator[list[tuple[tuple[Any, ...], Any]]]:
    """The arguments and reply of every command the client executes."""
    commands: list[tuple[tuple[Any, ...], Any]] = []
    original = client.execute_command

    def record(*args: Any, **options: Any) -> Any:
        reply = original(*args, **options)
        commands.append((args, reply))
        return reply

    client.execute_command = record  # type: ignore[method-assign]
    try:
        yield commands
    finally:
        del client.execute_command


@contextmanager
def offline(client: redis.Redis, commands: list[tuple[tuple[Any, ...], Any]]) -> Iterator[None]:
    """The client answers with the recorded replies, in order, without touching the network:
    what remains is the library's own CPU time."""
    replies = itertools.cycle([reply for _, reply in commands])
    client.execute_command = lambda *args, **options: next(replies)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del client.execute_command


def split_us(client: redis.Redis, fn: Callable[[], object], n: int) -> tuple[float, float]:
    """CPU us per call: in all, and inside redis-py (packing, socket, parsing) alone."""
    inside = [0]
    original = client.execute_command

    def timed(*args: Any, **options: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return original(*args, **options)
        finally:
            inside[0] += time.thread_time_ns() - started

    fn()
    results = []
    client.execute_command = timed  # type: ignore[method-assign]
    try:
        for _ in range(5):
            inside[0] = 0
            started = time.thread_time_ns()
            for _ in range(n):
                fn()
            results.append(((time.thread_time_ns() - started) / n / 1000, inside[0] / n / 1000))
    finally:
        del client.execute_command
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def server_us(client: redis.Redis, fn: Callable[[], object], n: int) -> dict[str, float]:
    """usec per call of each top-level command (a script's figure includes its body)."""
    client.config_resetstat()
    for _ in range(n):
        fn()
    stats = client.info("commandstats")
    if "cmdstat_evalsha" in stats:  # the commands inside a script are counted on their own too
        stats = {"cmdstat_evalsha": stats["cmdstat_evalsha"]}
    return {
        name.removeprefix("cmdstat_"): float(value["usec_per_call"])
        for name, value in stats.items()
        if name != "cmdstat_config|resetstat"
    }


def breakdown(name: str, rows: list[tuple[str, float]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{name}"]
    lines += [f"  {label.ljust(width)}  {value:7.1f} us" for label, value in rows]
    return "\n".join(lines)


def run(url: str, n: int, profile: bool, private: bool) -> None:
    key = Fernet.generate_key().decode()
    container = Container.from_settings(Settings(backend="redis", redis_url=url, token_keys=(key,)))
    state, client = container.state_service(), container.redis_client()
    phone = bench.phone_block(1)[0]
    number = PhoneNumber.parse(phone)
    raw = bench.Bench(state, client, [phone], n, 5, 1.0)
    try:
        bench.build_conversation(state, phone)
        raw.store_raw(phone)
        report(container, raw, phone, n, profile, private)
    finally:
        client.delete(*KeySchema().for_user(number).all, raw.raw_key(phone))
        client.close()


def report(
    container: Container, raw: bench.Bench, phone: str, n: int, profile: bool, private: bool
) -> None:
    state, client = raw.state, raw.client
    number = PhoneNumber.parse(phone)
    operations = {"start": lambda: state.start(phone), "update": bench.select_account(state, phone)}
    sent = {}
    for name, operation in operations.items():
        operation()  # warm-up: scripts loaded, connection open
        with captured(client) as sent[name]:
            operation()

    def replay(name: str) -> Callable[[], None]:
        def send() -> None:
            for args, _ in sent[name]:
                client.execute_command(*args)

        return send

    def library(name: str) -> float:
        with offline(client, sent[name]):
            return cpu_us(operations[name], n * 5)

    connection = client.connection_pool.get_connection()
    evalsha = sent["start"][0][0]
    pack = cpu_us(lambda: connection.pack_command(*evalsha), n * 5)
    pack_get = cpu_us(lambda: connection.pack_command("GET", raw.raw_key(phone)), n * 5)
    client.connection_pool.release(connection)

    docs = raw.documents(phone)
    stored = container.conversations().load(number, container.clock().now())
    conversation = state.start(phone)
    now, timeouts = container.clock().now(), Settings().timeouts

    def decode() -> None:
        for kind, doc in zip((CriticalData, Session, Form), docs, strict=True):
            codec.decode(kind, doc)

    def encode() -> None:
        for part in (conversation.critical, conversation.session, conversation.form):
            codec.encode(part)

    decoding, encoding = cpu_us(decode, n * 5), cpu_us(encode, n * 5)
    resuming = cpu_us(lambda: resume(number.digits, stored, now, timeouts), n * 5)
    parsing = cpu_us(lambda: PhoneNumber.parse(phone), n * 5)
    baseline = {"start": raw.raw_get(phone), "update": raw.raw_get_set(phone)}
    print(f"CPU time of the calling thread per operation, {n} ops x 5 rounds, medians\n")
    for name in operations:
        mine = library(name)
        known = decoding + resuming + parsing + (encoding if name == "update" else 0)
        total, inside = split_us(client, operations[name], n)
        rows = [
            ("ours, total", total),
            ("  inside redis-py calls", inside),
            ("  library code around them", total - inside),
            ("redis-py alone, replaying the same commands", cpu_us(replay(name), n)),
            (
                "raw " + ("GET" if name == "start" else "GET+SET") + " of the same bytes",
                cpu_us(baseline[name], n),
            ),
            ("library code alone, replies stubbed (no I/O, warm caches)", mine),
            ("  msgspec decode of the 3 documents", decoding),
        ]
        if name == "update":
            rows.append(("  msgspec encode of the 3 documents", encoding))
        rows += [
            ("  resume()", resuming),
            ("  PhoneNumber.parse", parsing),
            ("  the rest: service, repository, arguments", mine - known),
        ]
        if name == "start":
            rows += [
                ("packing the EVALSHA (redis-py)", pack),
                ("packing a GET (redis-py)", pack_get),
            ]
        commands = [args[0] for args, _ in sent[name]]
        print(breakdown(f"{name}: {len(commands)} round trip(s) {commands}", rows))
        print()
    if private:
        print("Server time per call (INFO commandstats; a script's figure includes its body)")
        labelled = [*operations.items(), ("raw GET", baseline["start"])]
        for label, fn in [*labelled, ("raw GET+SET", baseline["update"])]:
            figures = server_us(client, fn, n)
            print(f"  {label:12s} " + ", ".join(f"{k} {v:.1f} us" for k, v in figures.items()))
    if profile:
        for name, operation in operations.items():
            profiler = cProfile.Profile()
            with offline(client, sent[name]):
                profiler.runcall(lambda op=operation: [op() for _ in range(n * 5)])
            print(f"\ncProfile of the library code alone, {n * 5} x {name}, by own time")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this server instead of a private one")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile tables")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.redis_url or stack.enter_context(RedisProcess()).url
        run(url, args.iterations, args.cprofile, private=not args.redis_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
