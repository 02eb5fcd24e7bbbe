"""One WhatsApp message as a unit of work (``state.message``), on every backend, sync and
async: one user at a time, one commit with the message id, effects at most once."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from fakes import FakeClock

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Notice
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import (
    EffectInDoubt,
    InvalidInput,
    LeaseLost,
    StateError,
    UserBusy,
)
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"


def test_a_message_commits_every_change_and_its_id_once(state: StateService, phone: str) -> None:
    before = state.start(phone)
    with state.message(phone, "wamid.1", "1") as msg:
        assert not msg.duplicate
        conv = msg.conversation
        conv.navigate(OFFER)
        conv.context["amount"] = "25"
        conv.navigate("handle_action_confirm")
        assert state.start(phone).stage == DEFAULT_STAGE  # nothing stored before the commit
    after = state.start(phone)
    assert (after.stage, after.menu, after.context) == (
        "handle_action_confirm",
        [DEFAULT_STAGE, OFFER],
        {"amount": "25"},
    )
    assert after.version > before.version  # one commit for all the changes

    with state.message(phone, "wamid.1", "1") as again:  # WhatsApp delivers it again
        assert again.duplicate
        with pytest.raises(InvalidInput, match="duplicate"):
            _ = again.conversation
    assert state.start(phone).version == after.version


def test_an_exception_stores_nothing_frees_the_user_and_leaves_the_id_unhandled(
    state: StateService, phone: str
) -> None:
    state.start(phone)
    with pytest.raises(LookupError), state.message(phone, "wamid.2", "1") as msg:
        msg.conversation.navigate(OFFER)
        msg.save_token("jwt-never-stored")
        raise LookupError("the bot's own bug")
    assert state.start(phone).stage == DEFAULT_STAGE
    assert state.token(phone) is None
    started = time.monotonic()
    with state.message(phone, "wamid.2", "1") as retry:  # WhatsApp's retry runs afresh
        assert not retry.duplicate
        retry.conversation.navigate(OFFER)
    assert time.monotonic() - started < 1  # the user was free: nothing waited for a lease
    assert state.start(phone).stage == OFFER


def test_a_greeting_restarts_at_the_menu_and_keeps_critical_data(
    state: StateService, phone: str
) -> None:
    state.set_profile(phone, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    state.navigate(phone, OFFER)
    with state.message(phone, "wamid.3", "Mhoro!") as msg:
        assert msg.conversation.stage == DEFAULT_STAGE
        assert Notice.RESTARTED in msg.conversation.notices
        assert msg.conversation.profile is not None


def test_the_token_belongs_to_the_messages_commit(state: StateService, phone: str) -> None:
    with state.message(phone, "wamid.4") as msg:
        assert msg.token() is None
        msg.save_token("jwt-1")
        assert msg.token() == "jwt-1"
        assert state.token(phone) is None  # not before the commit
    assert state.token(phone) == "jwt-1"
    with state.message(phone, "wamid.5") as msg:
        assert msg.token() == "jwt-1"  # read with the conversation
        msg.revoke_token()
        assert msg.token() is None
    assert state.token(phone) is None


def test_two_deliveries_of_one_message_run_its_effect_once(state: StateService, phone: str) -> None:
    """The confirm tap delivered twice while Credex takes half a second to answer."""
    calls: list[int] = []

    def create_offer() -> dict[str, str]:
        calls.append(1)
        time.sleep(0.5)
        return {"credexID": "c-1"}

    def deliver(_: int) -> str:
        with state.message(phone, "wamid.confirm", "1") as msg:
            if msg.duplicate:
                return "duplicate"
            msg.effect("create_credex", create_offer)
            msg.conversation.context["offered"] = True
            return "handled"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(deliver, range(2)))
    assert outcomes == ["duplicate", "handled"]
    assert calls == [1]
    assert state.start(phone).context == {"offered": True}


def test_two_messages_of_one_user_are_handled_one_after_the_other(
    state: StateService, phone: str
) -> None:
    events: list[tuple[str, int]] = []

    def deliver(n: int) -> None:
        with state.message(phone, f"wamid.serial.{n}") as msg:
            events.append(("in", n))
            time.sleep(0.2)
            msg.conversation.context.setdefault("seen", []).append(n)
            events.append(("out", n))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(deliver, range(2)))
    first = events[0][1]
    assert events == [("in", first), ("out", first), ("in", 1 - first), ("out", 1 - first)]
    assert state.start(phone).context["seen"] == [first, 1 - first]  # both committed


def test_other_users_never_wait(state: StateService, phone: str, other_phone: str) -> None:
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with state.message(phone, "wamid.hold"):
            holding.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        started = time.monotonic()
        with state.message(other_phone, "wamid.other") as msg:
            msg.conversation.navigate(OFFER)
        assert time.monotonic() - started < 0.5
    finally:
        done.set()
        holder.join()


def test_a_message_that_waits_too_long_gets_user_busy_and_stores_nothing(
    state_with: Callable[..., StateService], phone: str
) -> None:
    state = state_with(lease_wait=0.3)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with state.message(phone, "wamid.slow") as msg:
            holding.set()
            done.wait(5)
            msg.conversation.context["slow"] = True

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        started = time.monotonic()
        with pytest.raises(UserBusy), state.message(phone, "wamid.next"):
            pytest.fail("entered while another message held the user")
        assert 0.25 <= time.monotonic() - started < 1.5
    finally:
        done.set()
        holder.join()
    assert state.start(phone).context == {"slow": True}
    with state.message(phone, "wamid.next") as msg:  # the redelivery later goes through
        assert not msg.duplicate


def test_one_call_writes_wait_for_a_message_and_then_apply_on_its_result(
    state: StateService, phone: str
) -> None:
    holding = threading.Event()
    done: list[Any] = []

    def hold() -> None:
        with state.message(phone, "wamid.held") as msg:
            holding.set()
            time.sleep(0.3)
            msg.conversation.context["message"] = True

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    done.append(state.update(phone, lambda c: c.context.update(update=True)))
    holder.join()
    # The update did not slip between the message's load and its commit.
    assert state.start(phone).context == {"message": True, "update": True}


def test_asyncio_other_tasks_wait_for_a_tasks_message_without_blocking_the_loop(
    build: Callable[..., Container], phone: str
) -> None:
    container = build(lease_wait=5.0)

    async def bot() -> None:
        state = container.async_state_service()
        try:
            async with state.message(phone, "wamid.a") as msg:
                other = asyncio.create_task(
                    state.update(phone, lambda c: c.context.update(other=True))
                )
                await asyncio.sleep(0.05)
                assert not other.done()  # another task waits for the block, as before
                msg.conversation.context["a"] = True
            assert (await other).context == {"a": True, "other": True}
        finally:
            await container.aclose()

    asyncio.run(bot())


def test_a_handler_that_outlives_its_lease_cannot_commit(
    state_with: Callable[..., StateService], phone: str, clock: FakeClock, backend: str
) -> None:
    state = state_with(lease_ttl=0.3)
    state.start(phone)
    with pytest.raises(LeaseLost), state.message(phone, "wamid.late") as msg:
        msg.conversation.navigate(OFFER)
        clock.advance(1)  # the memory backend's lease runs on the fake clock
        if backend != "memory":
            time.sleep(0.5)  # Redis's on real time
    assert state.start(phone).stage == DEFAULT_STAGE  # nothing it changed was stored
    with state.message(phone, "wamid.late") as msg:  # the redelivery proceeds
        assert not msg.duplicate
        msg.conversation.navigate(OFFER)
    assert state.start(phone).stage == OFFER


def test_a_reset_during_a_message_wins(state: StateService, phone: str) -> None:
    state.set_profile(phone, {"memberID": "m-old"}, [{"accountID": "a-1"}])
    with pytest.raises(LeaseLost), state.message(phone, "wamid.reset") as msg:
        msg.conversation.navigate(OFFER)
        state.reset(phone)
    after = state.start(phone)
    assert after.profile is None and after.stage == DEFAULT_STAGE  # not resurrected
    with state.message(phone, "wamid.reset") as msg:  # the redelivery runs afresh
        assert not msg.duplicate


def test_an_effect_stays_at_most_once_for_dedupe_ttl_after_its_id_is_let_go(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    """The handled ids of a user are bounded (the newest MAX_HANDLED_IDS), so a message
    redelivered after that many newer ones is no longer a duplicate. WhatsApp redelivers for
    days when its 200 got lost: its payment must still not be made again."""
    from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS

    calls: list[str] = []

    def pay() -> dict[str, str]:
        calls.append("pay")
        return {"credexID": "c-1"}

    with state.message(phone, "wamid.pay") as msg:
        assert msg.effect("create_credex", pay) == {"credexID": "c-1"}
    for n in range(MAX_HANDLED_IDS + 2):
        with state.message(phone, f"wamid.chat.{n}"):
            clock.advance(0.001)
    with state.message(phone, "wamid.pay") as again:  # hours later, inside dedupe_ttl
        assert not again.duplicate  # let go: the documented bound
        assert again.effect("create_credex", pay) == {"credexID": "c-1"}
    assert calls == ["pay"]


def test_after_a_reset_a_handled_id_is_still_let_go_at_dedupe_ttl(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    """Found by test_stateful.py: the memory backend kept the ids a reset leaves for good."""
    assert state.handle_once(phone, "wamid.1", lambda c: None) is not None
    state.reset(phone)
    assert state.handle_once(phone, "wamid.1", lambda c: None) is None  # still known
    clock.advance(days=1)
    state.reset(phone)
    assert state.handle_once(phone, "wamid.1", lambda c: None) is not None


def test_an_effect_record_survives_a_reset(state: StateService, phone: str) -> None:
    calls: list[str] = []
    with pytest.raises(TimeoutError), state.message(phone, "wamid.paid") as msg:
        msg.effect("create_credex", lambda: calls.append("pay") or {"credexID": "c-2"})
        raise TimeoutError("the reply to WhatsApp never left")
    state.reset(phone)
    with state.message(phone, "wamid.paid") as again:
        assert again.effect("create_credex", lambda: calls.append("again")) == {"credexID": "c-2"}
    assert calls == ["pay"]


def test_an_effect_that_completed_is_not_run_again_by_a_redelivery(
    state: StateService, phone: str
) -> None:
    calls: list[int] = []

    def create() -> dict[str, Any]:
        calls.append(1)
        return {"credexID": "c-7", "amount": 25.5}

    with pytest.raises(TimeoutError), state.message(phone, "wamid.pay") as msg:
        assert msg.effect("create_credex", create) == {"credexID": "c-7", "amount": 25.5}
        raise TimeoutError("WhatsApp's send failed after the offer was created")
    with state.message(phone, "wamid.pay") as msg:
        assert msg.effect("create_credex", create) == {"credexID": "c-7", "amount": 25.5}
        assert msg.effect("create_credex", create) == {"credexID": "c-7", "amount": 25.5}
    assert calls == [1]


def test_an_effect_whose_outcome_is_unknown_is_in_doubt_until_settled(
    state: StateService, phone: str
) -> None:
    def create() -> dict[str, str]:
        raise ConnectionError("Credex did not answer")

    with pytest.raises(ConnectionError), state.message(phone, "wamid.doubt") as msg:
        msg.effect("create_credex", create)
    with pytest.raises(EffectInDoubt) as doubt, state.message(phone, "wamid.doubt") as msg:
        msg.effect("create_credex", lambda: pytest.fail("run again while in doubt"))
    assert doubt.value.name == "create_credex"
    assert isinstance(doubt.value, StateError)
    with state.message(phone, "wamid.doubt") as msg:
        msg.settle("create_credex", {"credexID": "c-found"})  # the bot checked with Credex
        assert msg.effect("create_credex", lambda: pytest.fail("ran")) == {"credexID": "c-found"}
    with state.message(phone, "wamid.doubt") as msg:
        assert msg.duplicate  # committed


def test_effects_are_per_message_and_per_name(state: StateService, phone: str) -> None:
    with state.message(phone, "wamid.a") as msg:
        assert msg.effect("login", lambda: 1) == 1
        assert msg.effect("dashboard", lambda: 2) == 2
    with state.message(phone, "wamid.b") as msg:
        assert msg.effect("login", lambda: 3) == 3


def _jwt(exp: datetime) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part({'exp': exp.timestamp()})}.sig"


def test_a_token_messages_keep_using_lives_token_ttl_from_its_last_use_never_past_exp(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    """An active member is not bounced to the login mid-offer: each message that uses the
    token keeps it token_ttl (30 min) from then; the JWT's own exp still ends it."""
    exp = clock.now() + timedelta(minutes=100)
    token = _jwt(exp)
    with state.message(phone, "wamid.login") as msg:
        msg.save_token(token)
    for n in range(1, 4):  # a message every 25 minutes: 75 minutes after the login
        clock.advance(minutes=25)
        with state.message(phone, f"wamid.{n}") as msg:
            assert msg.token() == token, f"bounced after {25 * n} minutes"
    clock.advance(minutes=29)  # 104 minutes: used 29 minutes ago, but past the JWT's exp
    with state.message(phone, "wamid.late") as msg:
        assert msg.token() is None


def test_a_token_nobody_uses_expires_token_ttl_after_it_was_saved(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    with state.message(phone, "wamid.login") as msg:
        msg.save_token(_jwt(clock.now() + timedelta(days=1)))
    for n in range(3):  # messages that never read the token do not keep it
        clock.advance(minutes=10)
        with state.message(phone, f"wamid.{n}") as msg:
            msg.conversation.context["n"] = n
    clock.advance(seconds=1)
    with state.message(phone, "wamid.late") as msg:
        assert msg.token() is None
