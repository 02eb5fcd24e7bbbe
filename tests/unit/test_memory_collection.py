"""The in-memory store drops what has outlived its TTL, as Redis would, so that a long-running
process on the memory backend does not grow without bound."""

from __future__ import annotations

from datetime import timedelta

from fakes import PHONE, T0, FakeClock

from vimbiso_state.adapters.memory.store import (
    GRACE,
    MemoryConversationRepository,
    MemoryTokenRepository,
)
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services.state_service import StateService

NUMBER = PhoneNumber.parse(PHONE)


def _store(
    clock: FakeClock, timeouts: Timeouts
) -> tuple[MemoryConversationRepository, StateService]:
    repo = MemoryConversationRepository(clock, timeouts)
    return repo, StateService(repo, MemoryTokenRepository(clock), clock, timeouts, cipher=None)


def test_each_part_is_collected_after_its_own_deadline_and_then_the_user() -> None:
    clock, timeouts = FakeClock(T0), Timeouts()
    repo, state = _store(clock, timeouts)
    state.start(PHONE)
    state.form_start(PHONE, "offer", ["amount"])  # the form outlives the session

    clock.advance(seconds=(timeouts.session + GRACE).total_seconds() + 1)
    stored = repo.peek(NUMBER)
    assert stored.session is None
    assert stored.critical is not None and stored.form is not None

    # Past its deadline the form is kept for the event that tells the member (an
    # acknowledged event drops it), never longer than the critical data that names it.
    clock.advance(seconds=(timeouts.form - timeouts.session).total_seconds())
    stored = repo.peek(NUMBER)
    assert stored.form is not None and stored.form.is_expired(clock.now())

    clock.advance(seconds=(timeouts.state + GRACE).total_seconds())
    stored = repo.peek(NUMBER)
    assert stored.critical is None and stored.form is None
    assert not repo._users  # nothing about this user is held any more


def test_a_part_written_later_is_collected_at_its_new_deadline_not_before() -> None:
    clock = FakeClock(T0)
    timeouts = Timeouts()
    repo, state = _store(clock, timeouts)
    state.start(PHONE)
    clock.advance(minutes=3)
    state.navigate(PHONE, "handle_action_offer_credex")  # the session's deadline moves on
    clock.advance(seconds=(timeouts.session + GRACE).total_seconds() - 1)
    assert repo.peek(NUMBER).session is not None
    clock.advance(seconds=2)
    assert repo.peek(NUMBER).session is None


def test_a_message_id_is_forgotten_after_dedupe() -> None:
    clock = FakeClock(T0)
    timeouts = Timeouts(dedupe=timedelta(seconds=30))
    _, state = _store(clock, timeouts)
    assert state.handle_once(PHONE, "wamid.1", lambda c: None) is not None
    assert state.handle_once(PHONE, "wamid.1", lambda c: None) is None  # a duplicate
    clock.advance(31)
    assert state.handle_once(PHONE, "wamid.1", lambda c: None) is not None  # forgotten
