"""A form filled inside ``state.message``: ``msg.form_start/form_fill/form_complete`` apply the
rules of the one-call operations, and what they change is stored with the message's commit."""

from __future__ import annotations

import pytest
from fakes import FakeClock

from vimbiso_state.domain.conversation import Notice
from vimbiso_state.services.exceptions import (
    FormValidationError,
    NoActiveForm,
)
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"


def test_a_form_is_started_filled_and_completed_over_several_messages(
    state: StateService, phone: str
) -> None:
    with state.message(phone, "wamid.f1", "1") as msg:
        msg.conversation.navigate(OFFER)
        form = msg.form_start("offer", required=["amount", "recipient"])
        assert form.missing() == ["amount", "recipient"]
        assert msg.conversation.form is form
    stored = state.start(phone).form
    assert stored is not None and stored.missing() == ["amount", "recipient"]

    with state.message(phone, "wamid.f2", "USD 25") as msg:
        form = msg.form_fill(amount="USD 25")  # normalised as form_fill normalises it
        assert form.values == {"amount": "25", "denomination": "USD"}
        assert not form.is_complete
    assert state.start(phone).form.values == {"amount": "25", "denomination": "USD"}  # type: ignore[union-attr]

    with state.message(phone, "wamid.f3", "bob_store") as msg:
        assert msg.form_fill(recipient="bob_store").is_complete
        values = msg.form_complete()
        assert msg.conversation.form is None
    assert values == {"amount": "25", "denomination": "USD", "recipient": "bob_store"}
    assert state.start(phone).form is None  # closed by the commit


def test_a_bad_answer_adds_nothing_and_the_message_still_commits(
    state: StateService, phone: str
) -> None:
    state.form_start(phone, "offer", required=["amount", "recipient"])
    with state.message(phone, "wamid.bad", "a lot") as msg:
        with pytest.raises(FormValidationError) as error:
            msg.form_fill(amount="a lot", recipient="bob_store")  # one bad: none stored
        assert set(error.value.errors) == {"amount"}
        assert msg.conversation.form is not None and msg.conversation.form.values == {}
    assert state.start(phone).form.values == {}  # type: ignore[union-attr]
    with state.message(phone, "wamid.bad", "a lot") as again:
        assert again.duplicate  # answered (with "try again"), so a redelivery is not


def test_form_changes_are_stored_only_by_the_commit(state: StateService, phone: str) -> None:
    state.start(phone)  # a first contact is a write, which would wait for the message below
    with state.message(phone, "wamid.c1") as msg:
        msg.form_start("offer", required=["amount"])
        assert state.start(phone).form is None  # not before the commit
    with pytest.raises(LookupError), state.message(phone, "wamid.c2") as msg:
        msg.form_fill(amount="100")
        raise LookupError("the bot's own bug")
    assert state.start(phone).form.values == {}  # type: ignore[union-attr]


def test_a_form_started_in_a_message_expires_after_form_ttl(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    with state.message(phone, "wamid.e1") as msg:
        msg.form_start("offer", required=["amount"])
    clock.advance(minutes=9)
    with state.message(phone, "wamid.e2") as msg:
        msg.form_fill(amount="5")  # an answer slides the form's deadline
    clock.advance(minutes=9)
    assert state.start(phone).form is not None
    clock.advance(minutes=1, seconds=1)
    with state.message(phone, "wamid.e3", "bob") as msg:
        assert msg.conversation.form is None
        assert Notice.FORM_EXPIRED in msg.conversation.notices
        with pytest.raises(NoActiveForm):
            msg.form_fill(recipient="bob")
