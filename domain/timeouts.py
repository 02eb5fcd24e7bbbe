"""How long each part of a conversation lives: the domain's deadlines, not Redis's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from vimbiso_state.domain.errors import ConfigurationError

# A slide step is this fraction of its timeout (the Redis scripts use it too).
SLIDE_STEPS = 300


def slide_step(timeout: timedelta) -> timedelta:
    """How stale a last-seen time may get before a read slides it: 1/300 of the timeout.

    Sliding on every read would make every read a write (and an AOF append) on the server.
    A part then expires between timeout - step and timeout after the last message: one
    second early at most for a five-minute session.
    """
    return timeout / SLIDE_STEPS


def token_step(token_ttl: timedelta) -> timedelta:
    """How far a token's deadline must be able to move before a message re-seals it: a tenth
    of its TTL. Re-sealing writes the whole sealed token; a member active for an hour costs
    about 20 such writes, and a token still lives at least 90% of token_ttl past its last use.
    """
    return token_ttl / 10


# The most units of work remembered per user. A message id is remembered for
# ``Timeouts.dedupe`` or until this many newer units of work of the user committed, whichever
# comes first: a burst of messages on one user then keeps a small set (Redis's compact
# encoding holds up to 128 entries), and WhatsApp redelivers within minutes, not 128
# messages later.
MAX_HANDLED_IDS = 128


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Session 5 min, token 30 min, form 10 min (from the seed); the rest is retention."""

    session: timedelta = timedelta(minutes=5)
    token: timedelta = timedelta(minutes=30)
    form: timedelta = timedelta(minutes=10)
    # Critical data (profile, current account) outlives sessions; it is dropped after this
    # long without any message so that abandoned numbers do not fill the server.
    state: timedelta = timedelta(days=1)
    # How long a handled WhatsApp message id is remembered (WhatsApp retries for hours).
    dedupe: timedelta = timedelta(days=1)
    # How long a message's handler may hold its user before its lease lapses: a little more
    # than a gunicorn sync worker's 30 s timeout, so a live handler never loses it and a
    # killed one frees the user soon after.
    lease: timedelta = timedelta(seconds=35)
    # How long a message waits for the user's previous message before UserBusy.
    lease_wait: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        for name in ("session", "token", "form", "state", "dedupe", "lease"):
            if getattr(self, name) <= timedelta(0):
                raise ConfigurationError(f"timeout {name} must be positive")
        if self.lease_wait < timedelta(0):
            raise ConfigurationError("lease_wait cannot be negative")
        if self.state < max(self.session, self.form):
            raise ConfigurationError("state retention must be at least the session and form TTL")
