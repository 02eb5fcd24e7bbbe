"""Issue 17's measurements of the library, each in one run, with the stock redis-py client.

    .venv/bin/python bench/run.py [--quick] [--only SECTIONS] [--redis-url URL]

Without --redis-url it starts a private redis-server with the seed's flags (maxmemory 256mb,
allkeys-lru, AOF everysec) and stops it at the end. With --redis-url it uses only the keys of a
random block of numbers and deletes them afterwards; the sections that need a server of their
own (CONFIG RESETSTAT, the AOF) then read differences or are skipped.

Sections (--only latency,cpu,memory,aof,throughput):
- latency: a whole realistic message through ``state.message`` (resume, three changes,
  commit) against raw GET+SET of the same bytes, sync and asyncio, in alternated blocks;
  round trips counted on the wire;
- cpu: the server's time per message from INFO commandstats, and which commands it runs;
- memory: bytes per user (MEMORY USAGE of every key of theirs) after a message, after ten,
  and after a burst of 100 in a minute; used_memory growth over many copies of a user;
- aof: bytes appended to the AOF per message against the bytes the message changed;
- throughput: messages a second with 1, 4 and 8 processes, beside redis-benchmark.

It ends with the targets' table. This is a measurement, not a test: it always exits 0.
With --cluster it measures only the scale-out of one node against three masters (issue 6).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis
from aof import AofTally, appended_since_rewrite, incremental_file, rewrite
from harness import Bench, bench, digits
from raw_store import async_get_set, copy_user, get_set
from realistic import AsyncMessages, Messages, log_in
from server_stats import (
    ServerCost,
    lua_counts_nested,
    main_thread_cpu,
    measure,
    script_durations,
    script_overheads,
)
from throughput import script_calls, throughput
from timing import Case, blocking, in_loop, interleave, ratio, table, verdict
from user_bytes import changed_bytes, describe, key_costs, keys_of, snapshot, user_pattern
from wire_log import wire

from vimbiso_state.services.state_service import StateService

SECTIONS = ("latency", "cpu", "memory", "aof", "throughput")
TARGET_RATIO = 1.5  # a message against raw GET+SET, sync and asyncio
TARGET_USEC = 8.0  # Redis CPU per realistic message (commandstats)
TARGET_BYTES = 2_600  # per user, with token and dedupe records
TARGET_AOF = 1.10  # AOF bytes per message against the bytes it changed
SPACING = 1.2  # seconds between two messages of one user in the spaced workloads


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    target: str


@dataclass
class Run:
    bench: Bench
    args: argparse.Namespace
    targets: list[Target]

    def logged_in(self, count: int) -> tuple[StateService, list[str]]:
        """``count`` fresh users, logged in and part way through the offer flow."""
        state = self.bench.container().state_service()
        phones = self.bench.users.take(count)
        for phone in phones:
            log_in(state, phone)
        return state, phones


# Latency ---------------------------------------------------------------------------------


def latency(run: Run) -> str:
    users = run.args.users
    state, phones = run.logged_in(3 * users)
    sync_users, effect_users, async_users = (
        phones[:users],
        phones[users : 2 * users],
        phones[2 * users :],
    )
    probe = run.bench.probe
    size = max(copy_user(probe, phone) for phone in phones)
    raw = run.bench.raw_client()
    container = run.bench.container()
    loop = asyncio.new_event_loop()
    raw_async = run.bench.raw_async_client()
    try:
        ours = Messages(state, sync_users)
        effects = Messages(state, effect_users)
        ours_async = AsyncMessages(container.async_state_service(), async_users)
        raw_sync_op = get_set(raw, sync_users)
        raw_async_op = async_get_set(raw_async, async_users)
        cases = [
            Case("message, sync", blocking(ours.one), "raw GET+SET, redis-py"),
            Case(
                "message with one effect, sync",
                blocking(effects.with_effect),
                "raw GET+SET, redis-py",
            ),
            Case("message, asyncio", in_loop(loop, ours_async.one), "raw GET+SET, redis.asyncio"),
            Case("raw GET+SET, redis-py", blocking(raw_sync_op)),
            Case("raw GET+SET, redis.asyncio", in_loop(loop, raw_async_op)),
        ]
        interleave(cases, run.args.iterations, run.args.rounds)
        trips = {
            cases[0].name: _round_trips(lambda: cases[0].run(1)),
            cases[1].name: _round_trips(lambda: cases[1].run(1)),
            cases[2].name: _round_trips(lambda: cases[2].run(1)),
            cases[3].name: _round_trips(lambda: cases[3].run(1)),
            cases[4].name: _round_trips(lambda: cases[4].run(1)),
        }
    finally:
        loop.run_until_complete(container.aclose())
        loop.run_until_complete(raw_async.aclose())
        loop.close()
        raw.close()
    by_name = {case.name: case for case in cases}
    rows = []
    for case in cases:
        if case.baseline is None:
            continue
        r = ratio(case, by_name[case.baseline])
        target = verdict(r.ratio, TARGET_RATIO) if "effect" not in case.name else "-"
        if "effect" not in case.name:
            run.targets.append(
                Target(
                    f"{case.name}: latency / raw GET+SET",
                    f"{r.ratio:.2f}x ({r.low:.2f}-{r.high:.2f})",
                    f"<= {TARGET_RATIO}x",
                ),
            )
        rows.append(
            [
                case.name,
                f"{r.us:.0f}",
                f"{r.baseline_us:.0f} ({case.baseline})",
                f"{r.ratio:.2f}x",
                f"{r.low:.2f}-{r.high:.2f}x",
                f"{trips[case.name]} ({trips[case.baseline]})",
                target,
            ]
        )
    heading = (
        f"Latency: one realistic message, {users} users round robin per case, one connection; "
        f"the raw key holds the same {size:,} B (the user's string values); "
        f"{run.args.iterations} messages x {run.args.rounds} rounds in alternated blocks"
    )
    headers = ["case", "us", "raw us", "ratio", "rounds low-high", "round trips (raw)", "target"]
    return heading + "\n" + table(headers, rows)


def _round_trips(operation: Callable[[], object]) -> str:
    with wire() as sent:
        operation()
    return str(len(sent))


# Redis CPU -------------------------------------------------------------------------------


def server_cpu(run: Run) -> str:
    probe, private = run.bench.probe, run.bench.private
    key = f"bench:{{{run.bench.users.base}}}:lua"
    check = f"{lua_counts_nested(probe, key)}\n{script_overheads(probe, key)}" if private else ""
    idle = _idle_cpu_per_second(probe)
    state, phones = run.logged_in(run.args.spaced_users)
    raw = run.bench.raw_client()
    for phone in phones[:10]:
        copy_user(probe, phone)
    try:
        n = run.args.iterations
        back_to_back = Messages(state, phones[:10])
        spaced = Messages(state, phones)
        raw_op = get_set(raw, phones[:10])
        for _ in range(20):  # warm-up
            back_to_back.one()
            raw_op()
        rounds = run.args.spaced_rounds
        costs = [
            (
                "message, back to back (10 users)",
                _cost(probe, private, idle, n, _repeat(back_to_back.one, n)),
            ),
            (
                f"message, spaced: a user's messages {SPACING:g} s apart ({len(phones)} users)",
                _cost(probe, private, idle, len(phones) * rounds, _spaced(spaced, rounds)),
            ),
            ("raw GET+SET, redis-py", _cost(probe, private, idle, n, _repeat(raw_op, n))),
        ]
    finally:
        raw.close()
    rows = []
    for name, cost in costs:
        target = verdict(cost.usec_per_message, TARGET_USEC) if "message" in name else "-"
        rows.append(
            [
                name,
                f"{cost.usec_per_message:.1f}",
                f"{cost.cpu_us_per_message:.1f}",
                cost.describe_calls(nested=False),
                cost.describe_calls(nested=True),
                target,
            ]
        )
    for name, cost in costs[:2]:
        run.targets.append(
            Target(
                f"Redis CPU per {name}", f"{cost.usec_per_message:.1f} us", f"<= {TARGET_USEC:g} us"
            )
        )
    headers = [
        "workload",
        "commandstats us/msg",
        "main thread CPU us/msg",
        "sent per message",
        "called by scripts per message",
        "target",
    ]
    lines = [
        "Redis CPU per message: INFO commandstats usec of the commands sent "
        f"({'after CONFIG RESETSTAT' if private else 'differences, shared server'}); "
        "main-thread CPU (INFO cpu, network and parsing included, idle cron subtracted)",
        table(headers, rows),
    ]
    lines.append(_per_script(run, back_to_back))
    if check:
        lines.append(check)
    return "\n".join(lines)


def _per_script(run: Run, messages: Messages) -> str:
    """Each script's median time inside messages, and the begin's replayed back to back:
    how much of a message's server time is its scripts' cold start between client work."""
    probe = run.bench.probe
    inside = script_durations(probe, _repeat(messages.one, 500))
    _, begin = script_calls(run.bench)
    scripts = ", ".join(
        f"{n}. {sha}... {median:.0f}" for n, (sha, median) in enumerate(inside, start=1)
    )
    line = (
        f"Per script call inside messages (SLOWLOG, median usec, in the order a message calls "
        f"them): {scripts or '-'}"
    )
    if begin is None:
        return line
    replayed = measure(probe, _repeat(lambda: probe.execute_command(*begin), 2000), 2000, False)
    return f"{line}; the begin (1.) replayed back to back: {replayed.usec_per_message:.0f}"


def _idle_cpu_per_second(probe: redis.Redis, seconds: float = 1.0) -> float:
    """The server's own background CPU (its cron), subtracted from a workload's."""
    before = main_thread_cpu(probe)
    time.sleep(seconds)
    return (main_thread_cpu(probe) - before) / seconds


def _cost(
    probe: redis.Redis, private: bool, idle: float, messages: int, workload: Callable[[], object]
) -> ServerCost:
    """What the server spent on ``workload`` (``messages`` messages), less its idle cron."""
    started = time.perf_counter()
    cost = measure(probe, workload, messages, reset=private)
    idle_cpu = idle * (time.perf_counter() - started)
    return replace(cost, cpu_seconds=max(0.0, cost.cpu_seconds - idle_cpu))


def _repeat(operation: Callable[[], object], times: int) -> Callable[[], None]:
    def workload() -> None:
        for _ in range(times):
            operation()

    return workload


def _spaced(messages: Messages, rounds: int) -> Callable[[], None]:
    """Each user one message per round, rounds SPACING apart: every message finds its
    user's session a slide step old, as a real user's messages, seconds apart, do."""

    def workload() -> None:
        for round_ in range(rounds):
            if round_:
                time.sleep(SPACING)
            for _ in messages.phones:
                messages.one()

    return workload


# Bytes per user ----------------------------------------------------------------------------


def memory(run: Run) -> str:
    state, (phone,) = run.logged_in(1)
    messages = Messages(state, [phone])
    messages.one()
    one = _user_bytes(run, phone)
    bulk = _bulk_used_memory(run, phone, run.args.bulk) if run.args.bulk else ""
    for _ in range(9):
        messages.one()
    ten = _user_bytes(run, phone)
    started = time.monotonic()
    for _ in range(90):
        messages.one()
    burst_label = f"after a burst of 100 in {time.monotonic() - started + 0.05:.1f} s"
    burst = _user_bytes(run, phone)
    rows = [
        ["after 1 message", f"{one[0]:,}", one[1], verdict(one[0], TARGET_BYTES)],
        ["after 10 messages", f"{ten[0]:,}", ten[1], "report"],
        [burst_label, f"{burst[0]:,}", burst[1], "report"],
    ]
    run.targets += [
        Target("bytes per user after 1 message", f"{one[0]:,}", f"<= {TARGET_BYTES:,}"),
        Target(f"bytes per user {burst_label}", f"{burst[0]:,}", "bounded: report"),
    ]
    growth = (burst[0] - ten[0]) / 90
    return "\n".join(
        [
            "Bytes per user: MEMORY USAGE (SAMPLES 0) of every key with the user's tag; the "
            "user logged in (member, 3 accounts, one selected, a 350-character JWT), in the "
            "offer flow with a form under way",
            table(["user", "bytes", "keys: bytes (type encoding, entries)", "target"], rows),
            f"In the burst the user grew by {growth:,.0f} B a message.",
            bulk,
        ]
    )


def _user_bytes(run: Run, phone: str) -> tuple[int, str]:
    costs = key_costs(run.bench.probe, keys_of(run.bench.probe, user_pattern(digits(phone))))
    return sum(c.bytes for c in costs), describe(costs)


def _bulk_used_memory(run: Run, phone: str, count: int) -> str:
    """Copies of the user's keys (DUMP/RESTORE keeps encoding and TTL) under ``count`` new
    numbers; INFO used_memory growth per copy includes Redis's per-key and expiry
    overhead."""
    probe = run.bench.probe
    tag = digits(phone)
    dumps = [
        (key.decode(), probe.dump(key) or b"", int(probe.pttl(key)))
        for key in keys_of(probe, user_pattern(tag))
    ]
    # Tags as long as a phone's digits that no phone has (a 9 in front): deleted at once.
    copies = [f"9{i:0{len(tag) - 1}d}" for i in range(count)]
    before = int(probe.info("memory")["used_memory"])
    written: list[str] = []
    for chunk in range(0, count, 500):
        pipe = probe.pipeline(transaction=False)
        for other in copies[chunk : chunk + 500]:
            for key, payload, ttl in dumps:
                target = key.replace("{" + tag + "}", "{" + other + "}")
                pipe.restore(target, max(ttl, 0), payload, replace=True)
                written.append(target)
        pipe.execute()
    per_user = (int(probe.info("memory")["used_memory"]) - before) / count
    for chunk in range(0, len(written), 1000):
        probe.delete(*written[chunk : chunk + 1000])
    capacity = 256 * 1024 * 1024 // per_user
    return (
        f"used_memory growth over {count:,} copies of the user after 1 message: "
        f"{per_user:,.0f} B a user, about {capacity:,.0f} users in the seed's 256 MB"
    )


# AOF -----------------------------------------------------------------------------------------


def aof(run: Run) -> str:
    if not run.bench.private:
        return "AOF: skipped (needs a server of its own: BGREWRITEAOF, and its AOF file read)"
    rows = []
    breakdowns = []
    state, phones = run.logged_in(run.args.spaced_users)
    for name, users, spacing in (
        ("back to back (10 users)", phones[:10], 0.0),
        (f"spaced {SPACING:g} s ({len(phones)} users)", phones, SPACING),
    ):
        rounds = max(1, run.args.aof_messages // len(users))
        per_message, content, whole, tally = _aof_of(run, Messages(state, users), rounds, spacing)
        target = verdict(per_message / content, TARGET_AOF) if content else "-"
        rows.append(
            [
                name,
                f"{per_message:,.0f}",
                f"{content:,.0f}",
                f"{whole:,.0f}",
                f"{per_message / content:.2f}x",
                target,
            ]
        )
        run.targets.append(
            Target(
                f"AOF bytes per message, {name} / bytes changed",
                f"{per_message:,.0f} / {content:,.0f} = {per_message / content:.2f}x",
                f"<= {TARGET_AOF:.2f}x",
            )
        )
        breakdowns.append(
            f"  {name}: "
            + ", ".join(f"{cmd} {calls:g}x {size:,.0f} B" for cmd, (calls, size) in tally.items())
        )
    headers = [
        "messages",
        "AOF B/msg",
        "changed B/msg (content)",
        "changed strings, whole",
        "AOF / changed",
        "target",
    ]
    return "\n".join(
        [
            "AOF bytes appended per message (aof_current_size - aof_base_size, after "
            "BGREWRITEAOF settled) against the bytes the message changed in the user's keys",
            table(headers, rows),
            "Appended per message, by command (read back from the incremental AOF file):",
            *breakdowns,
        ]
    )


def _aof_of(
    run: Run, messages: Messages, rounds: int, spacing: float
) -> tuple[float, float, float, dict[str, tuple[float, float]]]:
    probe = run.bench.probe
    for _ in messages.phones:  # every user in its steady state before the rewrite
        messages.one()
    time.sleep(spacing)
    rewrite(probe)
    tally = AofTally(incremental_file(probe))
    start = appended_since_rewrite(probe)
    content = whole = 0
    count = 0
    for round_ in range(rounds):
        if round_ and spacing:
            time.sleep(spacing)
        for _ in messages.phones:
            pattern = user_pattern(digits(messages.phones[messages.sent % len(messages.phones)]))
            before = snapshot(probe, pattern)
            messages.one()
            changed = changed_bytes(before, snapshot(probe, pattern))
            content, whole, count = content + changed[0], whole + changed[1], count + 1
    appended = appended_since_rewrite(probe) - start
    return appended / count, content / count, whole / count, tally.by_command(count)


# Main ----------------------------------------------------------------------------------------


def summary(targets: list[Target]) -> str:
    rows = [[t.what, t.measured, t.target] for t in targets]
    return "Issue 17's targets\n" + table(["measure", "this run", "target"], rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this server instead of a private one")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--iterations", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the latency table")
    parser.add_argument("--users", type=int, default=16, help="users per latency case")
    parser.add_argument("--spaced-users", type=int, default=100)
    parser.add_argument("--spaced-rounds", type=int, default=5)
    parser.add_argument("--aof-messages", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput cell")
    parser.add_argument(
        "--bulk", type=int, help="user copies for used_memory (default 20000; 0 with --redis-url)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer messages, shorter cells")
    parser.add_argument(
        "--cluster", action="store_true", help="only one private node vs a 3-master cluster"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.rounds, args.seconds = min(args.iterations, 500), 5, 2.0
        args.spaced_users, args.spaced_rounds, args.aof_messages = 50, 3, 200
    if args.bulk is None:
        args.bulk = 0 if args.redis_url else (2_000 if args.quick else 20_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.cluster:
        from cluster_scaling import cluster_scaling

        cluster_scaling(args.seconds)
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    sections: dict[str, Callable[[Run], str]] = {
        "latency": latency,
        "cpu": server_cpu,
        "memory": memory,
        "aof": aof,
        "throughput": lambda r: throughput(r.bench, r.args.seconds),
    }
    with bench(args.redis_url) as b:
        print(b.header(), flush=True)
        run = Run(b, args, [])
        for name in chosen:
            print(flush=True)
            print(sections[name](run), flush=True)
        print()
        print(summary(run.targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
