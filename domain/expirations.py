"""Expiry events: a form or a session whose deadline passed, for the bot to tell the member.

The stores keep an index of deadlines (a hint, possibly early: a deadline only ever moves
later); what an entry means is decided against the conversation itself when it comes due, by
the rule below, the same on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# Index entries a poll may look at for each event it may hand out: on the way it puts back the
# entries whose deadline moved and drops those with nothing pending, so that a poll's work
# stays bounded when many of the entries due are no event.
LOOKED_AT_PER_EVENT = 4


class ExpiryKind(StrEnum):
    FORM = "form"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class Expiration:
    """One expiry to tell the member about: an unfinished form (an offer never confirmed) or
    a session that timed out. ``window_closes_at`` says whether free text may still be sent
    (WhatsApp's 24-hour window) or only a template."""

    phone: str  # canonical E.164 digits
    kind: ExpiryKind
    expired_at: datetime
    window_closes_at: datetime | None
    name: str | None = None  # the form's name
    answers: dict[str, str] = field(default_factory=dict)  # the form's answers so far
    # Handed out before, to a consumer that failed or died before acknowledging it.
    redelivered: bool = False


class Due(StrEnum):
    """What a due index entry means once checked against the conversation."""

    GONE = "gone"  # nothing of that kind is pending (completed, replaced, reset): drop it
    LATER = "later"  # the deadline moved (the member wrote again): look again then
    DUE = "due"  # it expired and nobody was told yet: an event


def due(deadline: datetime | None, now: datetime) -> Due:
    """The rule every backend applies to an entry that came due."""
    if deadline is None:
        return Due.GONE
    return Due.LATER if deadline > now else Due.DUE
