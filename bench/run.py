"""The library against the semantic floor (bench/floor.py) and raw GET+SET, in one run.

    .venv/bin/python bench/run.py [--quick] [--only SECTIONS] [--redis-url URL]

The floor is the smallest implementation of the library's promises for one message (the
user's lease, the last 128 ids, a fenced all-or-nothing commit of the changed parts with their
TTLs; one pipeline to begin, one script to commit) on redis-py's public API. Raw GET+SET moves
the bytes of the library's user and promises nothing. Each system runs the realistic message
(bench/realistic.py) on users of its own, on one server, each user first brought to an active
user's steady state (its last 128 ids held, so that every commit also forgets the oldest).

Without --redis-url it starts a private redis-server with the seed's flags (maxmemory 256mb,
allkeys-lru, AOF everysec) and stops it at the end. With --redis-url it uses only the keys of a
random block of numbers and deletes them afterwards; server CPU is then read as differences
(other clients pollute it) and the AOF section is skipped.

Sections (--only, comma-separated; by default all but throughput):
- latency: client latency and client CPU (process time) a message, sync (redis-py) and asyncio:
  the three systems alternate in blocks of 25 messages within each round, so that drift hits
  them alike; the median round, with the lowest and highest round's ratio; round trips;
- cpu: the server's time a message: INFO commandstats usec of the commands sent (and per
  call) and INFO cpu used_cpu_sys + used_cpu_user, its idle cron subtracted; each script's
  median time inside messages (SLOWLOG);
- memory: bytes a user (MEMORY USAGE of every key of theirs) after 1 and after 200 messages;
- aof: bytes appended to the AOF a message, by command;
- callgrind: server instructions a message, on a private redis-server under valgrind's
  callgrind ("skipped (no valgrind)" without it);
- throughput: messages a second with 1, 4 and 8 processes (only when asked for).

It ends with every ratio beside its target and PASS or OVER. It measures, it does not test:
it always exits 0. With --cluster it measures only one node against three masters.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import instructions
import redis
import redis.asyncio
from aof import AofTally, appended_since_rewrite, incremental_file, rewrite
from floor import KEPT_IDS, AsyncFloor, AsyncFloorMessages, Floor, FloorMessages
from floor import log_in as floor_log_in
from harness import Bench, Users, bench, digits
from raw_store import async_get_set, copy_user, get_set, raw_key
from realistic import AsyncMessages, Messages, log_in
from server_stats import ServerCost, main_thread_cpu, measure, process_cpu, script_durations
from timing import Case, Ratio, blocking, in_loop, interleave, ratio, table
from user_bytes import describe, key_costs, keys_of, user_pattern
from wire_log import wire

SECTIONS = ("latency", "cpu", "memory", "aof", "callgrind")
SYSTEMS = ("library", "floor", "raw")
SERVER_USERS = 10  # users per system in the server-side sections
CALLGRIND_USERS = 4
# Messages a user gets before anything is measured: an active user's steady state, whose
# handled set is full (its last KEPT_IDS ids), so every commit also drops the oldest id.
STEADY = KEPT_IDS + 2  # even: each user's changes alternate, and so do the measured ones
TARGET_LATENCY = TARGET_CPU = TARGET_INSTRUCTIONS = TARGET_BYTES = 1.2
TARGET_AOF = 1.1
HEADERS = ["measure", "library", "floor", "raw", "library / floor", "target", "", "library / raw"]

Op = Callable[[], object]


@dataclass(frozen=True)
class Target:
    """One measure of the three systems, and the library's ratio to the floor."""

    measure: str
    values: tuple[str, str, str]  # library, floor, raw, as printed
    ratio: float  # library / floor
    spread: str  # "(low-high)" of the rounds' ratios, when there were rounds
    target: float | None  # None: reported, no target
    over_raw: float | None

    def row(self) -> list[str]:
        if self.target is None:
            target, verdict = "-", "report"
        else:
            target = f"<= {self.target:g}x"
            verdict = "PASS" if self.ratio <= self.target else "OVER"
        raw = "-" if self.over_raw is None else f"{self.over_raw:.2f}x"
        to_floor = f"{self.ratio:.2f}x {self.spread}".rstrip()
        return [self.measure, *self.values, to_floor, target, verdict, raw]


