"""The real clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class SystemClock:
    """UTC wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """Wall-clock time plus an offset that only grows: lets a demo skip ahead five minutes."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def skip(self, duration: timedelta) -> None:
        if duration < timedelta(0):
            raise ValueError("time only moves forward")
        self._offset += duration
