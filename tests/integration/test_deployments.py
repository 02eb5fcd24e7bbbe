"""The ways bots are deployed, on a real Redis: workers forked after the library was imported
and used (gunicorn --preload, Celery prefork), hosts whose clocks disagree by minutes, and a
reset racing a writer that loaded before it."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fakes import TOKEN_KEY
from redis.cluster import RedisCluster

from vimbiso_state.adapters.redis.clock import CLOCK_KEY
from vimbiso_state.adapters.token_cipher import FernetTokenCipher
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import EffectInDoubt
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url"))


@pytest.fixture
def containers(backend: str, url: str) -> Iterator[Callable[..., Container]]:
    built: list[Container] = []

    def make(**overrides: Any) -> Container:
        built.append(
            Container.from_settings(
                Settings(backend=backend, redis_url=url, token_keys=(TOKEN_KEY,), **overrides)
            )
        )
        return built[-1]

    yield make
    for container in built:
        container.close()


@pytest.fixture
def admin(backend: str, url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(url) if backend == "redis" else RedisCluster.from_url(url)
    yield client
    client.close()


@pytest.fixture
def phone() -> str:
    # A shared server: a random number per test, never flushed.
    return f"+2637{random.randrange(10**7, 10**8)}"


def _append(tag: str) -> Callable[[Conversation], None]:
    return lambda conv: conv.context.setdefault("entries", []).append(tag)


# Forked workers ---------------------------------------------------------------------------

_forked_state: StateService | None = None


def _forked_update(phone: str, tag: str) -> list[str]:  # pragma: no cover - in the child
    assert _forked_state is not None
    return list(_forked_state.update(phone, _append(tag)).context["entries"])


def _forked_message(phone: str, message_id: str) -> bool:  # pragma: no cover - in the child
    assert _forked_state is not None
    return _forked_state.handle_once(phone, message_id, _append(message_id)) is not None


def test_workers_forked_after_the_library_was_used_lose_no_acknowledged_write(
    containers: Callable[..., Container], phone: str
) -> None:
    """Four children forked from a parent that imported and used the library, one after the
    other (no concurrency): each child's write was acknowledged, so each must be stored.
    With an operation id drawn once at import, every child sent the same first id and only
    the first child's write was kept."""
    global _forked_state
    _forked_state = containers().state_service()
    _forked_state.start(phone)  # the parent used it: pools, clock and ids exist before fork
    fork = multiprocessing.get_context("fork")
    seen: list[list[str]] = []
    for n in range(4):
        with fork.Pool(1) as pool:
            seen.append(pool.apply(_forked_update, (phone, f"child-{n}")))
    assert [entries[-1] for entries in seen] == [f"child-{n}" for n in range(4)]
    assert _forked_state.start(phone).context["entries"] == [f"child-{n}" for n in range(4)]

    handled = []
    for n in range(3):
        with fork.Pool(1) as pool:
            handled.append(pool.apply(_forked_message, (phone, f"wamid.fork.{n}")))
    assert handled == [True, True, True]
    entries = _forked_state.start(phone).context["entries"]
    assert entries[4:] == [f"wamid.fork.{n}" for n in range(3)]
    _forked_state = None


# Two hosts, clocks five minutes apart ------------------------------------------------------