def _ratio_target(
    measure: str, values: dict[str, float], target: float | None, fmt: str = ",.0f"
) -> Target:
    """A Target from one figure per system (``values``: library, floor and maybe raw)."""
    library, floor, raw = (f"{values[s]:{fmt}}" if s in values else "-" for s in SYSTEMS)
    over_raw = values["library"] / values["raw"] if values.get("raw") else None
    to_floor = values["library"] / values["floor"] if values["floor"] else float("inf")
    return Target(measure, (library, floor, raw), to_floor, "", target, over_raw)


@dataclass
class Run:
    bench: Bench
    args: argparse.Namespace
    stack: ExitStack
    targets: list[Target] = field(default_factory=list)
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # asyncio clients
    _systems: dict[str, Op] | None = None

    def systems(self) -> dict[str, Op]:
        """The three systems' blocking messages on SERVER_USERS users each (made once)."""
        if self._systems is None:
            self._systems = sync_systems(self.bench, self.stack, SERVER_USERS)
        return self._systems

    def section(self, heading: str, targets: list[Target], *lines: str) -> str:
        self.targets += targets
        return "\n".join([heading, table(HEADERS, [t.row() for t in targets]), *lines])


def sync_systems(bench: Bench, stack: ExitStack, users: int, **settings: float) -> dict[str, Op]:
    """Each system's next realistic message, blocking, each on ``users`` users of its own in
    their steady state (raw GET+SET copies the library's users' bytes)."""
    container = bench.container(**settings)
    stack.callback(container.close)
    state = container.state_service()
    phones = bench.users.take(users)
    for phone in phones:
        log_in(state, phone)
        copy_user(bench.probe, phone)
    floor_client = redis.Redis.from_url(bench.url, socket_timeout=settings.get("socket_timeout"))
    raw_client = bench.raw_client()
    stack.callback(floor_client.close)
    stack.callback(raw_client.close)
    floor = Floor(floor_client)
    floor_users = [digits(phone) for phone in bench.users.take(users)]
    for user in floor_users:
        floor_log_in(floor, user, bench.token_key)
    library, floor_messages = Messages(state, phones), FloorMessages(floor, floor_users)
    _repeat(library.one, users * STEADY)()
    _repeat(floor_messages.one, users * STEADY)()
    return {"library": library.one, "floor": floor_messages.one, "raw": get_set(raw_client, phones)}


def _repeat(operation: Op, times: int) -> Callable[[], None]:
    def workload() -> None:
        for _ in range(times):
            operation()

    return workload


# Latency and client CPU ----------------------------------------------------------------------


def latency(run: Run) -> str:
    users = run.args.users
    loop = asyncio.new_event_loop()
    try:
        cases = _latency_cases(run, loop, users)
        interleave(cases, run.args.iterations, run.args.rounds)
        trips = _round_trips(cases)
    finally:
        loop.run_until_complete(_close_async(run))
        loop.close()
    by_name = {case.name: case for case in cases}
    targets = []
    for style in ("sync", "asyncio"):
        library, floor, raw = (by_name[f"{system}, {style}"] for system in SYSTEMS)
        for cpu, what, target in ((False, "latency", TARGET_LATENCY), (True, "CPU", TARGET_CPU)):
            targets.append(_timed(f"client {what}, {style}", library, floor, raw, cpu, target))
    heading = (
        f"Client latency and client CPU (process time) a message, us: {users} users per case "
        f"round robin, one connection; {run.args.iterations} messages x {run.args.rounds} "
        "rounds, the six cases alternated in blocks of 25"
    )
    return run.section(heading, targets, f"Round trips a message: {trips}")


