"""The memory backend's expiry index: what expiry.lua and claim.lua keep on Redis.

One entry per user and kind, scored (in microseconds) no later than its deadline; a claim
moves the score to the end of its lease, which is also its mark. The store holds its lock
around every call.
"""

from __future__ import annotations

from datetime import datetime

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
        """A commit's deadlines: the session's entry follows its deadline (an active
        member's entry is never due), the form's is no later than its deadline, none for a
        form that is gone; entries older than ``oldest`` go."""
        entry, deadline = (ExpiryKind.SESSION, digits), micros(session)
        if self._scores.get(entry, 0) < deadline:
            self._scores[entry] = deadline
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

    def drop_before(self, oldest: datetime) -> None:
        """Entries due before ``oldest`` go: an event is kept at most that long."""
        self._drop_before(micros(oldest))

    def due(self, now: datetime, most: int) -> list[tuple[Entry, int]]:
        """The oldest entries due at ``now`` (at most ``most``), with their scores."""
        due = sorted((s, e) for e, s in self._scores.items() if s <= micros(now))[:most]
        return [(entry, score) for score, entry in due]

    def set(self, entry: Entry, score: int) -> None:
        """A claim's mark (its lease end) on a due entry."""
        self._scores[entry] = score

    def settle(self, entry: Entry, deadline: datetime | None) -> None:
        """An entry that is no event: put back at its moved ``deadline``, or (None) dropped."""
        if deadline is None:
            self._scores.pop(entry, None)
        else:
            self._scores[entry] = micros(deadline)

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
