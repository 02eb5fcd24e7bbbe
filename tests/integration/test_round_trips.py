"""Round trips per operation on a real Redis: counted on the wire, not timed.

Round trips are recorded by tests/wire_log.py (one entry per send, a health-check PING or a
SCRIPT LOAD included). Scripts are loaded and connections opened by a warm-up before anything
is counted.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from cryptography.fernet import Fernet
from wire_log import wire

from vimbiso_state.adapters.redis.aio import close_async
from vimbiso_state.adapters.redis.connection import close
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

MEMBER = {"memberID": "m-0001", "firstname": "Tendai", "lastname": "Moyo"}
ACCOUNTS = [
    {"accountID": f"acc_{n}", "accountName": f"Account {n}", "accountHandle": f"tendai_{n}"}
    for n in range(3)
]


def new_phone() -> str:
    # Shared server: a random number per test, and nothing is ever flushed.
    return f"+2637{random.randrange(10**7, 10**8)}"


@pytest.fixture(scope="module")
def container(redis_url: str) -> Iterator[Container]:
    key = Fernet.generate_key().decode()
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(key,))
    )
    # Warm-up: open the connection and make the server know both scripts (redis-py sends
    # SCRIPT LOAD after a NOSCRIPT on first use), so that only steady-state traffic is counted.
    state, phone = container.state_service(), new_phone()
    state.start(phone)
    state.update(phone, lambda c: None)
    state.save_token(phone, "warm")
    state.token(phone)
    with state.message(phone, "wamid.warm") as msg:
        msg.effect("warm", lambda: None)
    state.reset(phone)
    yield container
    container.redis_client().close()


@pytest.fixture
def state(container: Container) -> StateService:
    return container.state_service()


@pytest.fixture
def phone(state: StateService) -> Iterator[str]:
    number = new_phone()
    yield number
    state.reset(number)


def existing(state: StateService, phone: str) -> None:
    """A live conversation with a profile, a menu path, a form and a token."""
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.navigate(phone, "handle_action_offer_credex")
    state.form_start(phone, "offer", ["amount", "recipient"])
    state.save_token(phone, "eyJhbGciOiJIUzI1NiJ9.e30.sig")


def nothing(state: StateService, phone: str) -> None:
    pass


Operation = Callable[[StateService, str], object]
WRITES: list[tuple[str, Operation]] = [
    ("update", lambda s, p: s.update(p, lambda c: c.select_account("acc_2"))),
    ("navigate", lambda s, p: s.navigate(p, "handle_action_pending_offers_in")),
    ("back", lambda s, p: s.back(p)),
    ("form_fill", lambda s, p: s.form_fill(p, amount="USD 100")),
]
# Every write is a unit of work: one round trip to hold the user and read (a pipeline), one
# to commit. A read is one.
CASES: list[tuple[str, Operation, Operation, int]] = [
    ("start an existing live conversation", existing, lambda s, p: s.start(p), 1),
    ("start a new user", nothing, lambda s, p: s.start(p), 3),
    *[(name, existing, write, 2) for name, write in WRITES],
    ("handle_once", existing, lambda s, p: s.handle_once(p, "wamid.HBgM", lambda c: None), 2),
    ("token", existing, lambda s, p: s.token(p), 1),
    ("save_token", nothing, lambda s, p: s.save_token(p, "eyJhbGciOiJIUzI1NiJ9.e30.sig"), 2),
]


@pytest.mark.parametrize(
    ("setup", "operation", "expected"),
    [pytest.param(setup, op, n, id=name) for name, setup, op, n in CASES],
)
def test_round_trips_per_operation(
    state: StateService, phone: str, setup: Operation, operation: Operation, expected: int
) -> None:
    setup(state, phone)
    with wire() as sent:
        operation(state, phone)
    assert len(sent) == expected, f"expected {expected} round trip(s), sent {sent}"


@pytest.fixture(scope="module")
def other(redis_url: str) -> Iterator[StateService]:
    """A second process's service: its own connections and its own memory."""
    key = Fernet.generate_key().decode()
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(key,))
    )
    state = container.state_service()
    state.start(new_phone())  # connected before anything is counted
    yield state
    container.redis_client().close()


@pytest.mark.parametrize("write", [pytest.param(w, id=name) for name, w in WRITES])
def test_a_write_costs_the_same_whichever_process_read_the_conversation_before(
    state: StateService, other: StateService, phone: str, write: Operation
) -> None:
    existing(state, phone)
    with wire() as sent:
        write(other, phone)
    assert sent == ["EVALSHA", "EVALSHA"]  # hold and read (one pipeline), then commit
    with wire() as sent:
        write(state, phone)  # no cache of what this process wrote: the same two
    assert sent == ["EVALSHA", "EVALSHA"]


def test_a_duplicate_delivery_costs_one_round_trip(state: StateService, phone: str) -> None:
    existing(state, phone)
    state.handle_once(phone, "wamid.dup", lambda c: None)
    with wire() as sent:
        assert state.handle_once(phone, "wamid.dup", lambda c: None) is None
    assert sent == ["EVALSHA"]


