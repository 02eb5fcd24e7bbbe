"""Benchmark the state service against raw redis-py on the same bytes (issue 4).

    .venv/bin/python bench/run.py [--redis-url URL] [--iterations N] [--rounds R] [--quick]

Without --redis-url it starts a private redis-server with the seed's flags (maxmemory 256mb,
allkeys-lru, AOF everysec) in a temporary directory and stops it at the end, so it never
touches a server it did not start. With --redis-url it uses only keys of a random block of
phone numbers and deletes them afterwards; the bulk memory measurement (which writes
thousands of conversations) then runs only with --bulk.

With --cluster it measures only the scale-out (issue 6): update throughput with 1, 8 and 32
threads on one private redis-server and on a private local cluster of three masters
(tests/redis_cluster.py: the same flags, plus cluster mode), side by side.

It prints three tables: latency per operation (ours vs raw GET / GET+SET of the same bytes,
the lowest and highest of the rounds beside the median, with round trips counted on the
wire), memory per conversation with capacity in 256 MB, and throughput with 1, 8 and 32
threads. PASS/FAIL compares against the issue's targets; this is
a measurement, not a test, so the exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402
from async_scaling import CONCURRENCY, async_scaling  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from redis_cluster import LocalCluster  # noqa: E402
from redis_servers import RedisProcess  # noqa: E402
from wire_log import wire  # noqa: E402

from vimbiso_state.adapters.redis.connection import RedisClient  # noqa: E402
from vimbiso_state.adapters.redis.keys import KeySchema  # noqa: E402
from vimbiso_state.adapters.redis.store import RedisConversationRepository  # noqa: E402
from vimbiso_state.domain.phone import PhoneNumber  # noqa: E402
from vimbiso_state.services.config import Settings  # noqa: E402
from vimbiso_state.services.container import Container  # noqa: E402
from vimbiso_state.services.state_service import StateService  # noqa: E402

MAXMEMORY = 256 * 1024 * 1024  # the seed's --maxmemory 256mb
BLOCK = 50  # calls per timed block; ours and raw alternate block by block
TARGETS = {"start": 1.2, "update": 1.3, "memory": 1.25, "memory_updates_per_s": 50_000}

MEMBER = {
    "memberID": "8f1c2d3e-4b5a-4c6d-9e8f-0a1b2c3d4e5f",
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberTier": 3,
    "defaultDenom": "USD",
    "remainingAvailableUSD": 100,
}


def account(n: int) -> dict[str, Any]:
    """One account as the Credex API returns it (the shape the bot stores)."""
    return {
        "accountID": f"0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6{n}",
        "accountName": f"Tendai Moyo {('Personal', 'Shop', 'Farm')[n]}",
        "accountHandle": f"tendai_{('personal', 'shop', 'farm')[n]}",
        "defaultDenom": "USD",
        "isOwnedAccount": n == 0,
        "balanceData": {
            "securedNetBalancesByDenom": ["120.50 USD", "3000.00 ZWG"],
            "unsecuredBalancesInDefaultDenom": {
                "totalPayables": "0.00 USD",
                "totalReceivables": "25.00 USD",
                "netPayRec": "25.00 USD",
            },
            "netCredexAssetsInDefaultDenom": "145.50 USD",
        },
        "pendingInData": [],
        "pendingOutData": [],
    }


ACCOUNTS = [account(n) for n in range(3)]
ACCOUNT_IDS = [a["accountID"] for a in ACCOUNTS]


def build_conversation(state: StateService, phone: str) -> None:
    """The realistic conversation: profile with three accounts, mid-offer, two answers given."""
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.navigate(phone, "handle_action_offer_credex")
    state.form_start(phone, "offer_credex", ["amount", "recipient", "confirm"])
    state.form_fill(phone, amount="USD 100")
    state.form_fill(phone, recipient="jane_doe")


def select_account(state: StateService, phone: str) -> Callable[[], object]:
    """The `update` under test: a small change, the current account, alternating."""
    ids = itertools.cycle(ACCOUNT_IDS)
    return lambda: state.update(phone, lambda c: c.select_account(next(ids)))


def phone_block(size: int) -> list[str]:
    """Numbers nobody else uses: a random block, so runs on a shared server never meet."""
    base = 263_700_000_000 + random.randrange(0, 99_000_000 - size, 100_000)
    return [f"+{base + i}" for i in range(size)]


def round_trips(fn: Callable[[], object]) -> int:
    with wire() as sent:
        fn()
    return len(sent)


def us_per_op(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - started) / n / 1000


def cpu_us_per_op(fn: Callable[[], object], n: int) -> float:
    """CPU time of this thread: what "per second on one core" means, whatever else runs."""
    started = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - started) / n / 1000


def compare(
    ours: Callable[[], object], raw: Callable[[], object], n: int, rounds: int
) -> tuple[float, float, float, float]:
    """us/op of each, then the lowest and highest ratio of a round. A round runs n of each in
    alternating blocks of BLOCK calls, so that load from elsewhere on the machine hits both
    alike, and takes the median block; the result is the median round. The spread of the
    rounds' ratios shows how far one run's ratio can be trusted on a noisy machine."""
    us_per_op(ours, max(50, n // 10))  # warm-up: scripts loaded, connection open, caches hot
    us_per_op(raw, max(50, n // 10))
    mine, theirs = [], []
    for _ in range(rounds):
        blocks = [
            (us_per_op(ours, BLOCK), us_per_op(raw, BLOCK)) for _ in range(max(1, n // BLOCK))
        ]
        mine.append(statistics.median(a for a, _ in blocks))
        theirs.append(statistics.median(b for _, b in blocks))
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return statistics.median(mine), statistics.median(theirs), min(ratios), max(ratios)


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


@dataclass
class Bench:
    state: StateService
    client: RedisClient
    # The baseline: stock redis-py (its default pool and parser), not our tuned client.
    raw: RedisClient
    phones: list[str]
    n: int
    rounds: int
    seconds: float

    def raw_key(self, phone: str) -> str:
        return f"bench:{{{PhoneNumber.parse(phone).digits}}}:raw"

    def documents(self, phone: str) -> list[bytes]:
        """The stored JSON of user, session and form, without their fixed-width headers."""
        keys = KeySchema().for_user(PhoneNumber.parse(phone))
        found: list[bytes] = []
        for key, header in ((keys.user, 28), (keys.session, 16), (keys.form, 0)):
            value = self.client.get(key)
            found.append(bytes(value)[header:] if value else b"")
        return found

    def store_raw(self, phone: str) -> int:
        """The conversation's stored documents, as one JSON array under a key of its own."""
        value = b"[" + b",".join(self.documents(phone)) + b"]"
        self.client.set(self.raw_key(phone), value, px=300_000)
        return len(value)

    def raw_get(self, phone: str) -> Callable[[], object]:
        key = self.raw_key(phone)
        return lambda: self.raw.get(key)

    def raw_get_set(self, phone: str) -> Callable[[], object]:
        key, client = self.raw_key(phone), self.raw

        def get_set() -> None:
            client.set(key, client.get(key) or b"", px=300_000)

        return get_set

    def select_account(self, phone: str) -> Callable[[], object]:
        return select_account(self.state, phone)

    def navigate_back(self, phone: str) -> Callable[[], object]:
        # Alternating keeps the menu path (and so the document size) constant.
        flip = itertools.cycle((True, False))
        state = self.state

        def step() -> object:
            if next(flip):
                return state.navigate(phone, "handle_action_pending_offers_in")
            return state.back(phone)

        return step

    def cold_update(self, phone: str) -> Callable[[], object]:
        """update by a process that has not read this conversation in the last two seconds:
        it reads it first (what it remembers is dropped before each call; RecentValues)."""
        update = self.select_account(phone)
        conversations = self.state._conversations
        assert isinstance(conversations, RedisConversationRepository)
        recent, digits = conversations._calls.recent, PhoneNumber.parse(phone).digits

        def cold() -> object:
            recent.forget(digits)
            return update()

        return cold

    def message(self, phone: str) -> Callable[[], object]:
        """One webhook: start (read, slide), then update (the change, compare-and-set)."""
        update, state = self.select_account(phone), self.state

        def handle() -> object:
            state.start(phone)
            return update()

        return handle

    def latency(self) -> tuple[str, int]:
        start_p, update_p, nav_p, fill_p = self.phones[:4]
        # phones[5] and [6] are the memory table's, phones[8:] the scaling tables'.
        cold_p, message_p = self.phones[4], self.phones[7]
        size = 0
        for phone in (start_p, update_p, nav_p, fill_p, cold_p, message_p):
            size = self.store_raw(phone)
        state = self.state
        cases: list[tuple[str, Callable[[], object], Callable[[], object], str, float | None]] = [
            ("start", lambda: state.start(start_p), self.raw_get(start_p), "GET", 1.2),
            ("update", self.select_account(update_p), self.raw_get_set(update_p), "GET+SET", 1.3),
            ("update, cold", self.cold_update(cold_p), self.raw_get_set(cold_p), "GET+SET", 1.3),
            (
                "message: start+update",
                self.message(message_p),
                self.raw_get_set(message_p),
                "GET+SET",
                None,
            ),
            ("navigate/back", self.navigate_back(nav_p), self.raw_get_set(nav_p), "GET+SET", None),
            (
                "form_fill",
                lambda: state.form_fill(fill_p, recipient="jane_doe"),
                self.raw_get_set(fill_p),
                "GET+SET",
                None,
            ),
        ]
        rows = []
        for name, ours, raw, raw_name, target in cases:
            mine, theirs, low, high = compare(ours, raw, self.n, self.rounds)
            ratio = mine / theirs
            trips = f"{round_trips(ours)} (raw {round_trips(raw)})"
            goal = f"<= {target}x {verdict(ratio, target)}" if target else "-"
            rows.append(
                [
                    name,
                    f"{mine:.1f}",
                    f"{theirs:.1f} {raw_name}",
                    f"{ratio:.2f}x",
                    f"{low:.2f}-{high:.2f}x",
                    trips,
                    goal,
                ]
            )
        rows += self.memory_backend_rows()
        headers = [
            "operation",
            "ours us/op",
            "raw redis-py us/op",
            "ratio",
            "rounds: low-high",
            "round trips",
        ]
        return table([*headers, "target"], rows), size

    def memory_backend_rows(self) -> list[list[str]]:
        """In-memory backend on one core (CPU time): `n` updates of one fresh user per round,
        and the same number spread over 1,000 users (what a busy bot process sees)."""
        container = Container.from_settings(
            Settings(backend="memory", token_keys=(Fernet.generate_key().decode(),))
        )
        state = container.state_service()
        phones = phone_block(1000 + self.rounds)
        for phone in phones[:1000]:
            build_conversation(state, phone)
        updates = itertools.cycle([select_account(state, p) for p in phones[:1000]])
        cpu_us_per_op(lambda: next(updates)(), 1000)

        def one_user(phone: str) -> float:
            build_conversation(state, phone)
            return cpu_us_per_op(select_account(state, phone), self.n)

        rows = []
        for label, results in (
            ("update (memory, 1 user, CPU)", [one_user(p) for p in phones[1000:]]),
            (
                "update (memory, 1,000 users, CPU)",
                [cpu_us_per_op(lambda: next(updates)(), self.n) for _ in range(self.rounds)],
            ),
        ):
            per_op = statistics.median(results)
            rate, goal = 1e6 / per_op, TARGETS["memory_updates_per_s"]
            target = f"{rate:,.0f}/s >= {goal:,}/s {verdict(rate, goal, higher_is_better=True)}"
            spread = f"{min(results):.1f}-{max(results):.1f} us"
            rows.append([label, f"{per_op:.1f}", "-", "-", spread, "0", target])
        return rows

    def memory(self, phone: str, bulk: int) -> str:
        keys = KeySchema().for_user(PhoneNumber.parse(phone))
        self.state.save_token(phone, "eyJhbGciOiJIUzI1NiJ9." + "x" * 300 + ".sig")
        docs = self.documents(phone)
        conversation = self.state.start(phone)
        to_json = [
            len(conversation.critical.to_json()),
            len(conversation.session.to_json()),
            len(conversation.form.to_json()) if conversation.form else 0,
        ]
        names = [keys.user, keys.session, keys.form]
        usage = [int(self.client.memory_usage(k, samples=0) or 0) for k in names]
        rows = [
            [name, str(len(doc)), str(used), f"{used / len(doc):.2f}x", self.encoding(name)]
            for name, doc, used in zip(names, docs, usage, strict=True)
        ]
        stored, used = sum(map(len, docs)), sum(usage)
        ratio = used / stored
        rows.append(["conversation (3 keys)", str(stored), str(used), f"{ratio:.2f}x", ""])
        ids = self.client.zcard(keys.handled)
        for extra, label in ((keys.handled, f"({ids} ids, separate)"), (keys.token, "(separate)")):
            extra_used = int(self.client.memory_usage(extra, samples=0) or 0)
            rows.append([f"{extra} {label}", "-", str(extra_used), "-", self.encoding(extra)])
        out = [
            table(["key", "JSON bytes", "MEMORY USAGE", "ratio", "encoding"], rows),
            "",
            f"JSON size used for the ratio: the stored documents (msgspec), {stored} B. "
            f"dataclasses-json to_json() of critical+session+form: "
            f"{' + '.join(map(str, to_json))} = {sum(to_json)} B.",
            f"MEMORY USAGE / JSON = {ratio:.2f}x, target <= {TARGETS['memory']}x: "
            f"{verdict(ratio, TARGETS['memory'])}",
            f"Capacity in 256 MB by MEMORY USAGE (3 keys): {MAXMEMORY // used:,} conversations",
        ]
        out += self.deliveries(self.phones[6])
        if bulk:
            out += self.bulk_memory(
                [keys.user, keys.session, keys.form, keys.handled], keys.token, bulk
            )
        return "\n".join(out)

    def deliveries(self, phone: str, counts: tuple[int, ...] = (50, 100)) -> list[str]:
        """Handled ids: a message id for dedupe_ttl (a day by default), an operation id for
        the retry window. Past 128 entries Redis turns the set from a listpack into a
        skiplist, for good, at several times the bytes per entry."""
        handled = KeySchema().for_user(PhoneNumber.parse(phone)).handled
        lines, done = [], 0
        for count in counts:
            for i in range(done, count):
                message = f"wamid.HBgMMjYzNzcxMjM0NTY3FQIAEhggQ0E{i:06d}"
                self.state.handle_once(phone, message, lambda c: None)
            done = count
            used = int(self.client.memory_usage(handled, samples=0) or 0)
            lines.append(
                f"handled:{{p}}:ids after {count} deliveries in a burst (handle_once): "
                f"{self.client.zcard(handled)} ids, {used:,} B ({self.encoding(handled)})"
            )
        return lines

    def encoding(self, key: str) -> str:
        value = self.client.object("encoding", key)
        return value.decode() if isinstance(value, bytes) else str(value)

    def bulk_memory(self, conversation_keys: list[str], token_key: str, count: int) -> list[str]:
        """Copy the conversation (DUMP/RESTORE keeps encoding and TTL) under `count` numbers
        and read INFO used_memory: this includes Redis's per-key and expiry overhead."""
        digits = [PhoneNumber.parse(p).digits for p in phone_block(count)]
        source_tag = conversation_keys[0].split("{")[1].split("}")[0]
        core, extra = conversation_keys[:3], [conversation_keys[3], token_key]
        lines = []
        written: list[str] = []
        total = 0.0
        try:
            for label, group in (("user+session+form", core), ("+ handled ids + token", extra)):
                dumps = [(k, self.client.dump(k) or b"", self.client.pttl(k)) for k in group]
                before = int(self.client.info("memory")["used_memory"])
                for chunk in range(0, count, 500):
                    pipe = self.client.pipeline(transaction=False)
                    for tag in digits[chunk : chunk + 500]:
                        for key, payload, ttl in dumps:
                            target = key.replace("{" + source_tag + "}", "{" + tag + "}")
                            pipe.restore(target, max(int(ttl), 0), payload, replace=True)
                            written.append(target)
                    pipe.execute()
                after = int(self.client.info("memory")["used_memory"])
                per = (after - before) / count
                total += per
                lines.append(
                    f"Bulk {count:,} conversations, {label}: used_memory +{per:,.0f} B each, "
                    f"{total:,.0f} B in all -> {int(MAXMEMORY // total):,} fit in 256 MB"
                )
        finally:
            for chunk in range(0, len(written), 1000):
                self.client.delete(*written[chunk : chunk + 1000])
        return lines

    def scaling(self) -> str:
        rows = []
        for workers in (1, 8, 32):
            phones = self.phones[8 : 8 + workers]
            ours = self.throughput([self.select_account(p) for p in phones])
            raw = self.throughput([self.raw_get_set(p) for p in phones])
            rows.append([str(workers), f"{ours:,.0f}", f"{raw:,.0f}", f"{ours / raw:.2f}"])
        return table(["workers", "ours update ops/s", "raw GET+SET ops/s", "ours/raw"], rows)

    def throughput(self, jobs: list[Callable[[], object]]) -> float:
        """Total ops/s of one thread per job, sharing the container's connection pool."""
        stop = threading.Event()
        ready = threading.Barrier(len(jobs) + 1)
        counts = [0] * len(jobs)

        def work(i: int, job: Callable[[], object]) -> None:
            for _ in range(20):
                job()  # warm-up: a connection of its own from the pool
            ready.wait()
            while not stop.is_set():
                job()
                counts[i] += 1

        threads = [threading.Thread(target=work, args=(i, j)) for i, j in enumerate(jobs)]
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.perf_counter_ns()
        time.sleep(self.seconds)
        stop.set()
        total = sum(counts)
        elapsed = (time.perf_counter_ns() - started) / 1e9
        for thread in threads:
            thread.join()
        return total / elapsed