def _timed(measure: str, library: Case, floor: Case, raw: Case, cpu: bool, target: float) -> Target:
    to_floor: Ratio = ratio(library, floor, cpu)
    to_raw = ratio(library, raw, cpu)
    values = (f"{to_floor.us:.0f}", f"{to_floor.baseline_us:.0f}", f"{to_raw.baseline_us:.0f}")
    spread = f"({to_floor.low:.2f}-{to_floor.high:.2f})"
    return Target(measure, values, to_floor.ratio, spread, target, to_raw.ratio)


def _latency_cases(run: Run, loop: asyncio.AbstractEventLoop, users: int) -> list[Case]:
    sync = sync_systems(run.bench, run.stack, users)
    made = loop.run_until_complete(_async_systems(run, users))
    cases = [Case(f"{name}, sync", blocking(op)) for name, op in sync.items()]
    return cases + [Case(f"{name}, asyncio", in_loop(loop, op)) for name, op in made.items()]


def _round_trips(cases: list[Case]) -> str:
    """Round trips of one more message of each case, connections open and scripts known."""
    counts = []
    for case in cases:
        with wire() as sent:
            case.run(1)
        counts.append(f"{case.name} {len(sent)}")
    return ", ".join(counts)


async def _async_systems(run: Run, users: int) -> dict[str, Callable[[], Awaitable[None]]]:
    """The same on redis.asyncio: the library's AsyncStateService, the AsyncFloor, raw
    redis.asyncio GET+SET; the users are logged in and brought to their steady state with
    the blocking clients."""
    bench = run.bench
    container = bench.container()
    phones = bench.users.take(users)
    state = container.state_service()
    for phone in phones:
        log_in(state, phone)
        copy_user(bench.probe, phone)
    floor_users = [digits(phone) for phone in bench.users.take(users)]
    floor = Floor(bench.probe)
    for user in floor_users:
        floor_log_in(floor, user, bench.token_key)
    _repeat(Messages(state, phones).one, users * STEADY)()
    _repeat(FloorMessages(floor, floor_users).one, users * STEADY)()
    floor_client = redis.asyncio.Redis.from_url(bench.url)
    raw_client = bench.raw_async_client()
    run.closing += [container.aclose, floor_client.aclose, raw_client.aclose]
    return {
        "library": AsyncMessages(container.async_state_service(), phones).one,
        "floor": AsyncFloorMessages(AsyncFloor(floor_client), floor_users).one,
        "raw": async_get_set(raw_client, phones),
    }


async def _close_async(run: Run) -> None:
    while run.closing:
        await run.closing.pop()()


# Server CPU ----------------------------------------------------------------------------------


def server_cpu(run: Run) -> str:
    probe, private = run.bench.probe, run.bench.private
    systems = run.systems()
    idle = _idle_per_second(probe)
    n = run.args.cpu_messages
    costs: dict[str, list[ServerCost]] = {name: [] for name in systems}
    for _ in range(run.args.cpu_rounds):  # alternated, so that drift hits them alike
        for name, op in systems.items():
            costs[name].append(_cost(probe, private, idle, n, _repeat(op, n)))
    usec = {
        name: statistics.median(c.usec_per_message for c in found) for name, found in costs.items()
    }
    cpu = {
        name: statistics.median(c.process_cpu_us_per_message for c in found)
        for name, found in costs.items()
    }
    targets = [
        _ratio_target("commandstats usec a message", usec, None, ".1f"),
        _ratio_target("INFO cpu sys+user us a message", cpu, None, ".1f"),
    ]
    lines = [_calls(name, found[-1]) for name, found in costs.items()]
    if private:
        lines.append(_per_script(probe, systems))
    heading = (
        f"Server CPU a message: {run.args.cpu_rounds} rounds of {n} messages a system, "
        f"alternated, the median round; {'after CONFIG RESETSTAT' if private else 'differences'}"
        "; INFO cpu less the idle server's"
    )
    return run.section(heading, targets, *lines)


