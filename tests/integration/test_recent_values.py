"""A write by the process that read or wrote the conversation a moment ago skips its read
(adapters/redis/protocol.py RecentValues). What it remembers must never decide anything the
stored state would decide otherwise: these are the cases where the two differ."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from fakes import FakeClock
from wire_log import wire

from vimbiso_state.domain.conversation import Conversation, Notice
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

KEY = Fernet.generate_key().decode()


def _service(redis_url: str, clock: FakeClock | None = None, **settings: float) -> StateService:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(KEY,), **settings)
    )
    if clock is not None:
        container.clock.override(clock)
    return container.state_service()


@pytest.fixture
def phone() -> Iterator[str]:
    number = f"+2637{random.randrange(10**7, 10**8)}"
    yield number


def _append(entry: str, calls: list[str]) -> object:
    def change(conv: Conversation) -> None:
        calls.append(entry)
        conv.context.setdefault("entries", []).append(entry)

    return change


def test_a_write_on_values_another_process_changed_since_is_redone_on_the_stored_ones(
    redis_url: str, phone: str
) -> None:
    mine, theirs = _service(redis_url), _service(redis_url)
    mine.start(phone)  # remembered here
    theirs.update(phone, _append("theirs", []))  # a version this process has not seen
    calls: list[str] = []
    with wire() as sent:
        conv = mine.update(phone, _append("mine", calls))
    # The compare-and-set failed on the remembered version, the write read the stored one and
    # ran the change again on it: nothing of the other process's write is lost.
    assert sent == ["EVALSHA", "MGET", "EVALSHA"]
    assert calls == ["mine", "mine"]
    assert conv.context["entries"] == ["theirs", "mine"]
    assert theirs.start(phone).context["entries"] == ["theirs", "mine"]
    mine.reset(phone)


def test_a_conversation_another_process_reset_is_not_written_back(
    redis_url: str, phone: str
) -> None:
    mine, theirs = _service(redis_url), _service(redis_url)
    mine.set_profile(phone, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    theirs.reset(phone)
    conv = mine.update(phone, lambda c: None)
    assert conv.profile is None
    assert theirs.start(phone).profile is None
    mine.reset(phone)


def test_a_part_that_expired_since_it_was_remembered_is_read_from_the_server(
    redis_url: str, phone: str
) -> None:
    clock = FakeClock()
    state = _service(redis_url, clock, form_ttl=1)
    state.form_start(phone, "offer", ["amount"])
    clock.advance(1.5)  # the form is past its deadline; what was remembered is 1.5 s old
    with wire() as sent:
        conv = state.update(phone, lambda c: None)
    assert sent == ["MGET", "EVALSHA"]  # read, then written: the expiry is the server's
    assert conv.form is None
    assert conv.notices == [Notice.FORM_EXPIRED]
    state.reset(phone)


def test_what_was_remembered_is_trusted_for_two_seconds_only(redis_url: str, phone: str) -> None:
    clock = FakeClock()
    state = _service(redis_url, clock)
    state.start(phone)
    with wire() as sent:
        state.navigate(phone, "handle_action_offer_credex")
    assert sent == ["EVALSHA"]
    clock.advance(2.5)
    with wire() as sent:
        state.back(phone)
    assert sent == ["MGET", "EVALSHA"]
    state.reset(phone)
