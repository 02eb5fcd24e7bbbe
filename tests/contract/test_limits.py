"""Documented size limits on every backend: a document over the limit stores nothing, one
just under it is stored, and a user's handled ids stay bounded.

A stored document (the critical data, the session with its context, the form) may be at most
``adapters.codec.MAX_DOCUMENT_BYTES`` of JSON (see docs/reliability.md); the other limits are
refused before any I/O (tests/unit/test_refusals.py).
"""

from __future__ import annotations

import pytest
from fakes import FakeClock

from vimbiso_state.adapters.codec import MAX_DOCUMENT_BYTES
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.services.exceptions import StateTooLarge
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
CLEAR = rf"document is \d+ bytes, over the {MAX_DOCUMENT_BYTES}-byte limit .*nothing was stored"


def _prepare(state: StateService, phone: str) -> Conversation:
    state.start(phone)
    state.set_profile(phone, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    state.navigate(phone, OFFER)
    return state.update(phone, lambda conv: conv.context.update(step="amount"))


def test_a_context_over_the_limit_is_refused_and_nothing_is_stored(
    state: StateService, phone: str
) -> None:
    before = _prepare(state, phone)

    def oversize(conv: Conversation) -> None:
        conv.context["step"] = "recipient"  # a legitimate change in the same update
        conv.context["blob"] = "x" * MAX_DOCUMENT_BYTES

    with pytest.raises(StateTooLarge, match=CLEAR) as raised:
        state.update(phone, oversize)
    assert "session" in str(raised.value) and "context" in str(raised.value)
    after = state.start(phone)
    assert after.version == before.version
    assert after.context == {"step": "amount"}
    assert after.stage == OFFER


def test_a_context_just_under_the_limit_is_stored(state: StateService, phone: str) -> None:
    _prepare(state, phone)
    blob = "y" * (MAX_DOCUMENT_BYTES - 2048)  # the rest of the session fits in 2 KB
    state.update(phone, lambda conv: conv.context.update(blob=blob))
    assert state.start(phone).context["blob"] == blob


def test_the_handled_ids_of_a_user_stay_bounded_under_a_burst(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    """200 messages in a row on one user: the newest 128 ids are still known duplicates, the
    ones before them are let go (the set stays small instead of growing for a day)."""
    from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS

    for n in range(200):
        assert state.handle_once(phone, f"wamid.burst.{n}", lambda c: None) is not None
        clock.advance(0.001)  # messages come one after the other
    newest = 200 - MAX_HANDLED_IDS
    assert state.handle_once(phone, f"wamid.burst.{newest + 10}", lambda c: None) is None
    assert state.handle_once(phone, "wamid.burst.199", lambda c: None) is None
    assert state.handle_once(phone, "wamid.burst.0", lambda c: None) is not None
