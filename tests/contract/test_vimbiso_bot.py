"""The VimbisoPay bot's message sequence through BotState, on every backend.

The webhook view and the createCredex component are the ones docs/adopting.md gives (run as
written); the flow is tests/vimbiso_bot_double.py, a miniature of the bot's own components.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock
from vimbiso_bot_double import (
    AMOUNT_PROMPT,
    HANDLE_PROMPT,
    MEMBER,
    FakeCredex,
    button,
    chosen,
    payload,
    processor_of,
    text,
)

from vimbiso_state.services.config import ENVIRONMENT
from vimbiso_state.services.state_service import StateService

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adopting.md"


def guide_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 4, "docs/adopting.md lost its examples"
    return blocks


class Bot:
    """The guide's webhook view, wired to the miniature bot and a fake Credex."""

    def __init__(self, scope: dict[str, Any], credex: FakeCredex) -> None:
        self.scope = scope
        self.credex = credex
        self.create: Callable[..., Any] = scope["create_credex_offer"]

    def send(self, wa_id: str, message_id: str, message: dict[str, Any]) -> list[str]:
        view = self.scope["on_whatsapp_message"]
        replies: list[str] = view(
            payload(wa_id, message_id, message), processor_of(self.credex, self.create)
        )
        return replies


@pytest.fixture
def bot(state: StateService, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Bot:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    scope: dict[str, Any] = {}
    for block in guide_blocks():
        exec(compile(block, str(GUIDE), "exec"), scope)
    scope["state"] = state  # the guide's service of the process, on this test's backend
    return Bot(scope, FakeCredex(clock.now))


def _flow(state: StateService, phone: str) -> dict[str, Any]:
    flow: dict[str, Any] = state.start(phone).context["component_data"]
    return flow


def _to_confirmation(bot: Bot, wa_id: str) -> None:
    bot.send(wa_id, "wamid.1", text("hi"))
    bot.send(wa_id, "wamid.2", chosen("offer_secured"))
    bot.send(wa_id, "wamid.4", text("USD 25"))
    bot.send(wa_id, "wamid.6", text("bob_store"))


def test_login_dashboard_and_a_secured_offer_through_the_adapter(
    bot: Bot, state: StateService, phone: str
) -> None:
    wa_id = phone.lstrip("+")
    welcome, board = bot.send(wa_id, "wamid.1", text("hi"))
    assert welcome.startswith("Welcome to VimbisoPay")
    assert board.splitlines() == [
        "Tendai Moyo",
        "tendai",
        "150.00 USD",
        "Daily Open Tier Limit 20.00 USD",  # memberTier 1 < 3: the tier came back a number
    ]
    conv = state.start(phone)
    assert conv.profile is not None and conv.profile.member.data == MEMBER
    assert conv.current_account is not None and conv.current_account.account_id == "acc-1"
    assert (conv.option, conv.stage) == ("account", "AccountDashboard")
    assert state.token(phone) == bot.credex.token

    assert bot.send(wa_id, "wamid.2", chosen("offer_secured")) == [AMOUNT_PROMPT]
    assert bot.send(wa_id, "wamid.3", text("lots")) == ["Invalid amount format"]
    assert state.start(phone).stage == "AmountInput"  # asked again
    assert bot.send(wa_id, "wamid.4", text("USD 25")) == [HANDLE_PROMPT]
    assert _flow(state, phone)["data"] == {"amount": "25.0", "denom": "USD"}
    assert bot.send(wa_id, "wamid.5", text("nobody_here")) == [
        "Oops, that accountHandle doesn't exist. Please try again.",
        HANDLE_PROMPT,
    ]
    assert state.start(phone).stage == "HandleInput"  # asked again
    assert bot.send(wa_id, "wamid.6", text("bob_store")) == [
        "Offer 25.00 USD to Bob Store (bob_store)?"
    ]

    done, board = bot.send(wa_id, "wamid.7", button("confirm"))
    assert done == "Secured credex offered"
    assert "125.00 USD" in board and "1 offer(s) pending" in board
    [(sent, key)] = bot.credex.created
    assert sent == {
        "issuerAccountID": "acc-1",
        "receiverAccountID": "acc-bob",
        "Denomination": "USD",
        "InitialAmount": "25.0",
    }
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    # WhatsApp delivers the confirmation again: nothing runs, Credex is not called again.
    assert bot.send(wa_id, "wamid.7", button("confirm")) == []
    assert len(bot.credex.created) == 1
    conv = state.start(phone)
    assert conv.stage == "AccountDashboard"
    assert conv.profile is not None
    assert conv.profile.accounts[0].data["balanceData"] == {
        "securedNetBalancesByDenom": ["125.00 USD"]
    }


def test_a_confirm_redelivered_after_a_crash_creates_one_offer(
    bot: Bot, state: StateService, phone: str
) -> None:
    wa_id = phone.lstrip("+")
    _to_confirmation(bot, wa_id)
    created_by_the_guide = bot.create
    crash = [ConnectionError("the worker died after Credex answered")]

    def create_then_crash(bot_state: Any, credex: FakeCredex) -> Any:
        answer = created_by_the_guide(bot_state, credex)
        if crash:
            raise crash.pop()
        return answer

    bot.create = create_then_crash
    with pytest.raises(ConnectionError):
        bot.send(wa_id, "wamid.7", button("confirm"))
    assert state.start(phone).stage == "ConfirmOfferSecured"  # nothing of it was stored
    done, _ = bot.send(wa_id, "wamid.7", button("confirm"))  # WhatsApp's retry
    assert done == "Secured credex offered"
    assert len(bot.credex.created) == 1  # the recorded answer, not a second offer


def test_a_greeting_logs_in_again_within_one_message(
    bot: Bot, state: StateService, phone: str
) -> None:
    wa_id = phone.lstrip("+")
    _to_confirmation(bot, wa_id)
    first_token = bot.credex.token
    bot.send(wa_id, "wamid.8", text("mhoro"))
    assert bot.credex.logins == 2
    conv = state.start(phone)
    assert (conv.option, conv.stage) == ("account", "AccountDashboard")
    assert conv.current_account is not None
    assert _flow(state, phone)["data"] == {}  # the offer in progress was forgotten
    assert state.token(phone) == bot.credex.token != first_token


def test_the_guides_forget_member_keeps_the_mock_testing_flag(
    bot: Bot, state: StateService, phone: str
) -> None:
    bot.send(phone.lstrip("+"), "wamid.1", text("hi"))
    state.update(phone, lambda c: c.context.update(mock_testing=True))
    bot.scope["forget_member"](phone)
    conv = state.start(phone)
    assert conv.profile is None and state.token(phone) is None
    assert conv.context == {"mock_testing": True}
