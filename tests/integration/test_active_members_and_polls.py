"""A poll's work does not grow with members who keep writing: their index entries follow
their sessions, so an event that is due is found in one small poll however many members are
active. On the memory backend and on a private Redis (the test counts on every due entry
being its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import TOKEN_KEY, FakeClock
from redis_servers import RedisProcess

from vimbiso_state.domain.expirations import ExpiryKind
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

ACTIVE = [f"+26377{n:07d}" for n in range(5_000_000, 5_000_040)]
LEAVER = "+263775999999"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "memory":
        return "memory", None
    server: RedisProcess = request.getfixturevalue("private_redis")
    return "redis", server.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(backend: tuple[str, str | None], clock: FakeClock) -> Iterator[StateService]:
    kind, url = backend
    where = {} if url is None else {"redis_url": url}
    settings = Settings(backend=kind, token_keys=(TOKEN_KEY,), form_ttl=1, session_ttl=2, **where)
    container = Container.from_settings(settings)
    container.clock.override(clock)
    yield container.state_service()
    container.close()


def _message(state: StateService, phone: str, n: int) -> None:
    with state.message(phone, f"wamid.{phone}.{n}", "hi") as msg:
        msg.conversation.context["n"] = n


def test_a_due_event_is_found_in_one_small_poll_while_many_members_keep_writing(
    state: StateService, clock: FakeClock
) -> None:
    for phone in ACTIVE:
        _message(state, phone, 1)  # sessions until t0 + 2 s
    clock.advance(1.5)
    for phone in ACTIVE:
        _message(state, phone, 2)  # still writing: sessions until t0 + 3.5 s
    with state.message(LEAVER, "wamid.leaver", "offer") as msg:
        msg.form_start("offer", required=["amount"])  # due at t0 + 2.5 s
    clock.advance(1.2)  # t0 + 2.7 s: the active members' first deadlines have passed
    with state.expirations(limit=1) as batch:
        events = [(event.phone, event.kind) for event in batch]
    assert events == [(LEAVER.lstrip("+"), ExpiryKind.FORM)]
    clock.advance(1)  # t0 + 3.7 s: now their sessions are over, each told once
    with state.expirations(limit=100) as batch:
        told = sorted(event.phone for event in batch if event.kind is ExpiryKind.SESSION)
    assert told == sorted([phone.lstrip("+") for phone in [*ACTIVE, LEAVER]])
