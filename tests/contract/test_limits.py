"""Documented size limits, identical on every backend: refused clearly, nothing stored.

A stored document (the critical data, the session with its context, the form) may be at most
``adapters.codec.MAX_DOCUMENT_BYTES`` of JSON; a token at most ``MAX_TOKEN`` characters and a
message id at most ``MAX_MESSAGE_ID``. See docs/reliability.md.
"""

from __future__ import annotations

import pytest
from fakes import FakeClock

from vimbiso_state.adapters.codec import MAX_DOCUMENT_BYTES
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.form import MAX_FIELDS, MAX_VALUE_LENGTH
from vimbiso_state.services.exceptions import InvalidInput, StateTooLarge
from vimbiso_state.services.flows import MAX_MESSAGE_ID, MAX_TOKEN
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


def test_a_profile_over_the_limit_is_refused_and_nothing_is_stored(
    state: StateService, phone: str
) -> None:
    before = _prepare(state, phone)
    member = {"memberID": "m-2", "bio": "z" * MAX_DOCUMENT_BYTES}
    with pytest.raises(StateTooLarge, match=CLEAR) as raised:
        state.set_profile(phone, member, [{"accountID": "a-2"}])
    assert "profile" in str(raised.value)
    after = state.start(phone)
    assert after.version == before.version
    assert after.profile is not None and after.profile.member.member_id == "m-1"


def test_a_form_over_the_limit_is_refused_and_its_earlier_answers_are_kept(
    state: StateService, phone: str
) -> None:
    # Each answer is within the per-field limits, but control characters are stored escaped
    # (\u0001 is six bytes), so the most fields with the longest answers overflow the document.
    fields = [f"f{i:02d}_" + "a" * 59 for i in range(MAX_FIELDS)]
    state.start(phone)
    state.form_start(phone, "survey", required=fields)
    state.form_fill(phone, **{fields[0]: "first answer"})
    version = state.start(phone).version
    answers = {name: "\x01" * MAX_VALUE_LENGTH for name in fields}
    with pytest.raises(StateTooLarge, match=CLEAR) as raised:
        state.form_fill(phone, **answers)
    assert "form" in str(raised.value)
    after = state.start(phone)
    assert after.version == version
    assert after.form is not None and after.form.values == {fields[0]: "first answer"}


def test_a_token_over_the_limit_is_refused_and_nothing_is_stored(
    state: StateService, phone: str
) -> None:
    state.start(phone)
    state.save_token(phone, "jwt-ok")
    with pytest.raises(InvalidInput, match=f"1 to {MAX_TOKEN} characters") as raised:
        state.save_token(phone, "t" * (MAX_TOKEN + 1))
    assert "tttt" not in str(raised.value)  # the message never echoes the token
    assert state.token(phone) == "jwt-ok"
    state.save_token(phone, "t" * MAX_TOKEN)  # the limit itself is allowed
    assert state.token(phone) == "t" * MAX_TOKEN


def test_a_message_id_over_the_limit_is_refused_and_nothing_is_stored(
    state: StateService, phone: str
) -> None:
    version = state.start(phone).version
    with pytest.raises(InvalidInput, match=f"1 to {MAX_MESSAGE_ID} characters"):
        state.handle_once(phone, "w" * (MAX_MESSAGE_ID + 1), lambda conv: None)
    assert state.start(phone).version == version
    assert state.handle_once(phone, "w" * MAX_MESSAGE_ID, lambda conv: None) is not None


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
