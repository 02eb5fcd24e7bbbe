"""The VimbisoPay bot on the library, as docs/adopting.md changes it, on every backend.

The bot is tests/vimbiso_bot_double.py (its view, wrapper, messaging, API client and offer
flow, installed under the bot's own module names); the guide's blocks are pasted into it and
its diffs applied (tests/adopting_guide.py). Members tap list rows and buttons, as on
WhatsApp; what they are sent is what the Graph API receives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from adopting_guide import GUIDE, VIEWS, blocks, bot_on_the_library
from fakes import FakeClock
from vimbiso_bot_double import (
    AMOUNT_PROMPT,
    GREETING,
    HANDLE_PROMPT,
    MEMBER,
    NO_SUCH_HANDLE,
    OFFERED,
    WORKING,
    BotApp,
    FakeCredex,
    Request,
    body_of,
    button,
    buttons_of,
    chosen,
    rows_of,
    status_update,
    text,
)

from vimbiso_state.integrations.vimbiso_bot import JWT_SHAPED, BotState
from vimbiso_state.services.config import ENVIRONMENT
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

CHECKING = "⏳ Checking with Credex what became of your offer of 25.00 USD to Bob Store"
NOT_YET = "Credex does not show it yet. Send me any message in a minute to hear."
WAS_SENT = "✅ It was sent: it is among your pending offers."


@pytest.fixture
def bot(
    state: StateService, container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BotApp]:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    with bot_on_the_library(state, container, FakeCredex(clock.now)) as app:
        yield app


@pytest.fixture
def sync_worker(
    container: Container, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BotApp]:
    """The bot in one of gunicorn's sync workers (the blocking service), which its timeout
    stops with SystemExit raised inside the request."""
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    with bot_on_the_library(container.state_service(), container, FakeCredex(clock.now)) as app:
        yield app


@pytest.fixture
def wa_id(phone: str) -> str:
    return phone.lstrip("+")


def _sent(bot: BotApp, wa_id: str, since: int) -> list[dict[str, Any]]:
    return bot.sent_to(wa_id)[since:]


def _say(bot: BotApp, wa_id: str, message_id: str, message: dict[str, Any]) -> list[str]:
    """One webhook; the bodies of what the bot sent for it."""
    before = len(bot.sent_to(wa_id))
    assert bot.deliver(wa_id, message_id, message).status == 200
    return [body_of(m) for m in _sent(bot, wa_id, before)]


def _to_confirmation(bot: BotApp, wa_id: str) -> None:
    _say(bot, wa_id, "wamid.1", text("hi"))
    _say(bot, wa_id, "wamid.2", chosen("offer_secured"))
    _say(bot, wa_id, "wamid.4", text("USD 25"))
    assert _say(bot, wa_id, "wamid.6", text("bob_store"))[-1].startswith("*💰 25.00 USD*")


def test_the_offer_flow_with_its_list_and_buttons(
    bot: BotApp, state: StateService, phone: str, wa_id: str
) -> None:
    assert bot.deliver(wa_id, "wamid.1", text("hi")).status == 200
    greeting, board = bot.sent_to(wa_id)
    assert body_of(greeting) == GREETING
    assert board["type"] == "interactive" and board["interactive"]["type"] == "list"
    assert board["interactive"]["action"]["button"] == "Actions 🪄"
    assert rows_of(board) == ["offer_secured"]
    assert "⏳  20.00 USD" in body_of(board)  # memberTier 1 < 3: the tier came back a number
    conv = state.start(phone)
    assert conv.profile is not None and conv.profile.member.data == MEMBER
    assert (conv.option, conv.stage) == ("account", "AccountDashboard")
    assert state.token(phone) == bot.credex.token

    assert _say(bot, wa_id, "wamid.2", chosen("offer_secured", "💸 Offer Secured Credex 💸")) == [
        AMOUNT_PROMPT
    ]
    assert _say(bot, wa_id, "wamid.3", text("lots"))[-1] == AMOUNT_PROMPT  # asked again
    assert _say(bot, wa_id, "wamid.4", text("USD 25")) == [HANDLE_PROMPT]
    assert _say(bot, wa_id, "wamid.5", text("nobody_here")) == [NO_SUCH_HANDLE, HANDLE_PROMPT]
    before = len(bot.sent_to(wa_id))
    bot.deliver(wa_id, "wamid.6", text("bob_store"))
    [confirm] = _sent(bot, wa_id, before)
    assert confirm["interactive"]["type"] == "button"
    assert buttons_of(confirm) == ["confirm", "cancel"]
    assert "Bob Store" in body_of(confirm)

    assert _say(bot, wa_id, "wamid.7", button("confirm", "📝 Sign and Send 💸"))[:2] == [
        WORKING,
        OFFERED,
    ]
    [offer] = bot.credex.offers.all()
    assert offer["payload"]["InitialAmount"] == "25.0"
    assert offer["payload"]["receiverAccountID"] == "acc-bob"
    board = bot.sent_to(wa_id)[-1]
    assert rows_of(board) == ["offer_secured", "cancel_offer"]  # one offer pending
    assert bot.deliver(wa_id, "wamid.7", button("confirm")).status == 200  # redelivered
    assert len(bot.credex.offers.all()) == 1
    conv = state.start(phone)
    assert (conv.option, conv.stage) == ("account", "AccountDashboard")
    assert conv.profile is not None
    assert conv.profile.accounts[0].data["pendingOutData"][0]["counterpartyAccountName"] == (
        "Bob Store"
    )


def _conversation(app: BotApp, wa_id: str) -> list[dict[str, Any]]:
    for n, message in enumerate(
        [
            text("hi"),
            chosen("offer_secured"),
            text("25 usd"),
            text("nobody_here"),
            text("bob_store"),
            button("confirm"),
        ]
    ):
        assert app.deliver(wa_id, f"wamid.{n}", message).status == 200
    return app.sent_to(wa_id)


def test_on_the_library_the_bot_says_what_it_says_on_its_own_store(
    container: Container, clock: FakeClock, wa_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    with BotApp(FakeCredex(clock.now)).installed() as own_store:
        before = _conversation(own_store, wa_id)
        assert len(own_store.credex.offers.all()) == 1
    state = container.state_service()
    with bot_on_the_library(state, container, FakeCredex(clock.now)) as on_library:
        after = _conversation(on_library, wa_id)
    assert after == before  # the same payloads to WhatsApp: texts, the list, the buttons
    assert [m["type"] for m in after].count("interactive") == 3


def test_a_status_update_touches_no_state(bot: BotApp, state: StateService, wa_id: str) -> None:
    assert bot.view().post(Request(status_update(wa_id))).status == 200
    assert state.start("+" + wa_id).context == {}


def stored_bytes(container: Container, backend: str, phone: str) -> bytes:
    """Every byte the store holds for the member: each key's value on Redis, every value of
    the memory store's objects (raw, as stored) in memory."""
    if backend == "memory":
        found: list[bytes] = []
        _collect(container.memory_conversations(), found, {})
        _collect(container.memory_tokens(), found, {})
        return b"\n".join(found)
    client = container.redis_client()
    parts: list[bytes] = []
    for key in client.scan_iter(match=f"*{{{phone.lstrip('+')}}}*"):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            parts.append(client.get(key) or b"")
        elif kind == "hash":
            parts += [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "zset":
            parts += client.zrange(key, 0, -1)
        elif kind == "list":
            parts += client.lrange(key, 0, -1)
    assert parts, "nothing stored for the member"
    return b"\n".join(parts)


def _collect(value: Any, found: list[bytes], seen: dict[int, Any]) -> None:
    """Every bytes and str reachable from ``value`` (``seen`` keeps what it visited alive,
    so that no id is reused while the walk runs)."""
    if isinstance(value, bytes | bytearray):
        found.append(bytes(value))
        return
    if isinstance(value, str):
        found.append(value.encode())
        return
    if id(value) in seen or isinstance(value, int | float | bool | type(None)):
        return
    seen[id(value)] = value
    if isinstance(value, dict):
        items: list[Any] = [item for pair in value.items() for item in pair]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        items = list(getattr(value, "__dict__", {}).values())
        for klass in type(value).__mro__:
            for slot in getattr(klass, "__slots__", ()):
                items.append(getattr(value, slot, None))
    for item in items:
        _collect(item, found, seen)


def test_the_jwt_is_never_stored_in_the_clear(
    bot: BotApp, container: Container, backend: str, phone: str, wa_id: str
) -> None:
    _say(bot, wa_id, "wamid.0", text("hi"))  # the login: auth.token and action.details.token
    first = bot.credex.token
    assert JWT_SHAPED.fullmatch(first)
    with container.state_service().message(phone, "wamid.read") as msg:
        action = BotState(msg).get_state_value("action")
        assert action["details"]["token"] == first  # given back as the bot wrote it
    _to_confirmation(bot, wa_id)  # a second login, then other Credex answers
    _say(bot, wa_id, "wamid.9", text("mhoro"))  # and a third
    assert len(bot.credex.tokens) == 3
    stored = stored_bytes(container, backend, phone)
    for token in bot.credex.tokens:
        assert token.encode() not in stored
    assert not JWT_SHAPED.search(stored.decode("utf-8", "replace"))
    assert state_token(container, phone) == bot.credex.token  # sealed, and the newest


def state_token(container: Container, phone: str) -> str | None:
    return container.state_service().token(phone)


def test_two_deliveries_of_the_confirm_at_once_make_one_offer(bot: BotApp, wa_id: str) -> None:
    _to_confirmation(bot, wa_id)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(bot.deliver(wa_id, "wamid.7", button("confirm")).status)

    workers = [threading.Thread(target=deliver) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert statuses == [200, 200]
    assert len(bot.credex.offers.all()) == 1
    assert bot.bodies(wa_id).count(OFFERED) == 1


def test_a_second_tap_of_the_confirm_makes_no_second_offer(bot: BotApp, wa_id: str) -> None:
    _to_confirmation(bot, wa_id)
    _say(bot, wa_id, "wamid.7", button("confirm"))
    again = _say(bot, wa_id, "wamid.8", button("confirm"))  # the old button, tapped again
    assert again[0] == GREETING  # the dashboard does not take a button: the bot starts over
    assert len(bot.credex.offers.all()) == 1


class _Aborted:
    """gunicorn's sync worker past its timeout: SIGABRT, whose handler calls sys.exit(1)
    inside the request. Credex is still working on the offer, and makes it later."""

    def __init__(self, credex: FakeCredex) -> None:
        self.credex = credex
        self.armed = True

    def __call__(self, moment: str) -> None:
        if moment == "before" and self.armed:
            self.armed = False
            raise SystemExit(1)


def _time_out_the_confirm(bot: BotApp, wa_id: str) -> None:
    _to_confirmation(bot, wa_id)
    bot.credex.on_create = _Aborted(bot.credex)
    with pytest.raises(SystemExit):
        bot.deliver(wa_id, "wamid.7", button("confirm"))
    assert bot.credex.offers.all() == []


def _credex_makes_it_late(bot: BotApp) -> None:
    bot.credex.record(
        {
            "receiverAccountID": "acc-bob",
            "issuerAccountID": "acc-1",
            "Denomination": "USD",
            "InitialAmount": "25.0",
        }
    )


def test_a_credex_call_past_the_worker_timeout_is_checked_then_told(
    sync_worker: BotApp, container: Container, phone: str, wa_id: str
) -> None:
    bot, state = sync_worker, container.state_service()
    _time_out_the_confirm(bot, wa_id)
    assert state.start(phone).stage == "ConfirmOfferSecured"  # nothing of it was stored
    # WhatsApp delivers the message again: the offer is in doubt, Credex shows nothing yet.
    assert _say(bot, wa_id, "wamid.7", button("confirm")) == [CHECKING, NOT_YET]
    _credex_makes_it_late(bot)
    told = _say(bot, wa_id, "wamid.8", text("ok?"))
    assert told[:2] == [CHECKING, WAS_SENT]
    board = bot.sent_to(wa_id)[-1]
    assert rows_of(board) == ["offer_secured", "cancel_offer"]
    assert len(bot.credex.offers.all()) == 1
    # Settled: later messages run the flow as usual, and nothing is paid again.
    assert _say(bot, wa_id, "wamid.9", button("confirm"))[0] == GREETING
    assert len(bot.credex.offers.all()) == 1
    with state.message(phone, "wamid.10") as msg:
        assert msg.in_doubt == ()


def test_an_offer_credex_never_made_is_told_after_the_wait(
    sync_worker: BotApp, clock: FakeClock, wa_id: str
) -> None:
    bot = sync_worker
    _time_out_the_confirm(bot, wa_id)
    assert _say(bot, wa_id, "wamid.8", text("hi")) == [CHECKING, NOT_YET]  # not even a greeting
    clock.advance(minutes=2)
    told = _say(bot, wa_id, "wamid.9", text("hello?"))
    assert told[:2] == [CHECKING, "❌ It was not sent."]
    assert rows_of(bot.sent_to(wa_id)[-1]) == ["offer_secured"]
    # The member offers again: a new offer, made once.
    _say(bot, wa_id, "wamid.10", chosen("offer_secured"))
    _say(bot, wa_id, "wamid.11", text("25"))
    _say(bot, wa_id, "wamid.12", text("bob_store"))
    assert OFFERED in _say(bot, wa_id, "wamid.13", button("confirm"))
    assert len(bot.credex.offers.all()) == 1


def test_without_the_check_a_later_tap_meets_the_doubt_and_pays_nothing(
    sync_worker: BotApp, container: Container, phone: str, wa_id: str
) -> None:
    bot, state = sync_worker, container.state_service()
    # The component alone: a bot that forgot the view's check still never pays twice.
    bot.modules[VIEWS].settle_offers_in_doubt = lambda state_manager, now: False
    _time_out_the_confirm(bot, wa_id)
    _credex_makes_it_late(bot)
    assert _say(bot, wa_id, "wamid.7", button("confirm")) == [WORKING]  # then EffectInDoubt
    assert len(bot.credex.offers.all()) == 1
    assert state.start(phone).stage == "CreateCredexApiCall"  # the bot caught it, as it does
    assert _say(bot, wa_id, "wamid.8", text("ok")) == []
    assert len(bot.credex.offers.all()) == 1


def test_the_guides_forget_member_keeps_the_mock_testing_flag(
    bot: BotApp, state: StateService, phone: str, wa_id: str
) -> None:
    bot.deliver(wa_id, "wamid.1", text("hi"))
    state.update(phone, lambda c: c.context.update(mock_testing=True))
    [forget] = [b for b in blocks("python") if "def forget_member" in b]
    bot.paste(VIEWS, forget, str(GUIDE))
    assert state.start(phone).context["mock_testing"] is True
    bot.modules[VIEWS].forget_member(phone)
    conv = state.start(phone)
    assert conv.profile is None and state.token(phone) is None
    assert conv.context == {"mock_testing": True}