class SkewedClock:
    """This host's wall clock, ``offset`` away from true time."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _host(make: Callable[..., Container], offset: timedelta) -> StateService:
    container = make()
    container.host_clock.override(SkewedClock(offset))
    return container.state_service()


def _server_now(admin: Any) -> datetime:
    """The clock every host keeps: the server's (on a cluster, the clock node's)."""
    if isinstance(admin, RedisCluster):
        seconds, micros = admin.time(target_nodes=admin.get_node_from_key(CLOCK_KEY))
    else:
        seconds, micros = admin.time()
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)


@pytest.mark.parametrize("skew", [timedelta(minutes=5), -timedelta(minutes=5)])
def test_hosts_with_skewed_clocks_write_every_deadline_by_the_servers_clock(
    containers: Callable[..., Container], admin: Any, phone: str, skew: timedelta
) -> None:
    """No session, form, token or dedupe deadline, and no version, moves by more than a
    second, whichever host writes it."""
    slow, fast = _host(containers, -skew), _host(containers, skew)
    digits = PhoneNumber.parse(phone).digits
    for host in (slow, fast):
        host.start(phone)
        host.form_start(phone, "offer", ["amount"])
        host.handle_once(phone, f"wamid.{id(host)}", _append("m"))
        host.save_token(phone, "jwt")
        now = _server_now(admin)

        user = admin.get(f"user:{{{digits}}}:state") or b""
        session = admin.get(f"session:{{{digits}}}:data") or b""
        for value in (user, session):
            seen = datetime.fromtimestamp(int(value[:16]) / 1e6, UTC)
            assert abs(seen - now) < timedelta(seconds=1)
        stored = host.start(phone)
        assert stored.form is not None
        assert abs(stored.form.expires_at - (now + timedelta(minutes=10))) < timedelta(seconds=1)
        token = FernetTokenCipher([TOKEN_KEY]).open(
            PhoneNumber.parse(phone), admin.get(f"token:{{{digits}}}") or b""
        )
        assert abs(token.expires_at - (now + timedelta(minutes=30))) < timedelta(seconds=1)
        # Each handled id is scored by its commit's fence (the version it wrote): the time
        # the unit of work began, on the server's clock; the dedupe window counts from it.
        newest = admin.zrange(f"handled:{{{digits}}}", -1, -1, withscores=True)[0][1]
        assert abs(datetime.fromtimestamp(newest / 1e6, UTC) - now) < timedelta(seconds=1)
        version = int(user[16:32])
        assert abs(datetime.fromtimestamp(version / 1e6, UTC) - now) < timedelta(seconds=1)


def test_an_asyncio_host_keeps_the_servers_time_with_no_blocking_client(
    containers: Callable[..., Container], admin: Any, phone: str
) -> None:
    """An asyncio bot reads the server's TIME with its asyncio client, awaited. Building a
    blocking client on the event loop (on a cluster, reading the slot map) and reading with
    it once a minute stalled every conversation of the process meanwhile."""
    container = containers()
    container.host_clock.override(SkewedClock(timedelta(minutes=5)))

    async def host() -> list[object]:
        state = container.async_state_service()
        await state.start(phone)
        async with state.message(phone, "wamid.asyncio-host") as msg:
            msg.conversation.context["seen"] = True
        blocking = list(container.opened().sync)
        await container.aclose()
        return blocking

    assert asyncio.run(host()) == []
    now = _server_now(admin)
    user = admin.get(f"user:{{{PhoneNumber.parse(phone).digits}}}:state") or b""
    seen = datetime.fromtimestamp(int(user[:16]) / 1e6, UTC)
    assert abs(seen - now) < timedelta(seconds=1)


def test_a_slow_hosts_commit_is_recorded_in_order_after_a_fast_hosts(
    containers: Callable[..., Container], admin: Any, phone: str
) -> None:
    """Fences come from the server's clock: a host two minutes slow, writing after a host two
    minutes fast, gets the higher version, and both commits stay recorded (a host's own
    clock once pruned another's ids, whose retried write then applied twice)."""
    slow = _host(containers, -timedelta(minutes=2))
    fast = _host(containers, timedelta(minutes=2))
    digits = PhoneNumber.parse(phone).digits
    first = fast.update(phone, _append("A")).version
    second = slow.update(phone, _append("B")).version
    assert second > first
    fences = [score for _, score in admin.zrange(f"handled:{{{digits}}}", 0, -1, withscores=True)]
    assert fences == [first, second]


# A reset racing a stale writer ------------------------------------------------------------


def test_a_reset_is_not_undone_by_a_writer_that_loaded_before_it(
    containers: Callable[..., Container], phone: str
) -> None:
    """Host A loads version v; host B resets and builds the conversation up to the same number
    of writes; A's write must not pass the compare-and-set with the old member."""
    a, b = containers().state_service(), containers().state_service()
    a.start(phone)
    a.set_profile(phone, {"memberID": "old-member"}, [{"accountID": "a-1"}])
    b.reset(phone)
    b.start(phone)
    b.set_profile(phone, {"memberID": "new-member"}, [{"accountID": "a-1"}])
    conv = a.navigate(phone, OFFER)  # A read or wrote this user a moment ago
    assert conv.profile is not None and conv.profile.member.member_id == "new-member"
    stored = b.start(phone)
    assert stored.profile is not None and stored.profile.member.member_id == "new-member"
    assert stored.stage == OFFER


def test_waiting_for_a_message_does_not_hammer_redis(
    containers: Callable[..., Container], admin: Any, phone: str
) -> None:
    """A message waits a second for another: it sends a handful of commands, not a poll loop."""
    holder, waiter = containers().state_service(), containers().state_service()
    waiter.start(phone)  # its connections and clock are ready
    holding = threading.Event()

    def hold() -> None:
        with holder.message(phone, "wamid.hold"):
            holding.set()
            time.sleep(1)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(5)
    before = _calls(admin, phone)
    with waiter.message(phone, "wamid.wait") as msg:
        assert not msg.duplicate
    thread.join()
    sent = _calls(admin, phone) - before
    # The holder's commit, and the waiter's first try, its blocking wait with the next try,
    # and its commit; a few more if a try raced the holder's end. Polling every 10 ms
    # would be a hundred.
    assert 3 <= sent <= 8, sent


def _calls(admin: Any, phone: str) -> int:
    """Commands the server holding ``phone``'s keys has run."""
    if isinstance(admin, RedisCluster):
        node = admin.get_node_from_key(f"lease:{{{phone.lstrip('+')}}}")
        stats = admin.info("commandstats", target_nodes=node)
    else:
        stats = admin.info("commandstats")
    names = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_blpop", "cmdstat_mget")
    return sum(int(stats[name]["calls"]) for name in names if name in stats)


# Messages across threads and forked processes -----------------------------------------------

THREADS, FORKS, PER_WORKER = 8, 4, 50


def _deliver(state: StateService, phone: str, worker: str) -> list[tuple[str, int]]:
    """PER_WORKER messages; each records where in the user's history it found itself."""
    placed = []
    for n in range(PER_WORKER):
        message_id = f"wamid.{worker}.{n}"
        with state.message(phone, message_id) as msg:
            assert not msg.duplicate
            log = msg.conversation.context.setdefault("log", [])
            placed.append((message_id, len(log)))
            log.append(message_id)
    return placed


def _forked_deliver(phone: str, worker: str) -> list[tuple[str, int]]:  # pragma: no cover
    assert _forked_state is not None
    return _deliver(_forked_state, phone, worker)


def test_messages_of_one_user_from_threads_and_forked_processes_commit_once_in_one_order(
    containers: Callable[..., Container], phone: str
) -> None:
    """8 threads and 4 processes forked from the parent (after it used the library), 50
    messages each, all for one user: every message is committed exactly once, and each saw
    exactly the messages committed before it (one serial order)."""
    global _forked_state
    _forked_state = containers(lease_wait=60).state_service()
    _forked_state.start(phone)
    fork = multiprocessing.get_context("fork")
    with fork.Pool(FORKS) as pool:  # forked before any thread of the parent runs
        forked = [pool.apply_async(_forked_deliver, (phone, f"p{n}")) for n in range(FORKS)]
        with ThreadPoolExecutor(THREADS) as threads:
            placed = list(
                threads.map(lambda n: _deliver(_forked_state, phone, f"t{n}"), range(THREADS))
            )
        placed += [result.get(timeout=120) for result in forked]
    positions = sorted(position for worker in placed for _, position in worker)
    total = (THREADS + FORKS) * PER_WORKER
    assert positions == list(range(total))  # one serial order, nobody lost or doubled
    log = _forked_state.start(phone).context["log"]
    assert len(log) == len(set(log)) == total
    order = {message_id: position for worker in placed for message_id, position in worker}
    assert [order[message_id] for message_id in log] == list(range(total))
    _forked_state = None


# A worker killed in the middle of a payment -------------------------------------------------


def _pay_then_hang(
    phone: str, message_id: str, started: Any, finished: Any, hang_in_effect: bool
) -> None:  # pragma: no cover - runs in the child, which is killed
    assert _forked_state is not None
    with _forked_state.message(phone, message_id) as msg:

        def create_offer() -> dict[str, str]:
            started.set()
            if hang_in_effect:
                time.sleep(60)  # killed here: did Credex create the offer? Nobody knows.
            return {"credexID": "c-42"}

        msg.effect("create_credex", create_offer)
        finished.set()
        time.sleep(60)  # killed here: the offer exists, the commit never happened


@pytest.mark.parametrize("killed", ["inside the effect", "after the effect"])
def test_a_worker_killed_mid_payment_never_lets_the_redelivery_pay_twice(
    containers: Callable[..., Container], phone: str, killed: str
) -> None:
    """gunicorn kills a sync worker at its timeout in the middle of a Credex call (SIGKILL):
    the redelivery is told the outcome is unknown, never left to pay again; killed after the
    call returned, the redelivery gets the recorded result without calling Credex."""
    global _forked_state
    _forked_state = containers(lease_ttl=1).state_service()
    _forked_state.start(phone)
    fork = multiprocessing.get_context("fork")
    started, finished = fork.Event(), fork.Event()
    hang = killed == "inside the effect"
    worker = fork.Process(
        target=_pay_then_hang, args=(phone, "wamid.confirm", started, finished, hang)
    )
    worker.start()
    assert (started if hang else finished).wait(10)
    worker.kill()
    worker.join()

    calls: list[int] = []
    with _forked_state.message(phone, "wamid.confirm") as msg:  # waits out the dead lease
        assert not msg.duplicate
        if hang:
            with pytest.raises(EffectInDoubt):
                msg.effect("create_credex", lambda: calls.append(1))
            msg.settle("create_credex", {"credexID": "found-by-checking"})
        else:
            assert msg.effect("create_credex", lambda: calls.append(1)) == {"credexID": "c-42"}
    assert calls == []
    _forked_state = None
