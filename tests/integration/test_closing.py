"""Closing a container at a bot's shutdown never fails: a connection that will not close in
time (a loaded machine, a peer that stopped reading) is given up on, with a DEBUG line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import fakes
import pytest

from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container

pytestmark = pytest.mark.redis

BIG = b"x" * (32 << 20)  # more than every socket buffer on the way holds


def test_aclose_gives_up_quietly_on_a_connection_that_will_not_close(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with fakes.stops_reading(urlsplit(redis_url).netloc) as front:
        settings = Settings(
            backend="redis",
            redis_url=f"redis://{front}/0",
            token_keys=(fakes.TOKEN_KEY,),
            socket_timeout=5,  # the write below is still under way when the bot shuts down
        )
        container = Container.from_settings(settings)

        async def shut_down_while_writing() -> float:
            client = container.async_redis_client()
            writing = asyncio.create_task(client.set("test:closing:big", BIG))
            await asyncio.sleep(0.3)  # its bytes now fill the socket's buffers
            began = time.monotonic()
            try:
                await container.aclose()
                return time.monotonic() - began
            finally:
                writing.cancel()
                with contextlib.suppress(BaseException):
                    await writing

        with caplog.at_level(logging.DEBUG, logger="vimbiso_state.adapters.redis.aio"):
            took = asyncio.run(shut_down_while_writing())
    assert took < settings.connect_timeout + 1
    assert "gave up closing a Redis connection" in caplog.text


def test_close_and_aclose_after_a_normal_run_log_nothing(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(fakes.TOKEN_KEY,))
    )

    async def run_then_close() -> None:
        await container.async_state_service().start("+263771230001")
        await container.aclose()

    container.state_service().start("+263771230001")
    with caplog.at_level(logging.DEBUG, logger="vimbiso_state.adapters.redis"):
        asyncio.run(run_then_close())
        container.close()
    assert "gave up closing" not in caplog.text