def _calls(name: str, cost: ServerCost) -> str:
    sent = ", ".join(
        f"{command} {calls:g}x {usec:.1f} us"
        for command, (calls, usec) in sorted(cost.usec_per_call().items())
    )
    nested = cost.describe_calls(nested=True)
    return f"  {name}: sent a message (usec a call): {sent}; called by scripts a message: {nested}"


def _per_script(probe: redis.Redis, systems: dict[str, Op]) -> str:
    """Each script's median time inside messages, in the order a message calls them."""
    found = []
    for name in ("library", "floor"):
        scripts = script_durations(probe, _repeat(systems[name], 300))
        found.append(
            f"{name} " + ", ".join(f"{n}. {med:.0f}" for n, (_, med) in enumerate(scripts, 1))
        )
    return "  scripts' own time (SLOWLOG, median usec, in call order): " + "; ".join(found)


@dataclass(frozen=True)
class Idle:
    """The idle server's CPU seconds a second: its cron, and the AOF's fsync thread."""

    process: float
    main: float


def _idle_per_second(probe: redis.Redis, seconds: float = 1.0) -> Idle:
    process, main = process_cpu(probe), main_thread_cpu(probe)
    time.sleep(seconds)
    return Idle((process_cpu(probe) - process) / seconds, (main_thread_cpu(probe) - main) / seconds)


def _cost(probe: redis.Redis, private: bool, idle: Idle, messages: int, workload: Op) -> ServerCost:
    started = time.perf_counter()
    cost = measure(probe, workload, messages, reset=private)
    elapsed = time.perf_counter() - started
    return ServerCost(
        cost.messages,
        cost.commands,
        cost.sent,
        max(0.0, cost.cpu_seconds - idle.main * elapsed),
        max(0.0, cost.process_cpu_seconds - idle.process * elapsed),
        cost.names,
    )


# Bytes a user --------------------------------------------------------------------------------


def memory(run: Run) -> str:
    bench = run.bench
    state = bench.container().state_service()
    (phone,) = bench.users.take(1)
    log_in(state, phone)
    floor = Floor(bench.probe)
    floor_user = digits(bench.users.take(1)[0])
    floor_log_in(floor, floor_user, bench.token_key)
    library, floor_messages = Messages(state, [phone]), FloorMessages(floor, [floor_user])
    found: dict[int, dict[str, tuple[int, str]]] = {}
    done = 0
    for after in (1, 200):
        _repeat(library.one, after - done)()
        _repeat(floor_messages.one, after - done)()
        done = after
        copy_user(bench.probe, phone)
        found[after] = {
            "library": _user_bytes(bench, user_pattern(digits(phone))),
            "floor": _user_bytes(bench, user_pattern(floor_user)),
            "raw": _user_bytes(bench, raw_key(phone)),
        }
    targets = [
        _ratio_target(
            f"bytes a user after {after}", {s: b for s, (b, _) in found[after].items()}, target
        )
        for after, target in ((1, None), (200, TARGET_BYTES))
    ]
    keys = [f"  {name} after 200: {found[200][name][1]}" for name in ("library", "floor")]
    heading = (
        "Bytes a user: MEMORY USAGE (SAMPLES 0) of every key of the user (the raw key: the "
        "library user's string values joined); logged in, in the offer flow with a form"
    )
    return run.section(heading, targets, *keys)


def _user_bytes(bench: Bench, pattern: str) -> tuple[int, str]:
    costs = key_costs(bench.probe, keys_of(bench.probe, pattern))
    return sum(c.bytes for c in costs), describe(costs)


# AOF -----------------------------------------------------------------------------------------


