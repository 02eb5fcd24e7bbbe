"""docs/expirations.md as written: its worker and its Celery beat task, on the webhook guide's
bot (memory backend, forms of one second): a member who walks away at the signature is told
once, through the bot's own sender."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from doc_examples import (
    GUIDE,
    ROOT,
    FakeCredex,
    Outbox,
    body_of,
    configure,
    import_files,
    named_block,
    new_sender,
    wamid,
)

from vimbiso_state.domain.expirations import Expiration, ExpiryKind

EXPIRATIONS = ROOT / "docs" / "expirations.md"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    configure(monkeypatch, "memory", form_ttl="1")
    files = {
        "bot": named_block(GUIDE, "bot.py"),
        "expiry_worker": named_block(EXPIRATIONS, "expiry_worker.py"),
        "tasks": named_block(EXPIRATIONS, "tasks.py"),
    }
    return import_files(tmp_path, monkeypatch, files)


@pytest.mark.slow
def test_a_member_who_walks_away_at_the_signature_is_told_once(
    modules: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, worker, tasks = modules["bot"], modules["expiry_worker"], modules["tasks"]
    credex, outbox = FakeCredex(), Outbox()
    monkeypatch.setattr(bot, "credex_login", credex.login)
    monkeypatch.setattr(worker, "send_whatsapp", outbox.send)  # `from bot import ...`
    phone = new_sender()
    for said in ("hi", "1", "USD 25", "bob_store"):
        bot.handle(phone, wamid(), said)
    assert bot.state.start(phone).stage == bot.CONFIRM  # and the member says no more
    assert worker.tell_expired() == 0  # not yet
    time.sleep(1.2)

    assert tasks.tell_expired.apply().get() == 1  # Celery beat's task, run here
    [(to, reply)] = outbox.take(1)
    assert to == phone and body_of(reply) == (
        "Your offer of USD 25 to bob_store was not confirmed, so it was cancelled. "
        "Reply 1 to retry."
    )
    assert worker.tell_expired() == 0  # told once
    schedule = tasks.app.conf.beat_schedule["tell-members-of-expiries"]
    assert schedule["task"] == tasks.tell_expired.name and schedule["schedule"] == 5.0


def test_outside_the_24_hour_window_a_template_is_sent(modules: dict[str, ModuleType]) -> None:
    worker = modules["expiry_worker"]
    now = datetime.now(UTC)
    event = Expiration(
        phone="263771234567",
        kind=ExpiryKind.FORM,
        expired_at=now,
        window_closes_at=now - timedelta(minutes=1),
        name="offer",
        answers={"amount": "25", "denomination": "USD"},
    )
    reply = worker.message_for(event, now)
    assert reply["type"] == "template" and reply["template"]["name"] == worker.TEMPLATE
    assert reply["template"]["components"][0]["parameters"] == [{"type": "text", "text": "USD 25"}]
    inside = worker.message_for(replace(event, window_closes_at=now + timedelta(hours=2)), now)
    assert inside["type"] == "text"
    session = replace(event, kind=ExpiryKind.SESSION, name=None, answers={})
    assert worker.message_for(session, now) is None
