"""Round trips of a message on Redis Cluster, sync and asyncio, counted on the wire as on one
Redis (tests/integration/test_round_trips.py): two (begin, commit) with any number of changes,
plus two per effect; a wait costs two more, not one, because the cluster client refuses
scripts in pipelines, so the BLPOP and the next try go out one after the other
(adapters/redis/store.py begin).

tests/wire_log.py patches the base connection classes, so it sees the sends of the cluster
clients' node connections too; the last tests are the control. Each test warms up first (slot
map read, connections opened, scripts known) so that only steady-state traffic is counted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from cryptography.fernet import Fernet
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from wire_log import wire

from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

MEMBER = {"memberID": "m-0001", "firstname": "Tendai", "lastname": "Moyo"}
ACCOUNTS = [{"accountID": f"acc_{n}", "accountName": f"Account {n}"} for n in range(3)]
HOLD = 0.2  # seconds a holder keeps the user, so that the waiter surely waits


def _container(cluster_url: str) -> Container:
    key = Fernet.generate_key().decode()
    return Container.from_settings(
        Settings(backend="redis-cluster", redis_url=cluster_url, token_keys=(key,))
    )


@pytest.fixture(scope="module")
def container(cluster_url: str) -> Iterator[Container]:
    container = _container(cluster_url)
    yield container
    container.close()


@pytest.fixture
def state(container: Container) -> StateService:
    return container.state_service()


@pytest.fixture
def phone(state: StateService, new_phones: Callable[[int], list[str]]) -> Iterator[str]:
    (number,) = new_phones(1)
    yield number
    state.reset(number)


def _existing(state: StateService, phone: str) -> None:
    """A live conversation with a profile, a menu path, a form and a token; it also warms the
    node of the user's slot (connection, scripts)."""
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.navigate(phone, "handle_action_offer_credex")
    state.form_start(phone, "offer", ["amount", "recipient"])
    state.save_token(phone, "eyJhbGciOiJIUzI1NiJ9.e30.sig")
    with state.message(phone, "wamid.cluster.warm") as msg:
        msg.effect("warm", lambda: None)


def _message(state: StateService, phone: str, message_id: str, effects: int) -> None:
    with state.message(phone, message_id, "1") as msg:
        conv = msg.conversation
        for n in range(effects):
            msg.effect(f"credex_call_{n}", lambda n=n: {"n": n})
        conv.navigate("handle_action_offer_credex")
        conv.context["amount"] = "25"
        conv.select_account("acc_2")
        conv.navigate("handle_action_confirm")
        msg.save_token("eyJhbGciOiJIUzI1NiJ9.e30.sig")


async def _async_message(
    state: AsyncStateService, phone: str, message_id: str, effects: int
) -> None:
    async with state.message(phone, message_id, "1") as msg:
        conv = msg.conversation
        for n in range(effects):
            await msg.effect(f"credex_call_{n}", lambda n=n: {"n": n})
        conv.navigate("handle_action_offer_credex")
        conv.context["amount"] = "25"
        conv.select_account("acc_2")
        msg.save_token("eyJhbGciOiJIUzI1NiJ9.e30.sig")


def _on_asyncio(
    cluster_url: str, scenario: Callable[[AsyncStateService], Awaitable[list[str]]]
) -> list[str]:
    container = _container(cluster_url)

    async def run() -> list[str]:
        try:
            return await scenario(container.async_state_service())
        finally:
            await container.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("effects", [0, 1, 3])
def test_a_message_costs_two_round_trips_plus_two_per_effect(
    state: StateService, phone: str, effects: int
) -> None:
    _existing(state, phone)
    with wire() as sent:
        _message(state, phone, f"wamid.cluster.rt.{effects}", effects)
    assert sent == ["EVALSHA"] * (2 + 2 * effects)


@pytest.mark.parametrize("effects", [0, 1, 3])
def test_an_asyncio_message_costs_the_same_round_trips(
    cluster_url: str, state: StateService, phone: str, effects: int
) -> None:
    _existing(state, phone)

    async def scenario(service: AsyncStateService) -> list[str]:
        await _async_message(service, phone, "wamid.cluster.async.warm", 1)
        with wire() as sent:
            await _async_message(service, phone, f"wamid.cluster.async.{effects}", effects)
        return sent

    assert _on_asyncio(cluster_url, scenario) == ["EVALSHA"] * (2 + 2 * effects)


