"""Unit fixtures: the in-memory backend behind the real container, a fake clock, no server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes import FakeClock

from services.container import Container
from services.state_service import StateService

# A fixed instant (with microseconds) keeps every expiry test exact and repeatable.
T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+263 77 123 4567"
DIGITS = "263771234567"
OTHER_PHONE = "+263 71 999 8888"


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
