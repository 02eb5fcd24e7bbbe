"""Effects at most once per intent, on every backend, sync and asyncio.

An offer spans several messages, and the live bot's components catch every exception: a
message whose Credex call failed midway commits with the flow still at the confirm step, and
the member's next tap is a new message. The effect's record is keyed by the intent (the
offer's form id), so that tap meets the record, not a second payment.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import FakeClock

from vimbiso_state.domain.conversation import DEFAULT_STAGE
from vimbiso_state.domain.effects import InDoubt
from vimbiso_state.services.exceptions import EffectInDoubt, InvalidInput
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
CONFIRM = "ConfirmOfferSecured"


class Credex:
    """createCredex as the bot calls it: each call creates an offer, unless told to fail."""

    def __init__(self) -> None:
        self.offers: list[dict[str, str]] = []
        self.fail_with: BaseException | None = None

    def create(self, values: dict[str, str]) -> dict[str, str]:
        self.offers.append(values)
        if self.fail_with is not None:
            raise self.fail_with  # after Credex created it: the answer never came
        return {"credexID": f"c-{len(self.offers)}"}


def bot(state: StateService, credex: Credex) -> Callable[[str, str, str], str]:
    """A handler shaped like the live bot's offer flow: one component a stage, each catching
    every exception and answering with an error message, the message then committed. It pays
    only at the confirm step, keyed by the offer's own id."""

    def on_message(phone: str, message_id: str, text: str) -> str:
        with state.message(phone, message_id, text) as msg:
            if msg.duplicate:
                return "duplicate"
            conv = msg.conversation
            try:
                if text == "offer":
                    conv.navigate(OFFER)
                    msg.form_start("offer", required=["amount", "recipient"])
                    conv.stage = "AmountInput"
                    return "How much?"
                if conv.stage == "AmountInput":
                    msg.form_fill(amount=text)
                    conv.stage = "HandleInput"
                    return "To whom?"
                if conv.stage == "HandleInput":
                    msg.form_fill(recipient=text)
                    conv.stage = CONFIRM
                    return "1. Sign and send"
                if conv.stage == CONFIRM and text == "1":
                    form = conv.form
                    assert form is not None
                    offer = msg.effect(
                        "create_credex", lambda: credex.create(dict(form.values)), key=form.id
                    )
                    msg.form_complete()
                    conv.stage = DEFAULT_STAGE
                    return f"Sent {offer['credexID']}"
            except Exception as error:  # as the live bot's components do
                return f"error: {type(error).__name__}"
            return "menu"

    return on_message


def _to_confirm(handle: Callable[[str, str, str], str], phone: str, prefix: str = "m") -> None:
    assert handle(phone, f"wamid.{prefix}1", "offer") == "How much?"
    assert handle(phone, f"wamid.{prefix}2", "USD 25") == "To whom?"
    assert handle(phone, f"wamid.{prefix}3", "bob_shop") == "1. Sign and send"


def _form_id(state: StateService, phone: str) -> str:
    form = state.start(phone).form
    assert form is not None
    return form.id


def test_a_later_message_meets_the_effect_in_doubt_instead_of_paying_again(
    state: StateService, phone: str
) -> None:
    credex = Credex()
    handle = bot(state, credex)
    _to_confirm(handle, phone)
    credex.fail_with = TimeoutError("Credex answered after the worker's 30 s")
    assert handle(phone, "wamid.tap1", "1") == "error: TimeoutError"  # committed at confirm
    assert state.start(phone).stage == CONFIRM
    credex.fail_with = None
    # The member taps again: a new message id, the same offer.
    assert handle(phone, "wamid.tap2", "1") == "error: EffectInDoubt"
    assert handle(phone, "wamid.tap3", "1") == "error: EffectInDoubt"
    assert len(credex.offers) == 1


def test_every_message_sees_the_effects_in_doubt_and_the_error_names_them(
    state: StateService, phone: str
) -> None:
    credex = Credex()
    handle = bot(state, credex)
    _to_confirm(handle, phone)
    key = _form_id(state, phone)
    credex.fail_with = TimeoutError("no answer")
    handle(phone, "wamid.tap1", "1")
    with state.message(phone, "wamid.later", "status") as msg:
        [doubt] = msg.in_doubt
        assert isinstance(doubt, InDoubt) and (doubt.name, doubt.key) == ("create_credex", key)
        with pytest.raises(EffectInDoubt) as raised:
            msg.effect("create_credex", lambda: credex.create({}), key=key)
        assert (raised.value.name, raised.value.key) == ("create_credex", key)
    with state.message(phone, "wamid.tap1") as duplicate:  # a redelivery sees them too
        assert duplicate.duplicate and [d.key for d in duplicate.in_doubt] == [key]
    assert len(credex.offers) == 1


