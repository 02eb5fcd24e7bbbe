"""One contract suite, every backend: each test here runs on memory and on a real Redis."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import service_kinds as kinds
from cryptography.fernet import Fernet
from fakes import FakeClock
from service_kinds import KINDS

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
        container.close()


@pytest.fixture
def container(build: Build) -> Container:
    return build()


@pytest.fixture(params=KINDS)
def service_of(request: pytest.FixtureRequest) -> Iterator[Callable[[Container], StateService]]:
    """How a test reaches a container's service: the StateService, or the AsyncStateService
    behind the blocking facade (tests/service_kinds.py); their clients are closed at the end."""
    kind = str(request.param)
    loop = request.getfixturevalue("loop_thread") if kind == "async" else None
    with ExitStack() as services:
        yield lambda container: services.enter_context(kinds.service_of(container, kind, loop))


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
