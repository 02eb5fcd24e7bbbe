"""Dict-backed repositories with the same semantics as Redis, TTLs included.

Parts are stored encoded, never as live objects, so a caller that keeps mutating an object it
saved (an aliasing bug) sees the same thing it would see on Redis: nothing changes in storage.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vimbiso_state.adapters import codec
from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    ConversationWrite,
    StoredConversation,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.timeouts import Timeouts, slide_step

# Storage keeps a part a little longer than its domain deadline, as the Redis TTLs do, so that
# the domain (not the garbage collector) is what decides expiry.
GRACE = timedelta(seconds=2)
_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Part:
    data: bytes
    expires_at: datetime


def _data(part: _Part | None) -> bytes | None:
    return part.data if part is not None else None


@dataclass(slots=True)
class _User:
    critical: _Part | None = None
    critical_seen: datetime | None = None
    version: int = 0
    session: _Part | None = None
    last_seen: datetime | None = None
    form: _Part | None = None
    # Handled operation and message ids with their expiry, each in insertion order, which is
    # expiry order (one window per kind): pruning only ever looks at the front.
    ops: dict[str, datetime] = field(default_factory=dict)
    messages: dict[str, datetime] = field(default_factory=dict)
    # Nothing here expires before this moment, so collect() has nothing to look at until then
    # (it runs twice per update). Deadlines only move later, except where expect() is told.
    due: datetime = _NEVER

    def expect(self, deadline: datetime) -> None:
        """Something added here expires at ``deadline``."""
        if deadline < self.due:
            self.due = deadline

    def collect(self, now: datetime) -> None:
        """Drop what has outlived its TTL, as Redis would."""
        if now < self.due:
            return
        if self.critical and now >= self.critical.expires_at:
            self.critical, self.critical_seen, self.version = None, None, 0
        if self.session and now >= self.session.expires_at:
            self.session, self.last_seen = None, None
        if self.form and now >= self.form.expires_at:
            self.form = None
        _prune(self.ops, now)
        _prune(self.messages, now)
        self.due = min(
            [part.expires_at for part in (self.critical, self.session, self.form) if part]
            + [next(iter(ids.values())) for ids in (self.ops, self.messages) if ids],
            default=_NEVER,
        )

    @property
    def empty(self) -> bool:
        return not (self.critical or self.session or self.form or self.ops or self.messages)


def _prune(handled: dict[str, datetime], now: datetime) -> None:
    """Drop expired ids; insertion order is expiry order, so only the front is looked at."""
    while handled:
        first = next(iter(handled))
        if handled[first] > now:
            return
        del handled[first]


def _stored(user: _User, message_seen: bool = False) -> StoredConversation:
    parts = codec.StoredParts()
    return StoredConversation(
        critical=parts.read(CriticalData, _data(user.critical), user.critical_seen),
        session=parts.read(Session, _data(user.session), user.last_seen),
        form=parts.read(Form, _data(user.form)),
        version=user.version,
        message_seen=message_seen,
        damaged=parts.damaged,
    )


class MemoryConversationRepository:
    """Conversations in a dict, one lock for atomicity, TTLs through the Clock.

    Times come from the caller's ``now`` (the service's Clock); the store's own Clock is only
    for reads that carry no time (peek).
    """

    def __init__(self, clock: Clock, timeouts: Timeouts) -> None:
        self._clock = clock
        self._timeouts = timeouts
        self._keep_critical = timeouts.state + GRACE
        self._keep_session = timeouts.session + GRACE
        # The earliest deadline a save can set, bar the form's own.
        self._soonest = min(
            self._keep_critical, self._keep_session, timeouts.retry_window, timeouts.dedupe
        )
        # As load.lua: a part slides when alive and at least a slide step old (so never
        # backwards); the bounds, computed once.
        self._state_slide = (slide_step(timeouts.state), timeouts.state)
        self._session_slide = (slide_step(timeouts.session), timeouts.session)
        self._users: dict[str, _User] = {}
        self._lock = threading.Lock()

    def _user(self, phone: PhoneNumber, now: datetime) -> _User | None:
        user = self._users.get(phone.digits)
        if user is not None:
            user.collect(now)
            if user.empty:
                del self._users[phone.digits]
                return None
        return user

    def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        with self._lock:
            user = self._user(phone, now)
            if user is None:
                return StoredConversation(None, None, None, 0)
            if touch:
                # Slide only what is still alive, never backwards and a step at a time.
                critical, session = user.critical, user.session
                if critical and user.critical_seen:
                    step, timeout = self._state_slide
                    if step <= now - user.critical_seen <= timeout:
                        user.critical_seen = now
                        critical.expires_at = now + self._keep_critical
                if session and user.last_seen:
                    step, timeout = self._session_slide
                    if step <= now - user.last_seen <= timeout:
                        user.last_seen = now
                        session.expires_at = now + self._keep_session
            return _stored(user, message_id is not None and message_id in user.messages)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline (operators' tools)."""
        with self._lock:
            user = self._user(phone, self._clock.now())
            return StoredConversation(None, None, None, 0) if user is None else _stored(user)

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        t = self._timeouts
        # Encode before taking the lock: a too-large part fails here and stores nothing.
        critical = codec.encode(write.critical)
        session = codec.encode(write.session)
        form = (
            None
            if write.form is None
            else _Part(codec.encode(write.form), write.form.expires_at + GRACE)
        )
        with self._lock:
            user = self._user(phone, now) or _User()
            if write.op_id in user.ops:
                return WriteResult(WriteStatus.APPLIED, write.expected_version + 1)
            if write.message_id is not None and write.message_id in user.messages:
                return WriteResult(WriteStatus.DUPLICATE, user.version)
            if user.version != write.expected_version:
                return WriteResult(WriteStatus.CONFLICT, user.version)
            user.version += 1
            user.critical = _Part(critical, now + self._keep_critical)
            user.critical_seen = write.critical.last_seen_at
            user.session = _Part(session, now + self._keep_session)
            user.last_seen = write.session.last_seen_at
            user.form = form
            user.ops[write.op_id] = now + t.retry_window
            if write.message_id is not None:
                user.messages[write.message_id] = now + t.dedupe
            user.expect(now + self._soonest)
            if form is not None:
                user.expect(form.expires_at)
            self._users[phone.digits] = user
            return WriteResult(WriteStatus.APPLIED, user.version)

    def delete(self, phone: PhoneNumber) -> None:
        with self._lock:
            self._users.pop(phone.digits, None)


class MemoryTokenRepository:
    """Sealed tokens in a dict, expiring through the Clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, _Part] = {}
        self._lock = threading.Lock()

    def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None:
        with self._lock:
            self._tokens[phone.digits] = _Part(bytes(sealed), self._clock.now() + ttl + GRACE)

    def get(self, phone: PhoneNumber) -> bytes | None:
        with self._lock:
            part = self._tokens.get(phone.digits)
            if part is None or self._clock.now() >= part.expires_at:
                self._tokens.pop(phone.digits, None)
                return None
            return part.data

    def delete(self, phone: PhoneNumber) -> bool:
        with self._lock:
            part = self._tokens.pop(phone.digits, None)
            # Like DEL on Redis, where an expired key is gone: it answers 0 for it.
            return part is not None and self._clock.now() < part.expires_at
