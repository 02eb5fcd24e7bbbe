"""One contract suite, every backend: each test here runs on memory and on a real Redis."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from fakes import FakeClock

from services.config import Settings
from services.container import Container
from services.state_service import StateService

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


@pytest.fixture
def state(container: Container) -> StateService:
    return container.state_service()