def run(url: str, args: argparse.Namespace, bulk: int) -> None:
    key = Fernet.generate_key().decode()
    container = Container.from_settings(Settings(backend="redis", redis_url=url, token_keys=(key,)))
    state, client = container.state_service(), container.redis_client()
    phones = phone_block(8 + max(32, max(CONCURRENCY)))
    raw = redis.Redis.from_url(url, max_connections=64)
    try:
        for phone in phones:
            build_conversation(state, phone)
        bench = Bench(state, client, raw, phones, args.iterations, args.rounds, args.seconds)
        for phone in phones[8:]:
            bench.store_raw(phone)
        server = client.info("server")
        print(
            f"redis {server['redis_version']} at {url.split('@')[-1]}; redis-py "
            f"{redis.__version__}; Python {sys.version.split()[0]}; "
            f"{args.iterations} ops x {args.rounds} rounds, medians; {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} (other work on the machine skews wall times)"
        )
        print()
        latency, size = bench.latency()
        print(f"Latency (one thread, one connection; raw key holds the same {size} B of JSON)")
        print(latency)
        print()
        print("Memory per conversation (MEMORY USAGE key SAMPLES 0)")
        print(bench.memory(phones[5], bulk))
        print()
        print(
            f"Scaling: update on distinct users, {args.seconds:g} s per cell; each side one "
            "pool shared by its threads"
        )
        print(bench.scaling())
        print()
        print(f"Async: AsyncStateService.update vs raw redis.asyncio, {args.seconds:g} s per cell")
        print(async_scaling(container, url, phones[8:], list(ACCOUNT_IDS), args.seconds))
    finally:
        for phone in phones:
            digits = PhoneNumber.parse(phone).digits
            client.delete(*KeySchema().for_user(PhoneNumber(digits)).all, f"bench:{{{digits}}}:raw")
        client.close()
        raw.close()


