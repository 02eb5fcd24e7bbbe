"""Test doubles that are not backends (the fake clock) and constants the unit tests share."""

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


# A fixed instant (with microseconds) keeps every expiry test exact and repeatable.
T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+263 77 123 4567"
DIGITS = "263771234567"
OTHER_PHONE = "+263 71 999 8888"
