"""Datetime fields that dataclasses-json and the storage codec write and read the same way."""

from __future__ import annotations

from dataclasses import field
from datetime import UTC, datetime, timedelta
from typing import Any

from dataclasses_json import config


def _encode(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _decode(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def timestamp(**kwargs: Any) -> Any:
    """A dataclass field holding an aware datetime, serialised as ISO 8601 (RFC 3339).

    dataclasses-json writes datetimes as epoch floats by default, which the fast codec would
    read back as numbers; ISO text is what both sides agree on.
    """
    return field(metadata=config(encoder=_encode, decoder=_decode), **kwargs)


def utc(value: datetime) -> datetime:
    """Reject naive datetimes: comparing naive and aware times fails at the worst moment."""
    if value.tzinfo is None:
        raise ValueError("datetimes in vimbiso-state must be timezone-aware")
    return value.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, in integers: float timestamps lose the last microsecond
    and break equality."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
