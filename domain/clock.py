"""The Clock port: every expiry decision asks it for the time, so tests never sleep."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable


class Clock(Protocol):
    """Gives the current time as a timezone-aware UTC datetime."""

    def now(self) -> datetime: ...


@runtime_checkable
class RefreshedClock(Clock, Protocol):
    """A clock that keeps a remote time (the server's): the asyncio service awaits
    ``refresh()`` before each operation, so that ``now()`` needs no I/O on the event loop."""

    async def refresh(self) -> None: ...
