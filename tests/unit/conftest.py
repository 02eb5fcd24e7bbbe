"""Unit fixtures: the in-memory backend behind the real container, a fake clock, no server."""

from __future__ import annotations

import pytest
from fakes import T0, FakeClock

from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def container(clock: FakeClock) -> Container:
    container = Container()
    container.config.from_dict({"backend": "memory"})
    container.clock.override(clock)
    return container


@pytest.fixture
def state(container: Container) -> StateService:
    return container.state_service()