def test_a_settled_effect_gives_every_later_message_its_result(
    state: StateService, phone: str
) -> None:
    credex = Credex()
    handle = bot(state, credex)
    _to_confirm(handle, phone)
    key = _form_id(state, phone)
    credex.fail_with = TimeoutError("no answer")
    handle(phone, "wamid.tap1", "1")
    credex.fail_with = None
    with state.message(phone, "wamid.check", "status") as msg:
        # The bot found the offer on the member's dashboard (pendingOutData).
        assert msg.settle("create_credex", {"credexID": "c-1"}, key=key) == {"credexID": "c-1"}
        assert msg.in_doubt == ()
    with state.message(phone, "wamid.after", "status") as msg:
        assert msg.in_doubt == ()
    assert handle(phone, "wamid.tap2", "1") == "Sent c-1"
    assert len(credex.offers) == 1


def test_a_completed_effect_is_replayed_when_its_message_stored_nothing(
    state: StateService, phone: str
) -> None:
    """Credex created the offer, then the handler failed before its block ended (the reply
    could not be sent): nothing of the message was stored and the flow is still at confirm.
    Its redelivery, and any later tap, get the recorded offer."""
    credex = Credex()
    _to_confirm(bot(state, credex), phone)
    key = _form_id(state, phone)
    with pytest.raises(ConnectionError), state.message(phone, "wamid.tap1", "1") as msg:
        msg.effect("create_credex", lambda: credex.create({}), key=key)
        raise ConnectionError("WhatsApp's API did not answer")
    handle = bot(state, credex)
    assert handle(phone, "wamid.tap1", "1") == "Sent c-1"  # the redelivery
    assert len(credex.offers) == 1


def test_a_new_offer_is_a_new_intent(state: StateService, phone: str) -> None:
    credex = Credex()
    handle = bot(state, credex)
    _to_confirm(handle, phone, "a")
    assert handle(phone, "wamid.a4", "1") == "Sent c-1"
    _to_confirm(handle, phone, "b")
    assert handle(phone, "wamid.b4", "1") == "Sent c-2"
    assert len(credex.offers) == 2


def test_settling_a_recorded_effect_keeps_the_recorded_result(
    state: StateService, phone: str
) -> None:
    with state.message(phone, "wamid.pay") as msg:
        assert msg.effect("create_credex", lambda: {"credexID": "REAL"}) == {"credexID": "REAL"}
    with state.message(phone, "wamid.pay") as again:  # a duplicate delivery settles it
        assert again.duplicate
        assert again.settle("create_credex", {"credexID": "WRONG"}, key="wamid.pay") == {
            "credexID": "REAL"
        }
    with state.message(phone, "wamid.later") as msg:
        assert msg.effect("create_credex", lambda: {"credexID": "NEW"}, key="wamid.pay") == {
            "credexID": "REAL"
        }


def test_an_effect_in_doubt_stays_in_doubt_past_dedupe_ttl_until_settled(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    with state.message(phone, "wamid.1") as msg, pytest.raises(TimeoutError):
        msg.effect("create_credex", _times_out, key="offer-1")
    clock.advance(days=3)  # the conversation itself has long expired
    with state.message(phone, "wamid.2") as msg:
        assert [d.key for d in msg.in_doubt] == ["offer-1"]
        with pytest.raises(EffectInDoubt):
            msg.effect("create_credex", lambda: {"credexID": "again"}, key="offer-1")
        msg.settle("create_credex", {"credexID": "c-1"}, key="offer-1")
    with state.message(phone, "wamid.3") as msg:
        assert msg.in_doubt == ()


def test_a_result_that_is_not_json_leaves_the_effect_in_doubt(
    state: StateService, phone: str
) -> None:
    with state.message(phone, "wamid.1") as msg:
        with pytest.raises(InvalidInput, match="stays in doubt"):
            msg.effect("create_credex", lambda: {"at": {1, 2}}, key="offer-1")
        assert [d.key for d in msg.in_doubt] == ["offer-1"]
    with state.message(phone, "wamid.2") as msg, pytest.raises(EffectInDoubt):
        msg.effect("create_credex", lambda: {"credexID": "again"}, key="offer-1")


def _times_out() -> None:
    raise TimeoutError("Credex did not answer")
