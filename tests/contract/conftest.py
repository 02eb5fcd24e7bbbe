"""One contract suite, every backend: each test here runs on memory and on a real Redis."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import random
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet
from fakes import FakeClock

from vimbiso_state.adapters.redis.aio import close_async
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

# Random block per run: tests on a shared server must never meet keys of an earlier run.
_phones = itertools.count(263_700_000_000 + random.randrange(0, 99_000_000, 1000))


@pytest.fixture
def phone() -> str:
    """A number no other test (or earlier run on a shared server) uses."""
    return f"+{next(_phones)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# The server fixture of each real backend (looked up only when that backend runs).
SERVERS = {"redis": "redis_url", "redis-cluster": "cluster_url"}


@pytest.fixture
def container(
    backend: str, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[Container]:
    settings = Settings(backend=backend, token_keys=(Fernet.generate_key().decode(),))
    if backend in SERVERS:
        url = request.getfixturevalue(SERVERS[backend])
        settings = Settings(backend=backend, redis_url=url, token_keys=settings.token_keys)
    container = Container.from_settings(settings)
    container.clock.override(clock)
    yield container
    if backend in SERVERS:
        container.redis_client().close()


class Blocking:
    """Drives an AsyncStateService from plain test code, from any thread: every call runs on
    one event loop in a background thread. The contract tests then hold the async service to
    exactly what they hold the sync one to."""

    def __init__(self, service: AsyncStateService, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._service, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(attribute(*args, **kwargs), self._loop).result()

        return call


@pytest.fixture(scope="session")
def event_loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()


@pytest.fixture(params=["sync", "async"])
def state(
    container: Container, request: pytest.FixtureRequest, backend: str
) -> Iterator[StateService]:
    """The StateService of the backend, or its AsyncStateService behind a blocking facade."""
    if request.param == "sync":
        yield container.state_service()
        return
    loop: asyncio.AbstractEventLoop = request.getfixturevalue("event_loop_thread")
    yield cast(StateService, Blocking(container.async_state_service(), loop))
    if backend in SERVERS:
        client = container.async_redis_client()
        asyncio.run_coroutine_threadsafe(close_async(client), loop).result()