@pytest.fixture(scope="module")
def other(cluster_url: str) -> Iterator[StateService]:
    """Another process's service, the holder in the wait tests. On the waiter's own clients
    the holder's commit and the waiter's next try can be in flight at once, and the count
    would now and then catch a second connection to the node opening: the pool's warm-up,
    not the message's cost."""
    container = _container(cluster_url)
    yield container.state_service()
    container.close()


@contextmanager
def _held(state: StateService, phone: str, message_id: str) -> Iterator[None]:
    """A message of ``state`` holds the user (in a thread) for HOLD seconds from the start
    of the block; it has ended when the block does."""
    holding = threading.Event()

    def hold() -> None:
        with state.message(phone, message_id):
            holding.set()
            time.sleep(HOLD)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        yield
    finally:
        holder.join()


# What the wire shows while a message waits: the holder's commit (it ends the wait), then the
# waiter's try, its BLPOP, its next try and its commit. Sorted: the two interleave.
A_WAIT = sorted(["EVALSHA", "EVALSHA", "BLPOP", "EVALSHA", "EVALSHA"])


def test_a_message_that_waited_costs_two_round_trips_more(
    state: StateService, other: StateService, phone: str
) -> None:
    _existing(state, phone)

    def waiter(message_id: str) -> list[str]:
        with (
            _held(other, phone, message_id + ".holder"),
            wire() as sent,
            state.message(phone, message_id) as msg,
        ):
            assert not msg.duplicate
        return sent

    waiter("wamid.cluster.wait.warm")  # the first wait opens the connection waits use
    sent = waiter("wamid.cluster.wait")
    assert sorted(sent) == A_WAIT, sent


def test_an_asyncio_message_that_waited_costs_two_round_trips_more(
    cluster_url: str, state: StateService, other: StateService, phone: str
) -> None:
    _existing(state, phone)

    async def scenario(service: AsyncStateService) -> list[str]:
        async def waiter(message_id: str) -> list[str]:
            # Blocking the loop while the holder starts is fine: nothing else runs on it.
            with _held(other, phone, message_id + ".holder"), wire() as sent:
                async with service.message(phone, message_id) as msg:
                    assert not msg.duplicate
            return sent

        # The client's discovery first: a loaded machine may take longer than HOLD for it,
        # and a warm-up that found the user free would leave the waits client to the count.
        await _async_message(service, phone, "wamid.cluster.async.first", 0)
        await waiter("wamid.cluster.async.wait.warm")  # the first wait discovers the cluster
        return await waiter("wamid.cluster.async.wait")

    sent = _on_asyncio(cluster_url, scenario)
    assert sorted(sent) == A_WAIT, sent


def test_a_duplicate_message_costs_one_round_trip(state: StateService, phone: str) -> None:
    _existing(state, phone)
    _message(state, phone, "wamid.cluster.dup", 0)
    with wire() as sent, state.message(phone, "wamid.cluster.dup") as msg:
        assert msg.duplicate
    assert sent == ["EVALSHA"]


def test_the_counter_sees_every_round_trip_of_a_cluster_client(
    container: Container, phone: str
) -> None:
    # Control: the cluster clients send through their node connections; if the wire log
    # stopped seeing those, the counts above would read [] and fail rather than pass.
    client = container.redis_client()
    assert isinstance(client, RedisCluster)
    key = f"test:{{{phone[1:]}}}:rt"
    client.set(key, b"warm", px=60_000)
    with wire() as sent:
        client.set(key, b"x", px=60_000)
        client.get(key)
        client.delete(key)
    assert sent == ["SET", "GET", "DEL"]


def test_the_counter_sees_every_round_trip_of_an_asyncio_cluster_client(
    cluster_url: str, phone: str
) -> None:
    key = f"test:{{{phone[1:]}}}:rt"

    async def control() -> list[str]:
        client = AsyncRedisCluster.from_url(cluster_url)
        try:
            await client.set(key, b"warm", px=60_000)
            with wire() as sent:
                await client.set(key, b"x", px=60_000)
                await client.get(key)
                await client.delete(key)
            return sent
        finally:
            await client.aclose()

    assert asyncio.run(control()) == ["SET", "GET", "DEL"]
