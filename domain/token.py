"""The member's auth token: a secret with its own deadline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Token:
    """An auth token. Its value never appears in a repr, a log line or an error message."""

    value: str = field(repr=False)
    issued_at: datetime
    expires_at: datetime

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def __repr__(self) -> str:
        return f"Token(value='***', issued_at={self.issued_at!r}, expires_at={self.expires_at!r})"
