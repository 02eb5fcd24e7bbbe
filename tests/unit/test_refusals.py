"""Bad input is refused once, here, not on every backend: what the rules decide before any
I/O runs against a store that fails the test if it is touched (the StateService and the
AsyncStateService alike); what a unit of work refuses once it holds the user runs on the
memory backend. The contract suite keeps what a store decides (tests/contract)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from dependency_injector import providers
from fakes import PHONE
from service_kinds import KINDS, LoopThread, service_of

from vimbiso_state.adapters.codec import MAX_DOCUMENT_BYTES
from vimbiso_state.domain.conversation import DEFAULT_STAGE, Conversation
from vimbiso_state.domain.form import MAX_FIELDS, MAX_VALUE_LENGTH
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import (
    CalledInsideOwnMessage,
    FormIncomplete,
    FormValidationError,
    InvalidInput,
    InvalidPhoneNumber,
    NoActiveForm,
    StateTooLarge,
)
from vimbiso_state.services.flows import MAX_MESSAGE_ID, MAX_TOKEN
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
MEMBER = {"memberID": "m-1", "firstname": "Tendai", "memberTier": 3}
ACCOUNT = {"accountID": "a-1", "balanceData": {"securedNetBalancesByDenom": ["150.00 USD"]}}


class Untouchable:
    """A repository that fails the test if it is used at all."""

    def __getattr__(self, name: str) -> Any:
        def used(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"storage was used ({name}) before the input was validated")

        return used


def _untouchable_services(container: Container, loop: LoopThread) -> Iterator[StateService]:
    """The container's StateService, then its AsyncStateService behind the blocking facade
    (tests/service_kinds.py), on stores that must not be used."""
    for name in ("conversations", "tokens", "async_conversations", "async_tokens"):
        getattr(container, name).override(providers.Object(Untouchable()))
    for kind in KINDS:
        with service_of(container, kind, loop) as service:
            yield service


def _ran(*args: Any) -> None:
    raise AssertionError("a refused call ran the bot's code")


# Every operation of both services, with a phone of the caller's choosing.
OPERATIONS: dict[str, Callable[[Any, Any], object]] = {
    "start": lambda s, p: s.start(p),
    "start_greeting": lambda s, p: s.start(p, "hi"),
    "restart": lambda s, p: s.restart(p),
    "navigate": lambda s, p: s.navigate(p, OFFER),
    "back": lambda s, p: s.back(p),
    "update": lambda s, p: s.update(p, _ran),
    "handle_once": lambda s, p: s.handle_once(p, "wamid.1", _ran),
    "set_profile": lambda s, p: s.set_profile(p, MEMBER, [ACCOUNT]),
    "reset": lambda s, p: s.reset(p),
    "reset_keeping": lambda s, p: s.reset(p, keep_context=["mock_testing"]),
    "form_start": lambda s, p: s.form_start(p, "offer", ["amount"]),
    "form_fill": lambda s, p: s.form_fill(p, amount="5"),
    "form_complete": lambda s, p: s.form_complete(p),
    "save_token": lambda s, p: s.save_token(p, "jwt"),
    "token": lambda s, p: s.token(p),
    "revoke_token": lambda s, p: s.revoke_token(p),
    "message": lambda s, p: s.message(p, "wamid.1"),
}
# Not E.164, or text that would change a key's meaning.
BAD_PHONES = ["", None, "abc", "0771", "+1 555*", "263*", "{263771234567}", "263{77}1234567"]
BAD_PHONES += ["2637712:34567", "user:263771234567"]


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_bad_phone_is_refused_before_any_io(
    container: Container, loop_thread: LoopThread, operation: str
) -> None:
    for service in _untouchable_services(container, loop_thread):
        for phone in BAD_PHONES:
            with pytest.raises(InvalidPhoneNumber):
                OPERATIONS[operation](service, phone)


# Each refusal: the call given a bad value, the bad values, and what the error says.
Refusal = tuple[Callable[[Any, Any], object], list[Any], str]
REFUSALS: dict[str, Refusal] = {
    # Menu options are identifiers, never the member's text.
    "option": (
        lambda s, v: s.navigate(PHONE, v),
        ["DROP *", "x:y", "{263771234567}", "", None, "x" * 65],
        "option must be an identifier",
    ),
    "handle_once-id": (
        lambda s, v: s.handle_once(PHONE, v, _ran),
        ["", None, 42, "w" * (MAX_MESSAGE_ID + 1), "wamid.\ud800"],
        "message_id",
    ),
    "message-id": (lambda s, v: s.message(PHONE, v), ["", None, 7, "x" * 257], "message_id"),
    "message-text": (lambda s, v: s.message(PHONE, "wamid.1", v), [5, b"hi"], "text"),
    # The message never shows the token itself.
    "token": (
        lambda s, v: s.save_token(PHONE, v),
        ["", None, 12345, "t" * (MAX_TOKEN + 1), "eyJ\udc00.x.y"],
        "token",
    ),
    "member": (
        lambda s, v: s.set_profile(PHONE, v, [ACCOUNT]),
        ["m-1", {"firstname": "no id"}, {**MEMBER, "x": math.inf}, {**MEMBER, "n": "T\ud800"}],
        "member",
    ),
    "accounts": (
        lambda s, v: s.set_profile(PHONE, MEMBER, v),
        [ACCOUNT, [7], [{**ACCOUNT, "t": (1,)}]],
        "accounts",
    ),
    "account-selection": (
        lambda s, v: s.set_profile(PHONE, MEMBER, [ACCOUNT], selection=v),
        ["best", 3],
        "account selection must be one of",
    ),
    "form-name": (
        lambda s, v: s.form_start(PHONE, v, ["amount"]),
        ["offer:*", "Offer", ""],
        "form name",
    ),
    "form-fields": (
        lambda s, v: s.form_start(PHONE, "offer", v),
        ["amount", None, 5, ["Amount!"], [], ["amount", "amount"]],
        "field",
    ),
    # A str is refused, not read as a list of one-letter names.
    "keep_context": (
        lambda s, v: s.reset(PHONE, keep_context=v),
        ["mock_testing", [1], ["mock_testing", None], {"mock_testing"}, None, b"mock_testing"],
        "keep_context is a list of context key names",
    ),
    "expirations-limit": (lambda s, v: s.expirations(limit=v), [0, 1001, 1.5, "10"], "limit"),
    "expirations-lease": (lambda s, v: s.expirations(lease=v), [0, 3601, "60"], "lease"),
    "effect-key": (
        lambda s, v: s.message(PHONE, "wamid.1").effect("pay", _ran, key=v),
        ["", "x" * 257, 7, "b\ud800"],
        "effect's key",
    ),
    "effect-name": (
        lambda s, v: s.message(PHONE, "wamid.1").effect(v, _ran),
        ["pay now!", "", 7],
        "effect name",
    ),
    "idempotency-key": (
        lambda s, v: s.message(PHONE, "wamid.1").idempotency_key("pay", key=v),
        ["", 7],
        "effect's key",
    ),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_bad_input_is_refused_before_any_io_and_never_echoed(
    container: Container, loop_thread: LoopThread, refusal: str
) -> None:
    call, values, says = REFUSALS[refusal]
    for service in _untouchable_services(container, loop_thread):
        for value in values:
            with pytest.raises(InvalidInput, match=says) as refused:
                call(service, value)
            shown = str(refused.value)
            assert "\ud800" not in shown and "\udc00" not in shown and "tttt" not in shown


def test_the_limits_themselves_are_accepted(state: StateService) -> None:
    state.save_token(PHONE, "t" * MAX_TOKEN)
    assert state.token(PHONE) == "t" * MAX_TOKEN
    assert state.handle_once(PHONE, "w" * MAX_MESSAGE_ID, lambda c: None) is not None


# Refused once the user is held: nothing of the unit of work is stored
class Colour(StrEnum):
    RED = "red"


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


NOT_JSON: list[tuple[object, str]] = [
    (float("nan"), "NaN"),
    (float("inf"), "NaN and infinity"),
    (float("-inf"), "NaN and infinity"),
    ({1, 2}, "set"),
    (frozenset({1}), "frozenset"),
    ((1, 2), "tuple"),
    ({1: "one"}, "int key"),
    (b"bytes", "bytes"),
    (datetime(2025, 1, 1), "datetime"),
    (Decimal("1.5"), "Decimal"),
    (object(), "object is not a JSON value"),
    ("caf\ud800", "lone surrogate"),
    ({"caf\udc00": 1}, "lone surrogate"),
    (_deep(2000), "nested deeper than 64"),
    (Colour.RED, "plain str"),
    (10**2000, "more than 1000 digits"),
]


def test_a_value_json_cannot_carry_is_refused_and_says_where(state: StateService) -> None:
    before = state.update(PHONE, lambda c: c.context.update(a=[0, 1, 2, "ok"]))
    for value, why in NOT_JSON:

        def store(conv: Conversation, value: object = value) -> None:
            conv.navigate(OFFER)  # a legitimate change in the same update: not stored either
            conv.context["a"][3] = value

        with pytest.raises(InvalidInput, match=why) as refused:
            state.update(PHONE, store)
        assert str(refused.value).startswith("context['a'][3]")
    after = state.start(PHONE)
    assert after.version == before.version
    assert after.context == {"a": [0, 1, 2, "ok"]} and after.stage == DEFAULT_STAGE


def test_a_profile_made_unstorable_inside_a_change_is_refused(state: StateService) -> None:
    state.set_profile(PHONE, MEMBER, [ACCOUNT])

    def spoil(conv: Conversation) -> None:
        assert conv.profile is not None
        conv.profile.accounts[0].data["balanceData"]["when"] = datetime(2025, 1, 1)

    with pytest.raises(InvalidInput, match=r"accounts\[0\]\['balanceData'\]\['when'\]"):
        state.update(PHONE, spoil)
    with pytest.raises(InvalidInput, match="no id"):
        state.update(PHONE, lambda c: c.critical.member.pop("memberID"))  # type: ignore[union-attr]
    conv = state.start(PHONE)
    assert conv.profile is not None and conv.profile.member.data == MEMBER
    assert conv.profile.accounts[0].data == ACCOUNT


CLEAR = rf"document is \d+ bytes, over the {MAX_DOCUMENT_BYTES}-byte limit .*nothing was stored"


def test_a_profile_over_the_size_limit_is_refused_and_the_old_one_kept(
    state: StateService,
) -> None:
    version = state.set_profile(PHONE, MEMBER, [ACCOUNT]).version
    member = {"memberID": "m-2", "bio": "z" * MAX_DOCUMENT_BYTES}
    with pytest.raises(StateTooLarge, match=CLEAR) as raised:
        state.set_profile(PHONE, member, [{"accountID": "a-2"}])
    assert "profile" in str(raised.value)
    after = state.start(PHONE)
    assert after.version == version
    assert after.profile is not None and after.profile.member.member_id == "m-1"


def test_a_form_over_the_size_limit_is_refused_and_its_earlier_answers_kept(
    state: StateService,
) -> None:
    # Each answer is within the per-field limits, but control characters are stored escaped
    # (\u0001 is six bytes), so the most fields with the longest answers overflow the document.
    fields = [f"f{i:02d}_" + "a" * 59 for i in range(MAX_FIELDS)]
    state.form_start(PHONE, "survey", required=fields)
    state.form_fill(PHONE, **{fields[0]: "first answer"})
    version = state.start(PHONE).version
    with pytest.raises(StateTooLarge, match=CLEAR) as raised:
        state.form_fill(PHONE, **{name: "\x01" * MAX_VALUE_LENGTH for name in fields})
    assert "form" in str(raised.value)
    after = state.start(PHONE)
    assert after.version == version
    assert after.form is not None and after.form.values == {fields[0]: "first answer"}


def test_a_form_answer_with_a_lone_surrogate_is_a_validation_error(state: StateService) -> None:
    state.form_start(PHONE, "offer", required=["note"])
    with pytest.raises(FormValidationError, match="lone surrogate"):
        state.form_fill(PHONE, note="hi \ud83d")
    form = state.start(PHONE).form
    assert form is not None and form.values == {}


def test_a_messages_form_calls_follow_the_one_call_rules(state: StateService) -> None:
    with state.message(PHONE, "wamid.r1") as msg:
        with pytest.raises(NoActiveForm):
            msg.form_fill(amount="5")
        with pytest.raises(NoActiveForm):
            msg.form_complete()
        with pytest.raises(InvalidInput, match="list of field names"):
            msg.form_start("offer", required="amount")  # type: ignore[arg-type]
        msg.form_start("offer", required=["amount", "recipient"])
        msg.form_fill(amount="7")
        with pytest.raises(FormIncomplete) as incomplete:
            msg.form_complete()
        assert incomplete.value.missing == ["recipient"]
        assert msg.conversation.form is not None  # an incomplete form stays open
    form = state.start(PHONE).form
    assert form is not None and form.values == {"amount": "7", "denomination": "USD"}


# Calling inside one's own message: refused at once, not after waiting for itself
def test_a_write_inside_the_users_own_message_is_refused_at_once_and_stores_nothing(
    state: StateService,
) -> None:
    state.start(PHONE)
    started = time.monotonic()
    with (
        pytest.raises(CalledInsideOwnMessage, match=r"msg\.conversation"),
        state.message(PHONE, "wamid.s"),
    ):
        state.update(PHONE, lambda c: c.context.update(inner=True))
    with (
        pytest.raises(CalledInsideOwnMessage, match="wait for itself"),
        state.message(PHONE, "wamid.o"),
        state.message(PHONE, "wamid.inner"),
    ):
        pytest.fail("a second block for the user opened inside the first")
    assert time.monotonic() - started < 2.0  # not two waits of lease_wait (5 s)
    assert state.start(PHONE).context == {}
    with state.message(PHONE, "wamid.s") as msg:  # after the block, its thread is let go
        msg.conversation.context["kept"] = True
    state.update(PHONE, lambda c: c.context.update(after=True))
    assert state.start(PHONE).context == {"kept": True, "after": True}


def test_asyncio_a_write_inside_the_tasks_own_message_is_refused(container: Container) -> None:
    async def bot() -> None:
        state = container.async_state_service()
        async with state.message(PHONE, "wamid.a") as msg:
            with pytest.raises(CalledInsideOwnMessage, match="wait for itself"):
                await state.update(PHONE, lambda c: c.context.update(inner=True))
            msg.conversation.context["a"] = True
        assert (await state.start(PHONE)).context == {"a": True}

    asyncio.run(bot())
