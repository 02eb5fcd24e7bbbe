"""Expiry events on a cluster under a backlog: a poll takes as many events as its limit from
all the masters together, each master's oldest first, and no master's events wait behind
another's. On a private cluster: the polls must see no other test's events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from cryptography.fernet import Fernet
from redis_cluster import LocalCluster
from wire_log import wire

from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

USERS = [f"26378{n:07d}" for n in range(4_000_000, 4_000_155)]


@pytest.fixture(scope="module")
def cluster(redis_server_bin: str, redis_cli_bin: str) -> Iterator[LocalCluster]:
    with LocalCluster(masters=3, executable=redis_server_bin, cli=redis_cli_bin) as local:
        yield local


def _state(url: str) -> Iterator[StateService]:
    key = Fernet.generate_key().decode()
    settings = Settings(backend="redis-cluster", redis_url=url, token_keys=(key,), form_ttl=1)
    container = Container.from_settings(settings)
    yield container.state_service()
    container.close()


@pytest.fixture
def state(cluster: LocalCluster) -> Iterator[StateService]:
    yield from _state(cluster.url)


def _leave_forms(state: StateService, phones: list[str]) -> None:
    """Each member leaves an offer half-filled; their deadlines follow the list's order."""
    for phone in phones:
        with state.message(phone, f"wamid.{phone}", "offer") as msg:
            msg.form_start("offer", required=["amount"])
        time.sleep(0.002)
    time.sleep(1.2)  # every form is past its deadline now


def _master_of(cluster: LocalCluster, client: redis.RedisCluster, phone: str) -> int:
    """The port of the master that holds the member's keys (their digits are the hash tag)."""
    return cluster.master_of_slot(client.keyslot(f"{{{phone}}}")).port


def test_one_poll_takes_its_whole_limit_from_all_masters(state: StateService) -> None:
    phones = USERS[:45]
    _leave_forms(state, phones)
    with state.expirations(limit=40) as batch:
        taken = [event.phone for event in batch if event.kind == "form"]
    assert len(taken) == 40
    with state.expirations(limit=40) as batch:
        rest = [event.phone for event in batch if event.kind == "form"]
    assert sorted(taken + rest) == sorted(phones)


def test_a_backlog_is_served_oldest_first_on_each_master_and_every_master_in_turn(
    cluster: LocalCluster, state: StateService
) -> None:
    phones = USERS[45:60]
    _leave_forms(state, phones)
    client = redis.RedisCluster.from_url(cluster.url)
    masters = {phone: _master_of(cluster, client, phone) for phone in phones}
    client.close()
    polls: list[list[str]] = []
    while len(polls) < 10:
        with state.expirations(limit=2) as batch:
            taken = [event.phone for event in batch if event.kind == "form"]
        if not taken:
            break
        polls.append(taken)
    delivered = [phone for poll in polls for phone in poll]
    assert sorted(delivered) == sorted(phones)
    # No master waits while another one's backlog is served: three polls reach all three.
    assert {masters[phone] for poll in polls[:3] for phone in poll} == set(masters.values())
    # Each master's members are told in the order their forms expired.
    for master in set(masters.values()):
        order = [phone for phone in delivered if masters[phone] == master]
        assert order == [phone for phone in phones if masters[phone] == master]


def test_one_asyncio_poll_takes_its_whole_limit_from_all_masters(
    cluster: LocalCluster, state: StateService
) -> None:
    phones = USERS[60:105]
    _leave_forms(state, phones)
    key = Fernet.generate_key().decode()
    settings = Settings(backend="redis-cluster", redis_url=cluster.url, token_keys=(key,))
    container = Container.from_settings(settings)

    async def two_polls() -> tuple[list[str], list[str]]:
        service = container.async_state_service()
        polls = []
        for _ in range(2):
            async with service.expirations(limit=40) as batch:
                polls.append([event.phone for event in batch if event.kind == "form"])
        await container.aclose()
        return polls[0], polls[1]

    taken, rest = asyncio.run(two_polls())
    assert len(taken) == 40
    assert sorted(taken + rest) == sorted(phones)


def test_a_poll_costs_a_round_trip_a_master_to_take_and_one_to_acknowledge(
    state: StateService,
) -> None:
    warm, phones = USERS[105:130], USERS[130:155]  # 25 members: some on every master
    _leave_forms(state, warm)
    with state.expirations(limit=1000):  # every master knows the scripts now
        pass
    _leave_forms(state, phones)
    with wire() as sent, state.expirations(limit=1000) as batch:
        taken = [event.phone for event in batch if event.kind == "form"]
    assert sorted(taken) == sorted(phones)
    assert sent == ["EVALSHA"] * 6  # claim.lua on each master, then ack.lua on each
