"""The code of README.md and docs/webhook-guide.md, as written, on a real Redis: the same
scenarios as tests/unit/test_readme.py and test_webhook_guide.py (tests/doc_examples.py),
configured from the environment as a deployed bot is."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from doc_examples import (
    GUIDE,
    README,
    async_guide_fakes,
    block_after,
    close_async_clients,
    close_clients,
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
    readme_offer,
    readme_one_call,
    run_block,
    serve_guide,
    track_containers,
)
from fakes import TOKEN_KEY


@pytest.fixture
def containers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    built = track_containers(monkeypatch)
    yield built
    close_clients(built)


@pytest.fixture
def on_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch, containers: list[Any]) -> Any:
    """configure() for the shared test server, with a token key, as production runs."""
    return lambda **settings: configure(
        monkeypatch, "redis", redis_url=redis_url, token_key=TOKEN_KEY, **settings
    )


@pytest.fixture(params=["flask", "fastapi"])
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_readme_example_and_the_guides_one_call_example(on_redis: Any) -> None:
    on_redis()
    readme_offer(run_block(block_after(README, "## From bot code"), "README.md"))
    readme_one_call(run_block(block_after(GUIDE, "## Simple bots"), str(GUIDE)))


def test_a_whole_offer_with_redeliveries(
    framework: str, on_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_redis()
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_offer_conversation(client, bot, credex, outbox)


def test_a_busy_user_and_a_lost_lease_get_503(
    framework: str, on_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_redis(lease_wait="0.3", lease_ttl="0.5")
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_user_busy(client, bot, outbox)
        guide_lease_lost(client, bot, credex, outbox)


@pytest.mark.parametrize("created", [True, False], ids=["created", "not-created"])
def test_an_offer_in_doubt_is_settled_from_the_dashboard_and_made_once(
    framework: str,
    created: bool,
    on_redis: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_redis()
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_effect_in_doubt(client, bot, credex, outbox, monkeypatch, created)


def test_a_worker_killed_mid_offer_leaves_one_offer(
    framework: str, on_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_redis()
    with (
        serve_guide(framework, tmp_path, monkeypatch) as (bot, app, client),
        guide_fakes(monkeypatch, bot, app) as (credex, outbox),
    ):
        guide_worker_killed_mid_offer(client, bot, credex, outbox, monkeypatch)


def test_the_asyncio_app(
    on_redis: Any, containers: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_redis(lease_wait="0.3")
    module = import_files(
        tmp_path, monkeypatch, {"main_async": named_block(GUIDE, "main_async.py")}
    )["main_async"]

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=module.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            with async_guide_fakes(monkeypatch, module) as (credex, outbox):
                try:
                    await guide_async_app(client, module, credex, outbox)
                finally:
                    await close_async_clients(containers)

    asyncio.run(scenario())