def cluster_scaling(args: argparse.Namespace, rounds: int = 3) -> None:
    """One node vs three masters: the same update, on distinct users, 1/8/32 threads.

    The two are measured in alternation, ``rounds`` times per cell, and the medians shown, so
    that load from elsewhere on the machine hits both alike.
    """
    key = Fernet.generate_key().decode()
    workers = (1, 8, 32)
    results: dict[str, dict[int, list[float]]] = {"redis": {}, "redis-cluster": {}}
    with ExitStack() as stack:
        single = stack.enter_context(RedisProcess())
        cluster = stack.enter_context(LocalCluster(masters=3))
        benches: dict[str, Bench] = {}
        for backend, url in (("redis", single.url), ("redis-cluster", cluster.url)):
            container = Container.from_settings(
                Settings(backend=backend, redis_url=url, token_keys=(key,))
            )
            state, client = container.state_service(), container.redis_client()
            stack.callback(client.close)
            phones = phone_block(max(workers))
            for phone in phones:
                build_conversation(state, phone)
            benches[backend] = Bench(state, client, client, phones, 0, rounds, args.seconds)
        for n in workers:
            for _ in range(rounds):
                for backend, bench in benches.items():
                    jobs = [bench.select_account(p) for p in bench.phones[:n]]
                    results[backend].setdefault(n, []).append(bench.throughput(jobs))
        client = benches["redis-cluster"].client
        owners = Counter(
            client.get_node_from_key(KeySchema().for_user(PhoneNumber.parse(p)).user).name
            for p in benches["redis-cluster"].phones
        )
        version = benches["redis"].client.info("server")["redis_version"]
    spread = "/".join(str(count) for _, count in owners.most_common())
    print(
        f"redis {version}, redis-py {redis.__version__}, Python {sys.version.split()[0]}; "
        f"update on distinct users (the 32 sit {spread} on the three masters); "
        f"{args.seconds:g} s per cell, median of {rounds} alternated rounds; one client "
        f"process, one shared pool"
    )
    rows = []
    for n in workers:
        one = statistics.median(results["redis"][n])
        three = statistics.median(results["redis-cluster"][n])
        rows.append([str(n), f"{one:,.0f}", f"{three:,.0f}", f"{three / one:.2f}x"])
    print(table(["threads", "1 node ops/s", "3 masters ops/s", "3 masters / 1 node"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this server instead of a private one")
    parser.add_argument("--iterations", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per measurement")
    parser.add_argument("--seconds", type=float, default=3.0, help="per scaling cell")
    parser.add_argument(
        "--bulk",
        type=int,
        help="conversations written for the used_memory measurement (default 20000 on the "
        "private server, 0 with --redis-url)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations, shorter cells")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="only the scaling table: one private node vs a private 3-master cluster",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.rounds, args.seconds = min(args.iterations, 500), 5, 1.0
    if args.cluster:
        cluster_scaling(args)
        return 0
    with ExitStack() as stack:
        if args.redis_url:
            url, bulk = args.redis_url, args.bulk or 0
        else:
            url = stack.enter_context(RedisProcess()).url
            bulk = 20_000 if args.bulk is None else args.bulk
        run(url, args, bulk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
