"""``reset(phone, keep_context=[...])``: forget the user, keep a few of the bot's own flow keys."""

from __future__ import annotations

from fakes import FakeClock

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Notice
from vimbiso_state.services.state_service import StateService

MEMBER = {"memberID": "m-1", "memberTier": 3, "firstname": "Rudo", "lastname": "Dube"}
ACCOUNTS = [{"accountID": "a-1", "accountName": "Rudo Personal", "accountHandle": "rudo"}]


def _in_progress(state: StateService, phone: str) -> int:
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.save_token(phone, "jwt-of-the-member")
    state.navigate(phone, "offer_secured")
    state.form_start(phone, "offer", required=["amount"])

    def flow_data(conv: object) -> None:
        conv.context.update(  # type: ignore[attr-defined]
            mock_testing=True,
            component_data={"path": "offer_secured", "data": {"amount": "25.0"}},
            nested={"list": [1, 2.5, None, "x"], "flag": False},
        )

    return state.update(phone, flow_data).version


def test_reset_keeps_the_named_context_keys_and_forgets_the_rest(
    state: StateService, phone: str
) -> None:
    before = _in_progress(state, phone)
    state.reset(phone, keep_context=["mock_testing", "nested", "never_set"])
    assert state.token(phone) is None
    conv = state.start(phone)
    assert conv.context == {
        "mock_testing": True,
        "nested": {"list": [1, 2.5, None, "x"], "flag": False},
    }
    assert conv.profile is None and conv.current_account is None and conv.form is None
    assert (conv.stage, conv.option, conv.menu) == (DEFAULT_STAGE, None, [])
    # A version never comes back: a writer that loaded before the reset cannot pass.
    assert conv.version > before


def test_reset_keeping_keys_that_are_not_there_is_a_plain_reset(
    state: StateService, phone: str
) -> None:
    _in_progress(state, phone)
    state.reset(phone, keep_context=["absent"])
    conv = state.start(phone)
    assert conv.notices == [Notice.WELCOME]  # nothing was written after the forgetting
    assert conv.context == {}


def test_reset_keeping_context_still_knows_handled_messages(
    state: StateService, phone: str
) -> None:
    _in_progress(state, phone)
    assert state.handle_once(phone, "wamid.hi", lambda c: None) is not None
    state.reset(phone, keep_context=("mock_testing",))
    assert state.handle_once(phone, "wamid.hi", lambda c: None) is None
    assert state.start(phone).context == {"mock_testing": True}


def test_an_expired_session_has_no_context_left_to_keep(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    _in_progress(state, phone)
    clock.advance(minutes=6)  # past the 5-minute session: its context expired with it
    state.reset(phone, keep_context=["mock_testing"])
    conv = state.start(phone)
    assert conv.context == {} and conv.notices == [Notice.WELCOME]
