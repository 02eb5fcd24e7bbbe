"""What one poll for expiry events costs, with many users and few of them due.

    .venv/bin/python bench/expirations.py                 # 100,000 users, one Redis and a cluster
    .venv/bin/python bench/expirations.py --users 20000 --no-cluster

Each user has a live session (so an entry in the expiry index, not yet due); then, each round,
100 more users leave a form with ``form_ttl`` of 1 s, and once their deadline has passed one
``with state.expirations(limit=100) as batch`` takes them (claim, check against the
conversations, acknowledge). Printed per poll: wall time, round trips, the server's usec
(commandstats of the commands sent, nested calls included) and main-thread CPU, and the same
for a poll that finds nothing due. The index's bytes are MEMORY USAGE of its keys. The same
run with a hundredth of the users shows whether the cost grows with users who are not due.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests")]

import redis  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from redis_cluster import LocalCluster  # noqa: E402
from redis_servers import RedisProcess  # noqa: E402
from server_stats import OWN_COMMANDS, command_stats, main_thread_cpu  # noqa: E402
from wire_log import wire  # noqa: E402

from vimbiso_state import Container, Settings, StateService  # noqa: E402

DUE = 100  # events a poll takes (its limit)
FORM_TTL = 1  # seconds: the due users' forms
BASE = 263_780_000_000  # the idle users' numbers; the due users' start at BASE + 5,000,000


@dataclass(frozen=True)
class Poll:
    events: int
    wall_us: float
    round_trips: int
    server_usec: int  # commandstats usec of the commands sent (scripts include their calls)
    server_cpu_us: float  # the main threads' CPU, parsing and network included


def _masters(url: str, cluster: bool) -> list[redis.Redis]:
    if not cluster:
        return [redis.Redis.from_url(url)]
    probe = redis.RedisCluster.from_url(url)
    nodes = [redis.Redis(host=n.host, port=n.port) for n in probe.get_primaries()]
    probe.close()
    return nodes


def _settings(url: str, cluster: bool, key: str, **timeouts: int) -> Settings:
    backend = "redis-cluster" if cluster else "redis"
    return Settings(backend=backend, redis_url=url, token_keys=(key,), **timeouts)


def _fill(state: StateService, numbers: range, threads: int = 8) -> None:
    def start(chunk: range) -> None:
        for n in chunk:
            state.start(f"+{n}")

    step = max(1, len(numbers) // (threads * 4))
    chunks = [numbers[i : i + step] for i in range(0, len(numbers), step)]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(start, chunks))


def _leave_forms(state: StateService, numbers: range) -> None:
    for n in numbers:
        with state.message(f"+{n}", f"wamid.bench{n}", "offer") as msg:
            msg.form_start("offer", required=["amount", "recipient"])
            msg.form_fill(amount="USD 25")


def _measured(masters: list[redis.Redis], poll: Callable[[], int]) -> Poll:
    before = [(command_stats(m), main_thread_cpu(m)) for m in masters]
    with wire() as sent:
        started = time.perf_counter()
        events = poll()
        wall_us = (time.perf_counter() - started) * 1e6
    usec, cpu = 0, 0.0
    names = {name.lower() for name in sent}
    for master, (stats, cpu_before) in zip(masters, before, strict=True):
        cpu += main_thread_cpu(master) - cpu_before
        for name, (_, total) in command_stats(master).items():
            if name in names and name not in OWN_COMMANDS:
                usec += total - stats.get(name, (0, 0))[1]
    return Poll(events, wall_us, len(sent), usec, cpu * 1e6)


def _poll(state: StateService) -> int:
    with state.expirations(limit=DUE) as batch:
        return len(batch)


def _index_bytes(masters: list[redis.Redis]) -> int:
    total = 0
    for master in masters:
        for key in master.scan_iter(match="expiry:*", count=1000):
            total += int(master.memory_usage(key, samples=0) or 0)
    return total


def _median(polls: list[Poll], field: str) -> str:
    values = [getattr(p, field) for p in polls]
    middle = statistics.median(values)
    return f"{middle:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def measure(url: str, cluster: bool, users: int, rounds: int) -> list[str]:
    key = Fernet.generate_key().decode()
    masters = _masters(url, cluster)
    idle = Container.from_settings(_settings(url, cluster, key))
    leaving = Container.from_settings(_settings(url, cluster, key, form_ttl=FORM_TTL))
    filled = time.perf_counter()
    _fill(idle.state_service(), range(BASE, BASE + users))
    filled = time.perf_counter() - filled
    state = idle.state_service()
    _poll(state)  # scripts loaded, slot map read: not part of any poll measured
    due, empty = [], []
    for n in range(rounds):
        first = BASE + 5_000_000 + n * DUE
        _leave_forms(leaving.state_service(), range(first, first + DUE))
        time.sleep(FORM_TTL + 0.1)
        due.append(_measured(masters, lambda: _poll(state)))
        empty.append(_measured(masters, lambda: _poll(state)))
    assert all(p.events == DUE for p in due), [p.events for p in due]
    assert all(p.events == 0 for p in empty), [p.events for p in empty]
    index = _index_bytes(masters)
    idle.close()
    leaving.close()
    for master in masters:
        master.close()
    where = f"a local cluster of {len(masters)} masters" if cluster else "one Redis"
    return [
        f"{where}, {users:,} users with a live session (filled in {filled:.0f} s), "
        f"{rounds} rounds; median (low-high)",
        f"  poll taking {DUE} due events: {_median(due, 'wall_us')} us wall, "
        f"{_median(due, 'round_trips')} round trips, server {_median(due, 'server_usec')} us "
        f"(commandstats), {_median(due, 'server_cpu_us')} us main-thread CPU",
        f"  poll finding nothing due:    {_median(empty, 'wall_us')} us wall, "
        f"{_median(empty, 'round_trips')} round trips, server {_median(empty, 'server_usec')} us "
        f"(commandstats), {_median(empty, 'server_cpu_us')} us main-thread CPU",
        f"  expiry index: {index:,} bytes ({index / max(users, 1):.1f} bytes a user with a "
        "live session)",
    ]


@contextmanager
def server(cluster: bool) -> Iterator[str]:
    if cluster:
        with LocalCluster(masters=3) as local:
            yield local.url
    else:
        with RedisProcess() as process:
            yield process.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-cluster", action="store_true", help="one Redis only")
    args = parser.parse_args(argv)
    kinds = [False] if args.no_cluster else [False, True]
    print(f"redis-py {redis.__version__}; expiry poll cost; limit={DUE}, form_ttl={FORM_TTL} s")
    for cluster in kinds:
        for users in (args.users // 100, args.users):
            with server(cluster) as url:
                print("\n".join(measure(url, cluster, users, args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
