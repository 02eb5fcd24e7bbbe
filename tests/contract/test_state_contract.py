"""The public contract of StateService, identical on every backend."""

from __future__ import annotations

import pytest
from fakes import FakeClock

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Direction, Notice
from vimbiso_state.domain.offer import Denomination, OfferStatus
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import (
    FormIncomplete,
    FormValidationError,
    NoActiveForm,
    TokenError,
)
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
MEMBER = {"memberID": "m-1", "firstname": "Rudo", "lastname": "Dube"}
ACCOUNTS = [
    {"accountID": "a-1", "accountName": "Rudo Personal", "accountHandle": "rudo"},
    {"accountID": "a-2", "accountName": "Dube Farm", "accountHandle": "dube_farm"},
]


def test_first_contact_creates_state_at_the_menu(state: StateService, phone: str) -> None:
    conv = state.start(phone)
    assert conv.stage == DEFAULT_STAGE
    assert conv.option is None
    assert conv.menu == []
    assert conv.version > 0  # the first version of a conversation (see test_limits)
    assert conv.notices == [Notice.WELCOME]
    again = state.start(phone)
    assert again.version == conv.version
    assert again.notices == []


def test_phone_formats_address_the_same_conversation(state: StateService, phone: str) -> None:
    digits = phone.lstrip("+")
    state.start(phone)
    state.navigate(f"00{digits}", OFFER)
    assert state.start(f"+{digits[:3]} {digits[3:5]} {digits[5:]}").stage == OFFER


def test_back_returns_to_previous_menu(state: StateService, phone: str) -> None:
    state.start(phone)
    state.navigate(phone, OFFER)
    conv = state.navigate(phone, "handle_action_confirm")
    assert conv.menu == [DEFAULT_STAGE, OFFER]
    conv = state.back(phone)
    assert (conv.stage, conv.option) == (OFFER, OFFER)
    conv = state.back(phone)
    assert (conv.stage, conv.option) == (DEFAULT_STAGE, None)
    assert state.back(phone).stage == DEFAULT_STAGE


def test_update_is_versioned_and_returns_the_stored_state(state: StateService, phone: str) -> None:
    v1 = state.start(phone).version

    def outgoing(conv: object) -> None:
        conv.direction = "IN"  # type: ignore[attr-defined]

    conv = state.update(phone, outgoing)
    assert conv.version > v1
    assert state.start(phone).direction is Direction.IN


def test_a_change_that_raises_stores_nothing(state: StateService, phone: str) -> None:
    state.start(phone)
    before = state.start(phone)

    def broken(conv: object) -> None:
        conv.stage = "handle_half_done"  # type: ignore[attr-defined]
        raise RuntimeError("bot bug")

    with pytest.raises(RuntimeError, match="bot bug"):
        state.update(phone, broken)
    after = state.start(phone)
    assert (after.stage, after.version) == (before.stage, before.version)


def test_returned_objects_are_copies_not_storage(state: StateService, phone: str) -> None:
    conv = state.start(phone)
    conv.menu.append("handle_sneaky")
    conv.session.stage = "handle_sneaky"
    assert state.start(phone).stage == DEFAULT_STAGE
    assert state.start(phone).menu == []


def test_profile_is_kept_exactly_with_typed_accessors(state: StateService, phone: str) -> None:
    state.start(phone)
    for conv in (state.set_profile(phone, MEMBER, ACCOUNTS), state.start(phone)):
        assert conv.profile is not None
        assert conv.profile.member.data == MEMBER
        assert [a.data for a in conv.profile.accounts] == ACCOUNTS
        assert conv.profile.member.member_id == "m-1"
        assert conv.profile.member.name == "Rudo Dube"
        assert [a.handle for a in conv.profile.accounts] == ["rudo", "dube_farm"]
        # Two accounts: none is current until the member chooses (default_account "single").
        assert conv.current_account is None
    state.update(phone, lambda c: c.select_account("a-2"))
    conv = state.set_profile(phone, MEMBER, ACCOUNTS)
    assert conv.current_account is not None and conv.current_account.account_id == "a-2"


def test_form_keeps_partial_answers_and_rejects_bad_ones(state: StateService, phone: str) -> None:
    state.start(phone)
    state.form_start(phone, "offer", required=["amount", "recipient"])
    form = state.form_fill(phone, amount="100 USD")
    assert form.values == {"amount": "100", "denomination": "USD"}
    with pytest.raises(FormValidationError) as bad:
        state.form_fill(phone, recipient="bob smith!")
    assert "recipient" in bad.value.errors
    with pytest.raises(FormIncomplete) as incomplete:
        state.form_complete(phone)
    assert incomplete.value.missing == ["recipient"]
    state.form_fill(phone, recipient="bob_smith")
    assert state.form_complete(phone) == {
        "amount": "100",
        "denomination": "USD",
        "recipient": "bob_smith",
    }
    with pytest.raises(NoActiveForm):
        state.form_fill(phone, amount="5")


def test_a_field_named_phone_does_not_clash(state: StateService, phone: str) -> None:
    state.form_start(phone, "contact", required=["phone"])
    assert state.form_fill(phone, phone="0771234567").values == {"phone": "0771234567"}


