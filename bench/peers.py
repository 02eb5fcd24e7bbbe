"""This library side by side with the stores bots use instead, on the same data, in one run.

    .venv/bin/pip install -e '.[bench]'      # aiogram 3
    .venv/bin/python bench/peers.py [--quick] [--redis-url URL]

Systems: this library's ``state.message`` (sync and asyncio), aiogram 3's RedisStorage used
as an aiogram handler uses it (an FSMContext per message), and a plain JSON GET/SET store;
all on the same private redis-server (seed flags) unless --redis-url is given. One table:
latency against raw GET+SET of the same bytes (redis-py for the blocking systems,
redis.asyncio for the asyncio ones; alternated blocks, median round and the lowest and
highest), round trips, Redis CPU a message (INFO commandstats), bytes a user (MEMORY USAGE),
and the updates lost when 8 processes each append 200 tagged entries to one user's data.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from harness import Bench, bench, digits
from raw_store import async_get_set, copy_user, get_set, raw_key
from realistic import AsyncMessages, Messages, log_in, message_id
from server_stats import measure
from timing import Case, blocking, in_loop, interleave, ratio, table
from user_bytes import key_costs, keys_of, user_pattern
from wire_log import wire

from vimbiso_state.domain.errors import UserBusy
from vimbiso_state.services.container import Container

try:
    from peer_stores import AiogramHandler, JsonStore
except ImportError as missing:  # the optional `bench` extra
    sys.exit(f"bench/peers.py needs aiogram 3: pip install -e '.[bench]' ({missing})")

WRITERS = 8
APPENDS = 200
_FORK = multiprocessing.get_context("fork")
T = TypeVar("T")


@dataclass
class System:
    """One row of the table: how to time it, and what else was measured for it."""

    case: Case
    one: Callable[[], object]  # a message, run to completion (asyncio ones in the loop)
    bytes_pattern: str  # the keys of one of its users
    lost: str = "-"
    extra: dict[str, str] = field(default_factory=dict)


def _sync(
    loop: asyncio.AbstractEventLoop, op: Callable[[], Awaitable[object]]
) -> Callable[[], object]:
    return lambda: loop.run_until_complete(op())


def systems(
    b: Bench, loop: asyncio.AbstractEventLoop, users: int, closing: list[Callable[[], object]]
) -> list[System]:
    """Every system on users of its own, logged in; the raw baselines on copies of the
    library's users' bytes. ``closing`` gets what closes their clients."""
    state = b.container().state_service()
    ours, ours_async_phones, aiogram_phones, json_phones = (b.users.take(users) for _ in range(4))
    for phone in ours + ours_async_phones:
        log_in(state, phone)
    for phone in ours + ours_async_phones:
        copy_user(b.probe, phone)
    async_container = b.container()
    raw, raw_async = b.raw_client(), b.raw_async_client()
    aiogram = AiogramHandler(b.raw_async_client(), aiogram_phones)
    json_store = JsonStore(b.raw_client(), json_phones)
    closing += [
        state_closer(loop, async_container),
        raw.close,
        json_store.client.close,
        _sync(loop, raw_async.aclose),
        _sync(loop, aiogram.storage.close),
    ]
    for phone in aiogram_phones:
        loop.run_until_complete(aiogram.log_in(phone))
    for phone in json_phones:
        json_store.log_in(phone)
    sync_messages = Messages(state, ours)
    async_messages = AsyncMessages(async_container.async_state_service(), ours_async_phones)
    raw_op, raw_async_op = get_set(raw, ours), async_get_set(raw_async, ours_async_phones)
    sync_raw, async_raw = "raw GET+SET, redis-py", "raw GET+SET, redis.asyncio"
    return [
        System(
            Case("vimbiso-state, sync", blocking(sync_messages.one), sync_raw),
            sync_messages.one,
            user_pattern(digits(ours[0])),
        ),
        System(
            Case("vimbiso-state, asyncio", in_loop(loop, async_messages.one), async_raw),
            _sync(loop, async_messages.one),
            user_pattern(digits(ours_async_phones[0])),
        ),
        System(
            Case("aiogram 3 RedisStorage (FSMContext)", in_loop(loop, aiogram.one), async_raw),
            _sync(loop, aiogram.one),
            aiogram.pattern(aiogram_phones[0]),
        ),
        System(
            Case("plain JSON GET/SET store", blocking(json_store.one), sync_raw),
            json_store.one,
            json_store.pattern(json_phones[0]),
        ),
        System(Case(sync_raw, blocking(raw_op)), raw_op, raw_key(ours[0])),
        System(
            Case(async_raw, in_loop(loop, raw_async_op)),
            _sync(loop, raw_async_op),
            raw_key(ours_async_phones[0]),
        ),
    ]


def state_closer(loop: asyncio.AbstractEventLoop, container: Container) -> Callable[[], object]:
    return _sync(loop, container.aclose)


# Lost updates --------------------------------------------------------------------------------


def run_together(jobs: list[Callable[[], None]]) -> None:
    """Each job in a forked process of its own, all started at once; waits for them all."""
    ready = _FORK.Barrier(len(jobs))

    def start(job: Callable[[], None]) -> None:
        ready.wait()
        job()

    processes = [_FORK.Process(target=start, args=(job,)) for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join()


def _tags(writer: int) -> list[str]:
    return [f"w{writer}-{i}" for i in range(APPENDS)]


def lost_ours(b: Bench) -> int:
    (phone,) = b.users.take(1)
    state = b.container().state_service()
    log_in(state, phone)

    def writer(w: int) -> None:
        writes = b.container().state_service()
        for n, tag in enumerate(_tags(w)):
            while True:
                try:
                    with writes.message(phone, message_id(w * APPENDS + n)) as msg:
                        msg.conversation.context.setdefault("log", []).append(tag)
                    break
                except UserBusy:
                    continue  # as WhatsApp redelivers a webhook that failed

    run_together([lambda w=w: writer(w) for w in range(WRITERS)])
    return _missing(state.start(phone).context.get("log", []))


def lost_aiogram(b: Bench) -> int:
    (phone,) = b.users.take(1)

    async def on_handler(action: Callable[[AiogramHandler], Awaitable[T]]) -> T:
        client = b.raw_async_client()
        try:
            return await action(AiogramHandler(client, [phone]))
        finally:
            await client.aclose()

    async def writer(handler: AiogramHandler, w: int) -> None:
        for tag in _tags(w):
            await handler.append(phone, tag)

    asyncio.run(on_handler(lambda h: h.log_in(phone)))
    run_together(
        [lambda w=w: asyncio.run(on_handler(lambda h: writer(h, w))) for w in range(WRITERS)]
    )
    return _missing(asyncio.run(on_handler(lambda h: h.log(phone))))


def lost_json(b: Bench) -> int:
    (phone,) = b.users.take(1)
    JsonStore(b.raw_client(), [phone]).log_in(phone)

    def writer(w: int) -> None:
        store = JsonStore(b.raw_client(), [phone])
        for tag in _tags(w):
            store.append(phone, tag)

    run_together([lambda w=w: writer(w) for w in range(WRITERS)])
    return _missing(JsonStore(b.raw_client(), [phone]).log(phone))


def _missing(log: list[str]) -> int:
    expected = {tag for w in range(WRITERS) for tag in _tags(w)}
    return len(expected - set(log))


# The table ---------------------------------------------------------------------------------


def peers(b: Bench, args: argparse.Namespace) -> str:
    loop = asyncio.new_event_loop()
    rows = []
    closing: list[Callable[[], object]] = []
    try:
        found = systems(b, loop, args.users, closing)
        for system in found:
            # Its first user, after one message: logged in, with its token and dedupe records.
            system.one()
            costs = key_costs(b.probe, keys_of(b.probe, system.bytes_pattern))
            system.extra["bytes"] = f"{sum(c.bytes for c in costs):,}"
        interleave([s.case for s in found], args.iterations, args.rounds)
        for system in found:
            system.extra["trips"] = _round_trips(system.one)
            cost = measure(
                b.probe, _repeat(system.one, args.cpu_messages), args.cpu_messages, b.private
            )
            system.extra["cpu"] = f"{cost.usec_per_message:.1f}"
            system.extra["sent"] = cost.describe_calls(nested=False)
    finally:
        for close in closing:
            close()
        loop.close()
    found[0].lost = str(lost_ours(b))
    found[2].lost = str(lost_aiogram(b))
    found[3].lost = str(lost_json(b))
    by_name = {s.case.name: s.case for s in found}
    for system in found:
        case = system.case
        r = ratio(case, by_name[case.baseline or case.name])
        rows.append(
            [
                case.name,
                f"{r.us:.0f}",
                f"{r.ratio:.2f}x",
                f"{r.low:.2f}-{r.high:.2f}x",
                system.extra["trips"],
                system.extra["sent"],
                system.extra["cpu"],
                system.extra["bytes"],
                system.lost,
            ]
        )
    headers = [
        "system",
        "us/msg",
        "/ raw GET+SET",
        "rounds low-high",
        "round trips",
        "commands sent per message",
        "Redis CPU us/msg",
        "bytes a user",
        f"lost of {WRITERS * APPENDS:,}",
    ]
    return (
        f"Peers on the same data: {args.iterations} messages x {args.rounds} rounds in "
        f"alternated blocks, {args.users} users per system round robin; Redis CPU: INFO "
        f"commandstats over {args.cpu_messages} messages; lost updates: {WRITERS} processes "
        f"x {APPENDS} appends to one user\n" + table(headers, rows)
    )


def _round_trips(one: Callable[[], object]) -> str:
    with wire() as sent:
        one()
    return str(len(sent))


def _repeat(one: Callable[[], object], times: int) -> Callable[[], None]:
    def workload() -> None:
        for _ in range(times):
            one()

    return workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="use this server instead of a private one")
    parser.add_argument("--iterations", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--users", type=int, default=16, help="users per system")
    parser.add_argument("--cpu-messages", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.rounds, args.cpu_messages = 500, 5, 500
    with bench(args.redis_url) as b:
        print(b.header(), flush=True)
        print(flush=True)
        print(peers(b, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
