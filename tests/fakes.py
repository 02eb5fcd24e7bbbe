"""Test doubles that are not backends: the fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """A clock that only moves when told to, so expiry is tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        # Near the real time by default: Redis-side scores and TTLs then stay meaningful.
        self._now = start or datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self._now += timedelta(seconds=seconds, **kwargs)
        return self._now
