"""The member's auth token: a secret with its own deadline."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# A JSON Web Token: three base64url parts, the first a JSON object ('{"' encodes as eyJ).
JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
MASK = "********"


def mask_tokens(text: str) -> str:
    """``text`` with every JWT-shaped part replaced by asterisks."""
    return JWT_SHAPED.sub(MASK, text)


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


def token_deadline(value: str, now: datetime, ttl: timedelta) -> datetime:
    """When a token saved at ``now`` expires: after ``ttl``, or at its JWT ``exp`` if sooner."""
    deadline = now + ttl
    expiry = jwt_expiry(value)
    return deadline if expiry is None else min(deadline, expiry)


def jwt_expiry(value: str) -> datetime | None:
    """The ``exp`` claim of a JWT, or None for a token that is not a JWT or has no valid exp.

    Read without verifying the signature: the library keeps the token, it does not
    authenticate anyone with it, and an exp can only make a token expire sooner.
    """
    parts = value.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, RecursionError):  # bad base64, UTF-8 or JSON; absurd nesting
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):  # outside the years datetime can hold
        return None
