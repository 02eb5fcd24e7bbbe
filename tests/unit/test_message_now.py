"""``msg.now``: the store's clock when the block began, which ``InDoubt.started_at`` and the
deadlines are on, whatever this host's clock says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fakes import FakeClock

from vimbiso_state import Container, InvalidInput, Settings

PHONE = "+263771234567"


def _container(clock: FakeClock) -> Container:
    container = Container.from_settings(Settings(backend="memory"))
    container.clock.override(clock)
    return container


def test_now_is_the_stores_time_when_the_block_began_on_every_delivery() -> None:
    store = FakeClock(datetime.now(UTC) + timedelta(hours=3))  # far from this host's clock
    state = _container(store).state_service()
    with state.message(PHONE, "wamid.1", "hi") as msg:
        began = store.now()
        store.advance(5)
        assert msg.now == began
    with state.message(PHONE, "wamid.1", "hi") as msg:
        assert msg.duplicate and msg.now == store.now()


def test_now_is_the_clock_of_in_doubt_started_at() -> None:
    store = FakeClock(datetime.now(UTC) - timedelta(hours=2))
    state = _container(store).state_service()
    with pytest.raises(RuntimeError), state.message(PHONE, "wamid.1", "offer") as msg:
        msg.effect("create_credex", _fails, key="offer-1")
    store.advance(minutes=3)
    with state.message(PHONE, "wamid.2", "1") as msg:
        [doubt] = msg.in_doubt
        assert msg.now - doubt.started_at == timedelta(minutes=3)


def test_now_before_the_block_is_entered_is_refused() -> None:
    state = _container(FakeClock()).state_service()
    with pytest.raises(InvalidInput, match="entered"):
        _ = state.message(PHONE, "wamid.1", "hi").now


def test_now_on_asyncio() -> None:
    store = FakeClock(datetime.now(UTC) + timedelta(days=1))
    container = _container(store)

    async def main() -> datetime:
        async with container.async_state_service().message(PHONE, "wamid.1", "hi") as msg:
            began = store.now()
            store.advance(1)
            assert msg.now == began
            return msg.now

    assert asyncio.run(main()) == store.now() - timedelta(seconds=1)


def _fails() -> None:
    raise RuntimeError("the call timed out midway")