def _message(state: StateService, phone: str, message_id: str, effects: int = 0) -> None:
    with state.message(phone, message_id, "1") as msg:
        conv = msg.conversation
        for n in range(effects):
            msg.effect(f"credex_call_{n}", lambda n=n: {"n": n})
        # Any number of changes, of every part: navigation, form, profile, context, token.
        conv.navigate("handle_action_offer_credex")
        conv.form = None
        conv.context["amount"] = "25"
        conv.select_account("acc_2")
        conv.navigate("handle_action_confirm")
        msg.save_token("eyJhbGciOiJIUzI1NiJ9.e30.sig")


@pytest.mark.parametrize("effects", [0, 1, 3])
def test_a_message_costs_two_round_trips_plus_two_per_effect(
    state: StateService, phone: str, effects: int
) -> None:
    existing(state, phone)
    with wire() as sent:
        _message(state, phone, f"wamid.rt.{effects}", effects)
    assert sent == ["EVALSHA", *["EVALSHA"] * (2 * effects), "EVALSHA"]


def test_an_asyncio_message_costs_the_same_round_trips(redis_url: str, phone: str) -> None:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(Fernet.generate_key().decode(),))
    )
    state = container.async_state_service()

    async def message(message_id: str) -> None:
        async with state.message(phone, message_id, "1") as msg:
            msg.conversation.navigate("handle_action_offer_credex")
            await msg.effect("create_credex", lambda: {"credexID": "c-1"})

    async def scenario() -> list[str]:
        await message("wamid.async.warm")  # connections made, scripts known, clock read
        with wire() as sent:
            await message("wamid.async.counted")
        await close_async(container.async_redis_client())
        return sent

    assert asyncio.run(scenario()) == ["EVALSHA"] * 4
    close(container.redis_client())


def test_a_message_that_waited_costs_one_round_trip_more(
    state: StateService, other: StateService, phone: str
) -> None:
    existing(state, phone)
    holding = threading.Event()

    def hold(message_id: str) -> None:
        with state.message(phone, message_id):
            holding.set()
            time.sleep(0.3)

    def waiter(message_id: str) -> list[str]:
        holder = threading.Thread(target=hold, args=(message_id + ".holder",))
        holder.start()
        assert holding.wait(5)
        holding.clear()
        with wire() as sent:
            with other.message(phone, message_id) as msg:
                assert not msg.duplicate
            holder.join()
        return sent

    waiter("wamid.rt.warm")  # the first wait of a process opens the connection waits use
    sent = waiter("wamid.rt.waiter")
    # The holder's commit (from its thread), then the waiter: it tried, waited and tried
    # again (one pipeline), and committed.
    assert sorted(sent) == sorted(["EVALSHA", "EVALSHA", "BLPOP", "EVALSHA"]), sent


def test_a_duplicate_message_costs_one_round_trip(state: StateService, phone: str) -> None:
    existing(state, phone)
    _message(state, phone, "wamid.rt.dup")
    with wire() as sent, state.message(phone, "wamid.rt.dup") as msg:
        assert msg.duplicate
    assert sent == ["EVALSHA"]


def test_the_counter_sees_every_round_trip(redis_url: str) -> None:
    # Control: if redis-py stopped sending through send_packed_command, every count above
    # would read 0 and the operation tests would fail loudly rather than pass vacuously.
    client = redis.Redis.from_url(redis_url)
    key = f"test:{{{new_phone()[1:]}}}:rt"
    try:
        client.ping()
        with wire() as sent:
            client.set(key, b"x", px=60_000)
            client.get(key)
            pipe = client.pipeline(transaction=False)
            pipe.get(key).pttl(key)
            pipe.execute()
        assert sent == ["SET", "GET", "GET"]
    finally:
        client.delete(key)
        client.close()


def test_a_poll_for_expiry_events_costs_one_round_trip_to_take_and_one_to_acknowledge(
    redis_url: str,
) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(backend="redis", redis_url=redis_url, token_keys=(key,), form_ttl=1)
    container = Container.from_settings(settings)
    state = container.state_service()
    warm, *phones = [new_phone() for _ in range(4)]
    for phone in [warm, *phones]:
        with state.message(phone, f"wamid.{phone}", "offer") as msg:
            msg.form_start("offer", required=["amount"])
        time.sleep(0.01)
    time.sleep(1.2)
    with state.expirations(limit=1):  # the oldest, warm's: the scripts become known
        pass
    with wire() as sent, state.expirations(limit=1000) as batch:
        mine = [event.phone for event in batch if "+" + event.phone in phones]
    assert sorted(mine) == sorted(phone.lstrip("+") for phone in phones)
    assert sent == ["EVALSHA", "EVALSHA"]  # claim.lua (checks included), ack.lua
    for phone in [warm, *phones]:
        state.reset(phone)
    container.close()