def test_offer_is_kept_through_confirmation(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.navigate(phone, OFFER)
    state.form_start(phone, "offer", required=["amount", "recipient"])
    state.form_fill(phone, amount="XAU 2.5", recipient="gold_buyer")
    values = state.form_complete(phone)
    state.update(phone, lambda c: c.propose_offer(values, clock.now()))
    offer = state.start(phone).offer
    assert offer is not None
    assert (offer.amount, offer.denomination, offer.recipient) == (
        pytest.approx(2.5),
        Denomination.XAU,
        "gold_buyer",
    )
    assert offer.status is OfferStatus.AWAITING_CONFIRMATION
    confirmed = state.update(phone, lambda c: c.confirm_offer()).offer
    assert confirmed is not None
    assert confirmed.status is OfferStatus.CONFIRMED
    assert confirmed.signed_by == "m-1"


def test_offer_can_be_cancelled(state: StateService, phone: str, clock: FakeClock) -> None:
    state.start(phone)
    values = {"amount": "10", "denomination": "CAD", "recipient": "maple"}
    state.update(phone, lambda c: c.propose_offer(values, clock.now()))
    cancelled = state.update(phone, lambda c: c.cancel_offer()).offer
    assert cancelled is not None and cancelled.status is OfferStatus.CANCELLED


def test_session_expiry_returns_to_menu_and_keeps_critical_data(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.update(phone, lambda c: c.select_account("a-2"))
    state.save_token(phone, "jwt-abc")
    state.navigate(phone, OFFER)
    state.form_start(phone, "offer", required=["amount", "recipient"])
    state.form_fill(phone, amount="50")
    clock.advance(minutes=5, seconds=1)
    conv = state.start(phone)
    assert conv.notices == [Notice.SESSION_EXPIRED]
    assert (conv.stage, conv.option, conv.menu) == (DEFAULT_STAGE, None, [])
    assert conv.profile is not None and conv.profile.member.member_id == "m-1"
    assert conv.current_account is not None and conv.current_account.account_id == "a-2"
    assert conv.form is not None and conv.form.values["amount"] == "50"
    assert state.token(phone) == "jwt-abc"
    assert state.start(phone).notices == []


def test_activity_slides_the_session(state: StateService, phone: str, clock: FakeClock) -> None:
    state.start(phone)
    state.navigate(phone, OFFER)
    for _ in range(4):
        clock.advance(minutes=4)
        assert state.start(phone).stage == OFFER
    clock.advance(minutes=5, seconds=1)
    assert state.start(phone).stage == DEFAULT_STAGE


def test_form_expires_on_its_own_deadline(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    state.start(phone)
    state.form_start(phone, "offer", required=["amount"])
    clock.advance(minutes=4)
    state.start(phone)
    clock.advance(minutes=4)
    state.start(phone)
    clock.advance(minutes=2, seconds=1)
    conv = state.start(phone)
    assert conv.form is None
    assert Notice.FORM_EXPIRED in conv.notices
    with pytest.raises(NoActiveForm):
        state.form_fill(phone, amount="5")


def test_greeting_restarts_at_menu_keeping_critical_data(state: StateService, phone: str) -> None:
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.navigate(phone, OFFER)
    conv = state.start(phone, "Mhoro!")
    assert conv.stage == DEFAULT_STAGE
    assert conv.notices == [Notice.RESTARTED]
    assert conv.profile is not None
    assert state.start(phone, "100 USD").notices == []


def test_tokens_are_saved_read_and_revoked(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    assert state.token(phone) is None
    state.save_token(phone, "secret-jwt")
    assert state.token(phone) == "secret-jwt"
    assert state.revoke_token(phone) is True
    assert state.token(phone) is None
    assert state.revoke_token(phone) is False
    state.save_token(phone, "secret-jwt")
    clock.advance(minutes=30)
    assert state.token(phone) is None


def test_token_copied_to_another_user_is_rejected(
    container: Container, backend: str, state: StateService, phone: str
) -> None:
    from vimbiso_state.domain.phone import PhoneNumber

    other = PhoneNumber.parse(f"+{int(phone.lstrip('+')) + 500_000}")
    state.save_token(phone, "secret-jwt")
    sealed = container.tokens().get(PhoneNumber.parse(phone))
    assert sealed is not None and b"secret-jwt" not in sealed
    # Copied by someone with access to the store, not by the library.
    if backend == "memory":
        container.memory_tokens().put(other, sealed, container.timeouts().token)
    else:
        container.redis_client().set(f"token:{{{other.digits}}}", sealed, px=600_000)
    with pytest.raises(TokenError) as error:
        state.token(other.e164)
    assert "secret-jwt" not in str(error.value)


def test_reset_forgets_everything(state: StateService, phone: str) -> None:
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.form_start(phone, "offer", required=["amount"])
    state.save_token(phone, "jwt")
    state.reset(phone)
    assert state.token(phone) is None
    conv = state.start(phone)
    assert conv.profile is None and conv.form is None
    assert conv.notices == [Notice.WELCOME]


def test_handle_once_applies_a_message_once(state: StateService, phone: str) -> None:
    state.start(phone)
    first = state.handle_once(phone, "wamid.HBgM123==", lambda c: c.navigate(OFFER))
    assert first is not None and first.stage == OFFER
    again = state.handle_once(phone, "wamid.HBgM123==", lambda c: c.navigate("handle_twice"))
    assert again is None
    assert state.start(phone).menu == [DEFAULT_STAGE]


def test_a_failed_delivery_can_be_retried(state: StateService, phone: str) -> None:
    def fails(conv: object) -> None:
        raise ConnectionError("bot lost its upstream")

    with pytest.raises(ConnectionError):
        state.handle_once(phone, "wamid.retry", fails)
    assert state.handle_once(phone, "wamid.retry", lambda c: c.navigate(OFFER)) is not None
