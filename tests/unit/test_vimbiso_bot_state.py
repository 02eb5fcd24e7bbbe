"""BotState's own rules: what the bot's StateManager calls do to one message's state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from fakes import PHONE, T0, FakeClock
from vimbiso_bot_double import MEMBER, account, jwt

from vimbiso_state.domain.conversation import DEFAULT_STAGE
from vimbiso_state.integrations.vimbiso_bot import BotState
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
