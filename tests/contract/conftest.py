"""One contract suite, every backend: each test here runs on memory and on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import itertools
import random
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import pytest
from cryptography.fernet import Fernet
from fakes import FakeClock

from vimbiso_state.adapters.redis.aio import close_async
from vimbiso_state.adapters.redis.connection import close
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.message import AsyncMessage
from vimbiso_state.services.state_service import StateService

T = TypeVar("T")

# Random block per run: tests on a shared server must never meet keys of an earlier run.
_phones = itertools.count(263_700_000_000 + random.randrange(0, 99_000_000, 1000))


@pytest.fixture
def phone() -> str:
    """A number no other test (or earlier run on a shared server) uses."""
    return f"+{next(_phones)}"


@pytest.fixture
def other_phone() -> str:
    """A second number of the same kind."""
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


Build = Callable[..., Container]


@pytest.fixture
def build(backend: str, clock: FakeClock, request: pytest.FixtureRequest) -> Iterator[Build]:
    """Containers on this test's backend, with settings overridden as asked."""
    key = Fernet.generate_key().decode()
    url = request.getfixturevalue(SERVERS[backend]) if backend in SERVERS else None
    built: list[Container] = []

    def make(**overrides: Any) -> Container:
        settings = Settings(backend=backend, token_keys=(key,))
        if url is not None:
            settings = dataclasses.replace(settings, redis_url=url)
        container = Container.from_settings(dataclasses.replace(settings, **overrides))
        container.clock.override(clock)
        built.append(container)
        return container

    yield make
    for container in built:
        if backend in SERVERS:
            close(container.redis_client())


@pytest.fixture
def container(build: Build) -> Container:
    return build()


class BlockingMessage:
    """An AsyncMessage driven from plain test code, as Blocking drives the async service.
    Effects run in a worker thread, so a slow one does not hold up the event loop."""

    def __init__(self, message: AsyncMessage, loop: asyncio.AbstractEventLoop) -> None:
        self._message = message
        self._loop = loop

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> BlockingMessage:
        self._wait(self._message.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._wait(self._message.__aexit__(*exc))

    def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T:
        return self._wait(self._message.effect(name, lambda: asyncio.to_thread(run), key=key))

    def settle(self, name: str, result: object, *, key: str | None = None) -> Any:
        return self._wait(self._message.settle(name, result, key=key))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._message, name)


class BlockingExpirations:
    """An AsyncExpirations batch driven from plain test code."""

    def __init__(self, batch: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._batch = batch
        self._loop = loop

    def __enter__(self) -> Any:
        return asyncio.run_coroutine_threadsafe(self._batch.__aenter__(), self._loop).result()

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._batch.__aexit__(*exc), self._loop).result()


class Blocking:
    """Drives an AsyncStateService from plain test code, from any thread: every call runs on
    one event loop in a background thread. The contract tests then hold the async service to
    exactly what they hold the sync one to."""

    def __init__(self, service: AsyncStateService, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._service, name)
        if name == "message":
            return lambda *args, **kwargs: BlockingMessage(attribute(*args, **kwargs), self._loop)
        if name == "expirations":
            return lambda *args, **kwargs: BlockingExpirations(
                attribute(*args, **kwargs), self._loop
            )
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
def service_of(
    request: pytest.FixtureRequest, backend: str
) -> Iterator[Callable[[Container], StateService]]:
    """How a test reaches a container's service: the StateService, or the AsyncStateService
    behind a blocking facade."""
    if request.param == "sync":
        yield lambda container: container.state_service()
        return
    loop: asyncio.AbstractEventLoop = request.getfixturevalue("event_loop_thread")
    used: list[Container] = []

    def service(container: Container) -> StateService:
        used.append(container)
        return cast(StateService, Blocking(container.async_state_service(), loop))

    yield service
    for container in used:
        if backend in SERVERS:
            client = container.async_redis_client()
            asyncio.run_coroutine_threadsafe(close_async(client), loop).result()


@pytest.fixture
def state(container: Container, service_of: Callable[[Container], StateService]) -> StateService:
    """The StateService of the backend, or its AsyncStateService behind a blocking facade."""
    return service_of(container)


@pytest.fixture
def state_with(
    build: Build, service_of: Callable[[Container], StateService]
) -> Callable[..., StateService]:
    """A service of this test's backend and kind, with settings overridden as asked."""
    return lambda **overrides: service_of(build(**overrides))
