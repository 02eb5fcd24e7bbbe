"""ServerClock: every host keeps the Redis server's time, read once in a while and carried by
the monotonic clock in between; no round trip per message."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from vimbiso_state.adapters.redis.clock import ServerClock
from vimbiso_state.domain.errors import StateUnavailable
from vimbiso_state.services.container import Container

SERVER = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Readings:
    """A server clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.server = SERVER
        self.monotonic = 1000.0
        self.reads = 0  # every read, blocking or awaited
        self.areads = 0  # the awaited ones
        self.round_trip = 0.0
        self.down = False

    def read(self) -> datetime:
        if self.down:
            raise StateUnavailable("Redis is unreachable")
        self.reads += 1
        self.tick(self.round_trip / 2)  # the request travels
        answer = self.server
        self.tick(self.round_trip / 2)  # the reply travels
        return answer

    async def aread(self) -> datetime:
        self.areads += 1
        await asyncio.sleep(0)
        return self.read()

    def tick(self, seconds: float) -> None:
        self.monotonic += seconds
        self.server += timedelta(seconds=seconds)


def _clock(readings: Readings) -> ServerClock:
    return ServerClock(readings.read, timedelta(seconds=60), lambda: readings.monotonic)


def test_time_is_the_servers_and_it_is_read_once_a_minute() -> None:
    readings = Readings()
    clock = _clock(readings)
    assert clock.now() == SERVER
    for _ in range(59):
        readings.tick(1)
        assert clock.now() == readings.server
    assert readings.reads == 1  # carried by the monotonic clock in between
    readings.tick(1)
    clock.now()
    assert readings.reads == 2


def test_the_reading_is_placed_in_the_middle_of_its_round_trip() -> None:
    readings = Readings()
    readings.round_trip = 0.010
    clock = _clock(readings)
    assert abs(clock.now() - readings.server) <= timedelta(milliseconds=5)


def test_a_server_clock_that_jumps_is_followed_at_the_next_reading() -> None:
    readings = Readings()
    clock = _clock(readings)
    clock.now()
    readings.server += timedelta(minutes=5)  # an operator set the server's clock
    readings.tick(61)
    assert clock.now() == readings.server


def test_a_failed_reading_carries_the_last_one_on_and_tries_again_soon() -> None:
    readings = Readings()
    clock = _clock(readings)
    clock.now()
    readings.down = True
    readings.tick(61)
    assert clock.now() == readings.server  # carried on, not failed
    readings.down = False
    readings.tick(1)
    clock.now()
    assert readings.reads == 1  # not before the retry's few seconds
    readings.tick(5)
    clock.now()
    assert readings.reads == 2


def test_a_process_that_never_read_the_servers_time_fails_clearly() -> None:
    readings = Readings()
    readings.down = True
    with pytest.raises(StateUnavailable):
        _clock(readings).now()


def _asyncio_clock(readings: Readings) -> ServerClock:
    return ServerClock(
        readings.read, timedelta(seconds=60), lambda: readings.monotonic, aread=readings.aread
    )


def test_on_an_event_loop_a_due_read_waits_for_the_awaited_refresh() -> None:
    readings = Readings()
    clock = _asyncio_clock(readings)

    async def on_the_loop() -> None:
        await clock.refresh()
        assert (readings.reads, readings.areads) == (1, 1)
        await clock.refresh()  # not due: no read
        readings.tick(61)
        assert clock.now() == readings.server  # carried on: the loop is never blocked
        assert readings.reads == 1
        await clock.refresh()
        assert (readings.reads, readings.areads) == (2, 2)
        assert clock.now() == readings.server

    asyncio.run(on_the_loop())
    readings.tick(61)
    assert clock.now() == readings.server  # off the loop (a sync service): read when due
    assert (readings.reads, readings.areads) == (3, 2)


def test_on_an_event_loop_no_asyncio_service_refreshes_a_due_read_is_made_at_once() -> None:
    """A blocking service called on an event loop's thread: nothing would ever await the
    refresh, so waiting for one would never follow the server again."""
    readings = Readings()
    clock = _asyncio_clock(readings)

    async def blocking_service_on_the_loop() -> None:
        clock.now()
        readings.server += timedelta(minutes=5)  # an operator set the server's clock
        readings.tick(61)
        assert clock.now() == readings.server

    asyncio.run(blocking_service_on_the_loop())
    assert (readings.reads, readings.areads) == (2, 0)


def test_coroutines_that_find_a_read_due_at_once_make_one_read() -> None:
    readings = Readings()
    clock = _asyncio_clock(readings)

    async def at_once() -> None:
        await clock.refresh()
        readings.tick(61)
        await asyncio.gather(*(clock.refresh() for _ in range(50)))

    asyncio.run(at_once())
    assert readings.areads == 2


def test_a_failed_awaited_reading_carries_on_and_a_first_one_fails_clearly() -> None:
    readings = Readings()
    readings.down = True
    clock = _asyncio_clock(readings)
    with pytest.raises(StateUnavailable):
        asyncio.run(clock.refresh())
    readings.down = False
    asyncio.run(clock.refresh())
    readings.down = True
    readings.tick(61)
    asyncio.run(clock.refresh())  # logged, carried on
    assert clock.now() == readings.server


def test_the_asyncio_service_reads_the_servers_time_only_by_awaiting() -> None:
    readings = Readings()
    blocking: list[datetime] = []

    def read() -> datetime:  # what would block the event loop
        blocking.append(readings.read())
        return blocking[-1]

    clock = ServerClock(read, timedelta(seconds=60), lambda: readings.monotonic, readings.aread)
    container = Container()
    container.config.from_dict({"backend": "memory"})
    container.clock.override(clock)
    state = container.async_state_service()

    async def messages() -> None:
        for minute in range(3):
            await state.update("+263771234567", lambda c, m=minute: c.context.update(m=m))
            async with state.message("+263771234567", f"wamid.{minute}") as msg:
                msg.conversation.context["seen"] = minute
            readings.tick(61)

    asyncio.run(messages())
    assert blocking == []
    assert readings.areads == 3
