"""The memory backend's expiry index: what expiry.lua and claim.lua keep on Redis.

One entry per user and kind, scored (in microseconds) no later than its deadline; a claim
moves the score to the end of its lease, which is also its mark. The store holds its lock
around every call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from vimbiso_state.domain.expirations import ExpiryKind
from vimbiso_state.domain.ports import Claim
from vimbiso_state.domain.timestamps import micros

Entry = tuple[ExpiryKind, str]


# Commits between two sweeps of entries past the dedupe window (a sweep looks at them all).
SWEEP_EVERY = 1024


class ExpiryIndex:
    def __init__(self) -> None:
        self._scores: dict[Entry, int] = {}
        self._until_sweep = SWEEP_EVERY

    def __len__(self) -> int:
        return len(self._scores)

    def noted(
        self, digits: str, session: datetime, form: datetime | None, oldest: datetime
    ) -> None:
        """A commit's deadlines: an entry no later than each, none for a form that is gone;
        entries older than ``oldest`` go."""
        self._at_most((ExpiryKind.SESSION, digits), micros(session))
        if form is None:
            self._scores.pop((ExpiryKind.FORM, digits), None)
        else:
            self._at_most((ExpiryKind.FORM, digits), micros(form))
        self._until_sweep -= 1
        if not self._until_sweep:
            self._until_sweep = SWEEP_EVERY
            self._drop_before(micros(oldest))

    def _at_most(self, entry: Entry, score: int) -> None:
        current = self._scores.get(entry)
        if current is None or score < current:
            self._scores[entry] = score

    def _drop_before(self, score: int) -> None:
        for entry in [e for e, s in self._scores.items() if s < score]:
            del self._scores[entry]

    def claim(self, now: datetime, limit: int, lease: timedelta, oldest: datetime) -> list[Claim]:
        self._drop_before(micros(oldest))
        due = sorted((s, e) for e, s in self._scores.items() if s <= micros(now))[:limit]
        mark = micros(now + lease)
        for _, entry in due:
            self._scores[entry] = mark
        return [Claim(digits, kind, mark, score) for score, (kind, digits) in due]

    def due(self, now: datetime, limit: int) -> list[Claim]:
        """The entries due at ``now``, untouched."""
        due = sorted((s, e) for e, s in self._scores.items() if s <= micros(now))[:limit]
        return [Claim(digits, kind, score, score) for score, (kind, digits) in due]

    def claimed(self, claim: Claim) -> bool:
        """Whether the entry still carries this claim's mark."""
        return self._scores.get((claim.kind, claim.digits)) == claim.mark

    def drop(self, claim: Claim) -> None:
        self._scores.pop((claim.kind, claim.digits), None)

    def put_back(self, claim: Claim, deadline: datetime) -> None:
        self._scores[(claim.kind, claim.digits)] = micros(deadline)

    def counts(self, now: datetime) -> tuple[int, int]:
        """Entries not yet due, and due ones (overdue: nobody took them yet)."""
        due = sum(1 for score in self._scores.values() if score <= micros(now))
        return len(self._scores) - due, due
