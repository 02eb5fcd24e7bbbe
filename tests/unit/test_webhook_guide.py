"""docs/webhook-guide.md's bot and apps, imported as written (bot.py, app.py, main.py,
main_async.py), on the memory backend, answering WhatsApp Cloud API webhooks through Flask's
test client and httpx; only the Credex and WhatsApp calls are replaced. The same scenarios
run on Redis in tests/integration/test_docs_on_redis.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from doc_examples import (
    GUIDE,
    async_guide_fakes,
    configure,
    guide_async_app,
    guide_effect_in_doubt,
    guide_fakes,
    guide_lease_lost,
    guide_offer_conversation,
    guide_user_busy,
    guide_worker_killed_mid_offer,
    import_files,
    named_block,
    serve_guide,
)

from vimbiso_state import ConfigurationError


@pytest.fixture(params=["flask", "fastapi"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_whole_offer_with_redeliveries(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, "memory")
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_offer_conversation(client, bot, credex, outbox)


def test_a_busy_user_gets_503_with_retry_after(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, "memory", lease_wait="0.3")
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (_, outbox),
    ):
        guide_user_busy(client, bot, outbox)


@pytest.mark.slow
def test_a_lost_lease_gets_503_and_the_redelivery_creates_nothing_more(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, "memory", lease_ttl="0.5")
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_lease_lost(client, bot, credex, outbox)


@pytest.mark.parametrize("created", [True, False], ids=["created", "not-created"])
def test_an_offer_in_doubt_is_settled_from_the_dashboard_and_made_once(
    framework: str, created: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, "memory")
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_effect_in_doubt(client, bot, credex, outbox, monkeypatch, created)


def test_a_worker_killed_mid_offer_leaves_one_offer(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, "memory")
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_worker_killed_mid_offer(client, bot, credex, outbox, monkeypatch)


@pytest.mark.slow
def test_the_asyncio_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, "memory", lease_wait="0.3")
    module = import_files(
        tmp_path, monkeypatch, {"main_async": named_block(GUIDE, "main_async.py")}
    )["main_async"]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=module.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            with async_guide_fakes(monkeypatch, module) as (credex, outbox):
                await guide_async_app(client, module, credex, outbox)

    asyncio.run(scenario())


def test_redis_without_a_token_key_stops_the_bot_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No server is needed: the service is refused before any connection.
    configure(monkeypatch, "redis", redis_url="redis://127.0.0.1:9/0")
    with pytest.raises(ConfigurationError) as refused:
        import_files(tmp_path, monkeypatch, {"bot": named_block(GUIDE, "bot.py")})
    shown = f"{type(refused.value).__module__}.{type(refused.value).__name__}: {refused.value}"
    assert f"```text\n{shown}\n```" in GUIDE.read_text(encoding="utf-8")  # as the guide shows
