"""What the library records through OpenTelemetry, on every backend, sync and async: the
figures of a scripted WhatsApp conversation, read with the SDK's in-memory metric reader and
span exporter, and spans that never carry the phone number or the token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeClock
from otel_sdk import Figures, clear_spans, spans

from vimbiso_state.adapters.otel import (
    CATALOGUE,
    EFFECT_NAME,
    EFFECT_OUTCOME,
    ERROR_TYPE,
    EXPIRY_KIND,
    MESSAGE_OUTCOME,
    OPERATION,
    PART,
    PSEUDO_ID,
)
from vimbiso_state.domain.conversation import Notice
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import EffectInDoubt, UserBusy
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.member-secret-token-Zq81.signature"
MESSAGES = "vimbiso_state.messages"
EFFECTS = "vimbiso_state.effects"
EXPIRIES = "vimbiso_state.expiries"


@pytest.fixture
def figures() -> Iterator[None]:
    Figures.take()  # what earlier tests recorded is not this test's
    clear_spans()
    yield


def _hold(state: StateService, phone: str, message_id: str, seconds: float) -> threading.Thread:
    """Another delivery of this user, holding them for ``seconds`` (started and held)."""
    holding = threading.Event()

    def hold() -> None:
        with state.message(phone, message_id) as msg:
            holding.set()
            time.sleep(seconds)
            msg.conversation.context[message_id] = True

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    return holder


def _damage_session(container: Container, backend: str, phone: str) -> None:
    """Give the stored session a stage that is no identifier, as corruption would."""
    digits = phone.lstrip("+")
    if backend == "memory":
        part = container.memory_conversations()._users[digits].session
        assert part is not None
        part.data = json.dumps({**json.loads(part.data), "stage": "menu; DROP *"}).encode()
        return
    client = container.redis_client()
    key = f"session:{{{digits}}}:data"
    value = client.get(key)
    assert value is not None
    document = {**json.loads(value[16:]), "stage": "menu; DROP *"}
    client.set(key, value[:16] + json.dumps(document).encode(), keepttl=True)


@pytest.mark.slow
def test_a_scripted_conversation_records_its_figures(
    build: Callable[..., Container],
    service_of: Callable[[Container], StateService],
    backend: str,
    clock: FakeClock,
    phone: str,
    figures: None,
) -> None:
    container = build(lease_wait=0.6)
    state = service_of(container)
    calls: list[str] = []

    def create() -> dict[str, str]:
        calls.append("create")
        return {"credexID": "c-1"}

    def unanswered() -> dict[str, str]:
        calls.append("accept")
        raise ConnectionError("Credex did not answer")

    # A greeting, a menu choice, a form.
    with state.message(phone, "wamid.1", "hi") as msg:
        assert msg.conversation.notices == [Notice.WELCOME]
    with state.message(phone, "wamid.2", "1") as msg:
        msg.conversation.navigate(OFFER)
    with state.message(phone, "wamid.3", "USD 100") as msg:
        msg.form_start("offer", ["amount", "recipient"])
        msg.form_fill(amount="USD 100")
    # WhatsApp delivers the last one again.
    with state.message(phone, "wamid.3", "USD 100") as msg:
        assert msg.duplicate
    # A message that waits for the previous one, and one that waits too long.
    holder = _hold(state, phone, "wamid.4", 0.2)
    with state.message(phone, "wamid.5"):
        pass
    holder.join()
    holder = _hold(state, phone, "wamid.6", 1.2)
    with pytest.raises(UserBusy), state.message(phone, "wamid.7"):
        pytest.fail("entered while the user was held")
    holder.join()
    # An effect whose message failed after it (replayed by the redelivery), and one whose
    # outcome is unknown (in doubt, then settled by the bot and replayed).
    with pytest.raises(RuntimeError), state.message(phone, "wamid.8") as msg:
        msg.effect("create_credex", create)
        raise RuntimeError("sending the reply failed")
    with state.message(phone, "wamid.8") as msg:
        assert msg.effect("create_credex", create) == {"credexID": "c-1"}
    with pytest.raises(ConnectionError), state.message(phone, "wamid.9") as msg:
        msg.effect("accept_credex", unanswered)
    with pytest.raises(EffectInDoubt), state.message(phone, "wamid.9") as msg:
        msg.effect("accept_credex", unanswered)
    with state.message(phone, "wamid.9") as msg:
        msg.settle("accept_credex", {"accepted": True})
        assert msg.effect("accept_credex", unanswered) == {"accepted": True}
    assert calls == ["create", "accept"]
    # Ten minutes of silence: the session and the form expire; the member logs in.
    clock.advance(601)
    with state.message(phone, "wamid.10", "2") as msg:
        assert msg.conversation.notices == [Notice.SESSION_EXPIRED, Notice.FORM_EXPIRED]
        msg.save_token(TOKEN)
    # Half an hour later the token has expired too (read before its key is collected).
    clock.advance(1800.5)
    with state.message(phone, "wamid.11", "3") as msg:
        assert msg.token() is None
        assert msg.token() is None  # one token, one expiry
    assert state.token(phone) is None
    # The server loses the session's content.
    _damage_session(container, backend, phone)
    assert Notice.STATE_LOST in state.start(phone).notices

    got = Figures.take()
    assert got.by(MESSAGES, MESSAGE_OUTCOME) == {
        "committed": 10,  # 1, 2, 3, 4, 5, 6, 8, 9, 10, 11
        "duplicate": 1,
        "rolled_back": 3,  # 8, 9 (ConnectionError) and 9 (EffectInDoubt)
        "failed": 1,  # 7 (UserBusy)
    }
    rolled_back = {MESSAGE_OUTCOME: "rolled_back"}
    assert got.total(MESSAGES, {**rolled_back, ERROR_TYPE: "RuntimeError"}) == 1
    assert got.total(MESSAGES, {**rolled_back, ERROR_TYPE: "EffectInDoubt"}) == 1
    assert got.total(MESSAGES, {MESSAGE_OUTCOME: "failed", ERROR_TYPE: "UserBusy"}) == 1
    assert got.total("vimbiso_state.duplicates", {OPERATION: "message"}) == 1
    assert got.total("vimbiso_state.user_busy", {OPERATION: "message"}) == 1
    # Two waits: one until the holder ended, one until lease_wait ran out.
    waits = {OPERATION: "message"}
    assert got.count("vimbiso_state.lease.wait", waits) == 2
    assert max(v for k, v in got.largest.items() if k[0] == "vimbiso_state.lease.wait") >= 0.5
    assert 0.65 <= got.total("vimbiso_state.lease.wait", waits) < 3
    assert got.by(EFFECTS, EFFECT_OUTCOME) == {
        "run": 2,
        "replayed": 2,
        "in_doubt": 1,
        "settled": 1,
    }
    assert got.total(EFFECTS, {EFFECT_NAME: "accept_credex", EFFECT_OUTCOME: "in_doubt"}) == 1
    # The lost session is told as session_expired too (the notices say so): three.
    assert got.by(EXPIRIES, EXPIRY_KIND) == {"session": 3, "form": 1, "token": 2}
    assert got.total("vimbiso_state.state_lost") == 1
    assert got.total("vimbiso_state.unavailable") == 0
    assert got.total("vimbiso_state.conflicts") == 0
    # Every commit encoded its critical data and session; the form while there was one.
    commits = 10 + 1  # the messages, and the start that stored the lost state's outcome
    assert got.count("vimbiso_state.stored_part.size", {PART: "critical"}) == commits
    assert got.count("vimbiso_state.stored_part.size", {PART: "session"}) == commits
    assert 0 < got.count("vimbiso_state.stored_part.size", {PART: "form"}) < commits
    assert got.count("vimbiso_state.operation.duration", {OPERATION: "message"}) == 15
    assert got.count("vimbiso_state.operation.duration", {OPERATION: "effect"}) == 5
    assert got.units["vimbiso_state.operation.duration"] == "s"
    assert got.units["vimbiso_state.stored_part.size"] == "By"
    assert got.units[MESSAGES] == "{message}"

    # Spans: one per operation, effects inside their message, the user as a pseudonym only.
    finished = spans()
    names = {span.name for span in finished}
    assert {"vimbiso_state.message", "vimbiso_state.effect", "vimbiso_state.settle"} <= names
    assert {"vimbiso_state.token", "vimbiso_state.start"} <= names
    messages = {span.context.span_id: span for span in finished if span.name.endswith("message")}
    effects = [span for span in finished if span.name == "vimbiso_state.effect"]
    assert len(effects) == 5
    assert all(span.parent is not None and span.parent.span_id in messages for span in effects)
    pseudonyms = {span.attributes.get(PSEUDO_ID) for span in finished if span.attributes}
    assert pseudonyms == {container.telemetry().pseudonym(phone.lstrip("+"))}
    outcomes = sorted(str(span.attributes.get(MESSAGE_OUTCOME)) for span in messages.values())
    assert outcomes.count("committed") == 10 and outcomes.count("rolled_back") == 3
    _assert_private(finished, phone)


def _assert_private(finished: list[Any], phone: str) -> None:
    digits = phone.lstrip("+")
    secrets = (digits, digits[3:], TOKEN, TOKEN.split(".")[1])
    for span in finished:
        shown = [span.name, str(span.status.description)]
        shown += [f"{key}={value}" for key, value in (span.attributes or {}).items()]
        for event in span.events:
            shown += [event.name, *(str(v) for v in (event.attributes or {}).values())]
        for text in shown:
            assert not any(secret in text for secret in secrets), (span.name, text)


def test_every_metric_recorded_is_in_the_catalogue_with_its_unit(
    state: StateService, phone: str, figures: None
) -> None:
    with state.message(phone, "wamid.c") as msg:
        msg.effect("login", lambda: {"ok": True})
    got = Figures.take()
    catalogue = {metric.name: metric.unit for metric in CATALOGUE}
    assert got.names() <= set(catalogue)
    assert {name: got.units[name] for name in got.names()} == {
        name: catalogue[name] for name in got.names()
    }
