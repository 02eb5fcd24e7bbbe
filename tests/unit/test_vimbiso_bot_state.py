"""BotState's own rules: what the bot's StateManager calls do to one message's state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from fakes import DIGITS, PHONE, T0, FakeClock, jwt
from vimbiso_bot_double import (
    MEMBER,
    MessagingService,
    StateManager,
    SystemException,
    WhatsAppMessagingService,
    WhatsAppStateManager,
    account,
)

from vimbiso_state import EffectInDoubt
from vimbiso_state.domain.conversation import DEFAULT_STAGE
from vimbiso_state.integrations.vimbiso_bot import JWT_SHAPED, RESERVED, BotState
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import InvalidInput
from vimbiso_state.services.state_service import StateService

WA_ID = "263771234567"
TOKEN = jwt({"sub": "mem-1", "exp": int((T0 + timedelta(hours=1)).timestamp())})
DASHBOARD = {"member": MEMBER, "accounts": [account("150.00 USD")]}


@pytest.fixture
def message(state: StateService) -> Iterator[object]:
    """Each call opens one message of PHONE (ids m1, m2...) and yields its BotState."""
    count = iter(range(1, 1000))

    @contextmanager
    def open_message() -> Iterator[BotState]:
        with state.message(PHONE, f"m{next(count)}") as msg:
            yield BotState(msg)

    return open_message


def _log_in(message: object) -> None:
    with message() as bot:  # type: ignore[operator]
        bot.update_state({"dashboard": DASHBOARD, "auth": {"token": TOKEN}})
        bot.update_state({"active_account_id": "acc-1"})


def test_login_is_kept_as_profile_account_and_token(message: object, state: StateService) -> None:
    _log_in(message)
    conv = state.start(PHONE)
    assert conv.profile is not None and conv.profile.member.data == MEMBER
    assert conv.current_account is not None and conv.current_account.account_id == "acc-1"
    assert state.token(PHONE) == TOKEN
    with message() as bot:  # type: ignore[operator]
        assert bot.get_state_value("dashboard") == DASHBOARD
        assert bot.get_state_value("auth") == {"token": TOKEN}
        assert bot.get_state_value("active_account_id") == "acc-1"
        assert bot.get_state_value("channel") == {"type": "whatsapp", "identifier": WA_ID}
        assert bot.is_authenticated() and bot.get_member_id() == "mem-1"
        assert bot.get_state_value("component_data") is None
        assert bot.get_state_value("never_set", "default") == "default"


def test_a_refused_update_changes_nothing(message: object, state: StateService) -> None:
    _log_in(message)
    moved = {"member": MEMBER, "accounts": [{**account("9.00 USD"), "accountID": "acc-9"}]}
    with message() as bot:  # type: ignore[operator]
        with pytest.raises(InvalidInput, match="not an account of the member"):
            bot.update_state({"active_account_id": "acc-1", "dashboard": moved, "x": 1})
        with pytest.raises(InvalidInput, match=r"\['action'\]\['amount'\]: NaN"):
            bot.update_state({"dashboard": moved, "action": {"amount": float("nan")}})
        assert bot.get_state_value("dashboard") == DASHBOARD
        assert bot.get_state_value("x") is None
    assert state.start(PHONE).current_account.account_id == "acc-1"  # type: ignore[union-attr]


def test_the_dashboard_first_then_the_account_it_brings(message: object) -> None:
    with message() as bot:  # type: ignore[operator]
        bot.update_state({"active_account_id": "acc-1", "dashboard": DASHBOARD})
        assert bot.get_state_value("active_account_id") == "acc-1"
        bot.update_state({"active_account_id": None})
        assert bot.get_state_value("active_account_id") is None


def test_reads_are_copies_and_extra_dashboard_fields_are_kept(message: object) -> None:
    with message() as bot:  # type: ignore[operator]
        bot.update_state({"dashboard": {**DASHBOARD, "notice": "upgrade"}})
        read = bot.get_state_value("dashboard")
        read["member"]["memberTier"] = 5
        assert bot.get_state_value("dashboard")["member"]["memberTier"] == 1
        assert bot.get_state_value("dashboard")["notice"] == "upgrade"


def test_an_auth_without_token_logs_the_member_out(message: object, state: StateService) -> None:
    _log_in(message)
    with message() as bot:  # type: ignore[operator]
        bot.update_state({"auth": {"return_url": "createCredex"}})  # the bot's 401 path
        assert bot.get_state_value("auth") == {"return_url": "createCredex"}
        assert not bot.is_authenticated()
    assert state.token(PHONE) is None


def test_the_token_expires_at_its_jwt_exp(
    message: object, state: StateService, clock: FakeClock
) -> None:
    # An exp before token_ttl (30 minutes): the exp, not the TTL, must end it.
    short = jwt({"sub": "mem-1", "exp": int((clock.now() + timedelta(minutes=10)).timestamp())})
    with message() as bot:  # type: ignore[operator]
        bot.update_state({"dashboard": DASHBOARD, "auth": {"token": short}})
    clock.advance(minutes=9, seconds=59)
    with message() as bot:  # type: ignore[operator]
        assert bot.is_authenticated()
    clock.advance(seconds=1)
    with message() as bot:  # type: ignore[operator]
        assert bot.get_state_value("dashboard") == DASHBOARD
        assert not bot.is_authenticated() and bot.get_member_id() is None
        assert bot.get_state_value("auth") is None


def test_flow_steps_are_mirrored_and_must_be_identifiers(
    message: object, state: StateService
) -> None:
    with message() as bot:  # type: ignore[operator]
        bot.transition_flow("offer_secured", "AmountInput")
        bot.update_component_data({"amount": "25.0"})
        bot.set_component_awaiting(True)
        with pytest.raises(InvalidInput, match=r"component_data\.path must be an identifier"):
            bot.update_flow_state("offer secured", "AmountInput")
        assert bot.get_path() == "offer_secured" and bot.is_awaiting_input()
    conv = state.start(PHONE)
    assert (conv.option, conv.stage) == ("offer_secured", "AmountInput")
    assert conv.context["component_data"]["data"] == {"amount": "25.0"}
    with message() as bot:  # type: ignore[operator]
        bot.clear_component_data()
        assert bot.get_state_value("component_data") is None
    conv = state.start(PHONE)
    assert (conv.option, conv.stage) == (None, DEFAULT_STAGE)


def test_a_transition_keeps_the_data_and_the_incoming_message(message: object) -> None:
    with message() as bot:  # type: ignore[operator]
        bot.update_flow_state("offer_secured", "AmountInput", data={"amount": "1.0"})
        bot.set_incoming_message({"type": "text", "text": {"body": "bob"}})
        bot.set_component_result("next")
        bot.transition_flow("offer_secured", "HandleInput")
        flow = bot.get_state_value("component_data")
        assert flow == {
            "path": "offer_secured",
            "component": "HandleInput",
            "data": {"amount": "1.0"},
            "component_result": None,
            "awaiting_input": False,
            "incoming_message": {"type": "text", "text": {"body": "bob"}},
        }


def test_clear_all_state_is_undone_when_the_message_fails(
    message: object, state: StateService
) -> None:
    _log_in(message)
    with pytest.raises(RuntimeError), message() as bot:  # type: ignore[operator]
        bot.initialize_channel("whatsapp", WA_ID, mock_testing=True)
        bot.clear_all_state()
        assert bot.get_state_value("dashboard") is None and not bot.is_authenticated()
        assert bot.is_mock_testing()  # kept, as the bot's clear_all_state keeps it
        raise RuntimeError("Credex login failed")
    assert state.token(PHONE) == TOKEN
    assert state.start(PHONE).profile is not None


def test_the_channel_is_this_messages_user(message: object) -> None:
    with message() as bot:  # type: ignore[operator]
        with pytest.raises(InvalidInput, match="initialize_channel"):
            bot.update_state({"channel": {"type": "whatsapp", "identifier": "263770000000"}})
        with pytest.raises(InvalidInput, match="not this message's phone number"):
            bot.initialize_channel("whatsapp", "263770000000")
        with pytest.raises(InvalidInput, match="not this message's phone number"):
            bot.initialize_channel("whatsapp", "channel:*")
        bot.initialize_channel("whatsapp", "+" + WA_ID)
        assert bot.get_channel_id() == WA_ID and bot.get_channel_type() == "whatsapp"
        with pytest.raises(InvalidInput, match="non-empty string"):
            bot.get_state_value("")


# The token: sealed, never in the stored conversation
LOGIN_ACTION = {
    "id": "mem-1",
    "type": "MEMBER_LOGIN",
    "actor": "mem-1",
    "details": {"memberID": "mem-1", "phone": WA_ID, "token": TOKEN},
}


def _stored(container: Container) -> bytes:
    user = container.memory_conversations()._users[DIGITS]
    parts = [user.critical, user.session, user.form]
    return b"\n".join(part.data for part in parts if part is not None)


def test_the_login_answer_is_given_back_whole_and_stored_without_its_token(
    message: Any, container: Container
) -> None:
    with message() as bot:
        bot.update_state({"action": LOGIN_ACTION, "auth": {"token": TOKEN}})
        assert bot.get_state_value("action") == LOGIN_ACTION
    assert TOKEN.encode() not in _stored(container)
    assert not JWT_SHAPED.search(_stored(container).decode())
    with message() as bot:
        assert bot.get_state_value("action") == LOGIN_ACTION  # from the sealed token
        assert bot.get_state_value(RESERVED) is None
        with pytest.raises(InvalidInput, match="BotState's own key"):
            bot.update_state({RESERVED: {}})
        bot.update_state({"action": {"type": "ACCOUNT_FOUND", "details": {"accountID": "a"}}})
        assert bot.get_state_value("action")["details"] == {"accountID": "a"}
    with message() as bot:
        bot.update_state({"action": LOGIN_ACTION})  # the member's token, known already
        assert bot.get_state_value("action") == LOGIN_ACTION
    assert TOKEN.encode() not in _stored(container)


def test_a_token_kept_under_a_key_of_its_own_is_sealed_too(
    message: Any, container: Container
) -> None:
    with message() as bot:
        bot.update_state({"auth": {"token": TOKEN}, "last_token": TOKEN})
    assert TOKEN.encode() not in _stored(container)
    with message() as bot:
        assert bot.get_state_value("last_token") == TOKEN
        bot.update_state({"auth": None})
        assert bot.get_state_value("last_token") is None  # no token, nothing to give back


def test_a_token_that_expired_is_not_given_back(message: Any, clock: FakeClock) -> None:
    short = jwt({"sub": "mem-1", "exp": int((clock.now() + timedelta(minutes=1)).timestamp())})
    login = {**LOGIN_ACTION, "details": {**LOGIN_ACTION["details"], "token": short}}
    with message() as bot:
        bot.update_state({"action": login, "auth": {"token": short}})
    clock.advance(minutes=2)  # past the JWT's exp, within the session
    with message() as bot:
        details = bot.get_state_value("action")["details"]
        assert details == {"memberID": "mem-1", "phone": WA_ID}


def test_any_other_jwt_is_refused(message: Any, state: StateService) -> None:
    other = jwt({"sub": "someone-else"})
    with message() as bot:
        with pytest.raises(InvalidInput, match=r"action\['details'\]\['token'\]: a JWT"):
            bot.update_state({"action": {**LOGIN_ACTION, "details": {"token": other}}})
        with pytest.raises(InvalidInput, match=r"component_data\['data'\]\['note'\]: a JWT"):
            bot.update_component_data({"note": f"Bearer {TOKEN}"})
        with pytest.raises(InvalidInput, match="a JWT"):
            bot.update_state({"action": {TOKEN: 1}, "auth": {"token": TOKEN}})
        with pytest.raises(InvalidInput, match="has no place here"):
            bot.update_state({"dashboard": {**DASHBOARD, "jwt": TOKEN}, "auth": {"token": TOKEN}})
        with pytest.raises(InvalidInput, match=r"action\['details'\]\['token'\]: a JWT"):
            bot.update_state({"action": LOGIN_ACTION, "auth": None})  # logged out: no token
        assert bot.get_state_value("action") is None and not bot.is_authenticated()
    assert state.token(PHONE) is None


def test_a_token_in_the_log_in_message_and_another_after_it(message: Any) -> None:
    newer = jwt({"sub": "mem-1", "login": 2, "exp": int((T0 + timedelta(hours=1)).timestamp())})
    with message() as bot:
        bot.update_state({"action": LOGIN_ACTION, "auth": {"token": TOKEN}})
        again = {**LOGIN_ACTION, "details": {**LOGIN_ACTION["details"], "token": newer}}
        bot.update_state({"action": again, "auth": {"token": newer}})
        assert bot.get_state_value("action") == again
        assert bot.get_state_value("auth") == {"token": newer}


# The intent: one id per flow path, the key of its effects
def test_the_intent_lasts_as_long_as_the_flow_path(message: Any) -> None:
    with message() as bot:
        assert bot.intent is None
        bot.transition_flow("account", "AccountDashboard")
        dashboard = bot.intent
        bot.transition_flow("offer_secured", "AmountInput")
        offer = bot.intent
        assert offer is not None and offer != dashboard
    with message() as bot:
        bot.transition_flow("offer_secured", "HandleInput")
        bot.set_component_awaiting(True)
        assert bot.intent == offer
    with message() as bot:
        bot.transition_flow("account", "AccountDashboard")
        bot.transition_flow("offer_secured", "AmountInput")
        assert bot.intent not in (offer, None)  # the next offer
        bot.clear_component_data()
        assert bot.intent is None


def test_a_redelivered_message_begins_the_same_intent(state: StateService) -> None:
    intents = []
    for _ in range(2):
        with pytest.raises(RuntimeError), state.message(PHONE, "wamid.same") as msg:
            bot = BotState(msg)
            bot.transition_flow("offer_secured", "AmountInput")
            intents.append(bot.intent)
            raise RuntimeError("the worker died: nothing stored")
    assert intents[0] == intents[1] is not None


def _offer_flow(bot: BotState) -> None:
    if bot.get_path() != "offer_secured":
        bot.transition_flow("offer_secured", "ConfirmOfferSecured")


def test_a_later_tap_of_the_same_offer_meets_the_doubt_and_pays_nothing(
    message: Any, state: StateService
) -> None:
    calls: list[str] = []

    def create() -> dict[str, str]:
        calls.append("createCredex")
        if len(calls) == 1:
            raise ConnectionError("the call timed out")
        return {"credexID": f"cx-{len(calls)}"}

    with message() as bot:  # the bot catches every exception, so this message commits
        _offer_flow(bot)
        offer = bot.intent
        with pytest.raises(ConnectionError):
            bot.effect("create_credex", create)
    with message() as bot:  # the member taps again
        _offer_flow(bot)
        [doubt] = bot.in_doubt
        assert (doubt.name, doubt.key) == ("create_credex", offer)
        with pytest.raises(EffectInDoubt) as raised:
            bot.effect("create_credex", create)
        assert raised.value.key == offer
        assert bot.settle("create_credex", {"credexID": "cx-seen"}) == {"credexID": "cx-seen"}
        assert bot.in_doubt == ()
    with message() as bot:
        _offer_flow(bot)
        assert bot.effect("create_credex", create) == {"credexID": "cx-seen"}
        bot.transition_flow("account", "AccountDashboard")
        bot.transition_flow("offer_secured", "ConfirmOfferSecured")  # the next offer
        assert bot.effect("create_credex", create) == {"credexID": "cx-2"}
        assert bot.idempotency_key("create_credex") == msg_key(bot, "create_credex")
    assert calls == ["createCredex", "createCredex"]


def msg_key(bot: BotState, name: str) -> str:
    return bot.idempotency_key(name, key=bot.intent)


# Where the bot's own code expects its StateManager
def test_a_botstate_that_is_the_bots_own_state_manager(state: StateService) -> None:
    on_library = BotState.as_subclass_of(StateManager)
    assert BotState.as_subclass_of(StateManager) is on_library
    with state.message(PHONE, "m1") as msg:
        core = on_library(msg)
        assert isinstance(core, StateManager) and isinstance(core, BotState)
        wrapped = WhatsAppStateManager(core)  # its isinstance check passes
        service = MessagingService(WhatsAppMessagingService(), wrapped)
        assert wrapped.messaging is service  # set after construction, through the wrapper
        assert BotState.behind(wrapped) is core
        wrapped.initialize_channel("whatsapp", WA_ID)
        wrapped.update_state({"dashboard": DASHBOARD, "auth": {"token": TOKEN}})
        assert wrapped.get_state_value("auth") == {"token": TOKEN}
        with pytest.raises(SystemException, match="Failed to update_state"):
            wrapped.update_state({"channel": {}})
    assert state.token(PHONE) == TOKEN
    with pytest.raises(SystemException, match=r"Invalid core state manager type: .* BotState"):
        WhatsAppStateManager(BotState(msg))
    with pytest.raises(InvalidInput, match="nor the bot's state wrapper"):
        BotState.behind(object())


def test_a_state_manager_with_calls_botstate_does_not_answer_is_refused() -> None:
    class Newer(StateManager):
        def get_ledger(self) -> None: ...

    with pytest.raises(
        InvalidInput, match="Newer has calls that BotState does not answer: get_ledger"
    ):
        BotState.as_subclass_of(Newer)