def aof(run: Run) -> str:
    if not run.bench.private:
        return "AOF: skipped (needs a server of its own: BGREWRITEAOF, and its AOF file read)"
    probe = run.bench.probe
    n = run.args.aof_messages
    per_message: dict[str, float] = {}
    lines = []
    for name, op in run.systems().items():
        rewrite(probe)
        tally = AofTally(incremental_file(probe))
        start = appended_since_rewrite(probe)
        _repeat(op, n)()
        per_message[name] = (appended_since_rewrite(probe) - start) / n
        by_command = tally.by_command(n)
        lines.append(
            f"  {name}: "
            + ", ".join(
                f"{cmd} {calls:g}x {size:,.0f} B" for cmd, (calls, size) in by_command.items()
            )
        )
    target = _ratio_target("AOF bytes a message", per_message, TARGET_AOF)
    heading = (
        f"AOF bytes appended a message (aof_current_size - aof_base_size over {n} messages "
        "after BGREWRITEAOF), and by command (read back from the incremental AOF file)"
    )
    return run.section(heading, [target], *lines)


# Server instructions -------------------------------------------------------------------------


def callgrind(run: Run) -> str:
    heading = "Server instructions a message (valgrind --tool=callgrind redis-server)"
    if not instructions.available():
        return f"{heading}: skipped (no valgrind)"
    n = run.args.callgrind_messages
    dumps = Path(run.args.callgrind_dir) if run.args.callgrind_dir else None
    with instructions.CallgrindRedis(dumps) as server, ExitStack() as stack:
        probe = redis.Redis.from_url(server.url, socket_timeout=30)
        stack.callback(probe.close)
        slow = Bench(server.url, True, run.bench.token_key, Users(), probe)
        systems = sync_systems(
            slow, stack, CALLGRIND_USERS, socket_timeout=30.0, connect_timeout=30.0
        )
        idle = server.idle_per_second()
        counts: dict[str, float] = {}
        files = []
        for name, op in systems.items():
            count, path = server.count(_repeat(op, n), idle)
            counts[name] = count / n
            files.append(f"{name} {path}")
    target = _ratio_target("server instructions a message", counts, TARGET_INSTRUCTIONS)
    lines = [
        f"  {n} messages a system on {CALLGRIND_USERS} users in their steady state, the idle "
        "cron subtracted"
    ]
    if dumps is not None:
        lines.append("  dumps (callgrind_annotate): " + ", ".join(files))
    return run.section(heading, [target], *lines)


# Main ----------------------------------------------------------------------------------------


def summary(targets: list[Target]) -> str:
    return "Every ratio, library against the floor\n" + table(HEADERS, [t.row() for t in targets])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this server instead of a private one")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--iterations", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the latency table")
    parser.add_argument("--users", type=int, default=16, help="users per latency case")
    parser.add_argument("--cpu-messages", type=int, default=2000, help="per server CPU round")
    parser.add_argument("--cpu-rounds", type=int, default=5)
    parser.add_argument("--aof-messages", type=int, default=1000)
    parser.add_argument("--callgrind-messages", type=int, default=300)
    parser.add_argument("--callgrind-dir", help="keep the callgrind dumps in this folder")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput cell")
    parser.add_argument("--quick", action="store_true", help="fewer messages: about a minute")
    parser.add_argument(
        "--cluster", action="store_true", help="only one private node vs a 3-master cluster"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.rounds, args.seconds = min(args.iterations, 500), 5, 2.0
        args.cpu_messages, args.cpu_rounds = 300, 5
        args.aof_messages, args.callgrind_messages = 200, 200
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.cluster:
        from cluster_scaling import cluster_scaling

        cluster_scaling(args.seconds)
        return 0
    sections: dict[str, Callable[[Run], str]] = {
        "latency": latency,
        "cpu": server_cpu,
        "memory": memory,
        "aof": aof,
        "callgrind": callgrind,
        "throughput": _throughput,
    }
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(sections)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; choose from {list(sections)}")
    started = time.monotonic()
    with bench(args.redis_url) as b, ExitStack() as stack:
        print(b.header(), flush=True)
        run = Run(b, args, stack)
        for name in chosen:
            print(flush=True)
            print(sections[name](run), flush=True)
        if run.targets:
            print()
            print(summary(run.targets))
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


def _throughput(run: Run) -> str:
    from throughput import throughput

    return throughput(run.bench, run.args.seconds)


if __name__ == "__main__":
    sys.exit(main())
