"""Expiry events on every backend, sync and asyncio: a member who leaves a form or a session
is told once, shortly after its deadline; one who answered in time is not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from fakes import FakeClock

from vimbiso_state.domain.expirations import Expiration, ExpiryKind
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"


@pytest.fixture
def short(state_with: Callable[..., StateService]) -> StateService:
    """Forms of 1 s and sessions of 2 s."""
    return state_with(form_ttl=1, session_ttl=2)


def _events(state: StateService, phone: str, kind: ExpiryKind | None = None) -> list[Expiration]:
    """The member's events of one poll (the store is shared with other tests' members)."""
    with state.expirations(limit=1000) as batch:
        mine = [event for event in batch if event.phone == phone.lstrip("+")]
    return [event for event in mine if kind is None or event.kind is kind]


def _leave_an_offer(state: StateService, phone: str) -> None:
    with state.message(phone, f"wamid.{phone}.1", "offer") as msg:
        msg.conversation.navigate(OFFER)
        msg.form_start("offer", required=["amount", "recipient"])
    with state.message(phone, f"wamid.{phone}.2", "USD 25") as msg:
        msg.form_fill(amount="USD 25")


def test_a_member_who_leaves_a_form_is_told_once_after_its_deadline(
    short: StateService, phone: str, clock: FakeClock
) -> None:
    _leave_an_offer(short, phone)
    answered_at = clock.now()
    assert _events(short, phone, ExpiryKind.FORM) == []  # not yet
    clock.advance(1.5)
    [event] = _events(short, phone, ExpiryKind.FORM)
    assert event.phone == phone.lstrip("+") and event.name == "offer"
    assert event.answers == {"amount": "25", "denomination": "USD"}
    assert event.expired_at == answered_at + timedelta(seconds=1)
    assert event.window_closes_at == answered_at + timedelta(hours=24)
    assert not event.redelivered
    clock.advance(1)
    assert _events(short, phone, ExpiryKind.FORM) == []  # acknowledged: once
    with short.message(phone, f"wamid.{phone}.3", "hello?") as msg:
        assert msg.conversation.form is None  # expired, as before


def test_a_member_who_answered_in_time_is_not_told(
    short: StateService, phone: str, clock: FakeClock
) -> None:
    _leave_an_offer(short, phone)
    clock.advance(0.6)
    with short.message(phone, f"wamid.{phone}.3", "bob_shop") as msg:
        msg.form_fill(recipient="bob_shop")  # the deadline moves on
    clock.advance(0.6)  # past the first deadline, not the second
    assert _events(short, phone, ExpiryKind.FORM) == []
    with short.message(phone, f"wamid.{phone}.4", "1") as msg:
        msg.form_complete()  # and the offer is done
    clock.advance(5)
    assert _events(short, phone, ExpiryKind.FORM) == []


def test_a_session_that_times_out_is_one_event_and_then_nothing_is_indexed(
    short: StateService, phone: str, clock: FakeClock
) -> None:
    with short.message(phone, f"wamid.{phone}.1", "hi") as msg:
        msg.conversation.navigate(OFFER)
    last = clock.now()
    clock.advance(1)
    short.start(phone)  # a read slides the session: its deadline moves on
    clock.advance(1.5)
    assert _events(short, phone, ExpiryKind.SESSION) == []
    clock.advance(1)
    [event] = _events(short, phone)
    assert event.kind is ExpiryKind.SESSION
    assert event.expired_at == last + timedelta(seconds=3)
    assert event.window_closes_at == last + timedelta(hours=24)
    clock.advance(60)
    assert _events(short, phone) == []


def test_a_consumer_that_raises_loses_nothing(
    short: StateService, phone: str, clock: FakeClock
) -> None:
    _leave_an_offer(short, phone)
    clock.advance(1.5)
    with pytest.raises(ConnectionError), short.expirations(lease=10) as batch:
        assert [event.kind for event in batch] == [ExpiryKind.FORM]
        raise ConnectionError("WhatsApp did not answer")
    clock.advance(5)
    assert _events(short, phone, ExpiryKind.FORM) == []  # still claimed by the failed consumer
    clock.advance(6)  # its lease has passed
    [event] = _events(short, phone, ExpiryKind.FORM)
    assert event.redelivered


def test_two_consumers_at_once_never_get_the_same_event(
    short: StateService, phone: str, clock: FakeClock
) -> None:
    members = [f"+{int(phone.lstrip('+')) + 1000 * n}" for n in range(12)]
    for member in members:
        _leave_an_offer(short, member)
    clock.advance(1.5)
    seen: list[list[str]] = [[], []]
    gate = threading.Barrier(2)

    def consume(index: int) -> None:
        gate.wait()
        for _ in range(6):
            with short.expirations(limit=2) as batch:
                seen[index] += [e.phone for e in batch if e.kind is ExpiryKind.FORM]

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    delivered = seen[0] + seen[1]
    assert sorted(delivered) == sorted(m.lstrip("+") for m in members)


def test_every_message_reopens_the_customer_service_window(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    assert state.start(phone).window_closes_at is None  # no message yet
    with state.message(phone, "wamid.1") as msg:
        assert msg.conversation.window_closes_at == clock.now() + timedelta(hours=24)
    clock.advance(hours=3)
    state.update(phone, lambda c: c.context.update(bot="wrote"))  # not the member
    assert state.start(phone).window_closes_at == clock.now() + timedelta(hours=21)
