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
    Begun,
    ConversationWrite,
    EffectRecord,
    EffectStatus,
    StoredConversation,
    TokenChange,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS, Timeouts, slide_step

# Storage keeps a part a little longer than its domain deadline, as the Redis TTLs do, so that
# the domain (not the garbage collector) is what decides expiry.
GRACE = timedelta(seconds=2)
_NEVER = datetime.max.replace(tzinfo=UTC)
_STARTED = b""  # an effect's record while its outcome is unknown


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
    # The critical data's form deadline, kept beside its document (see codec.encode_stored).
    critical_form: datetime | None = None
    version: int = 0
    session: _Part | None = None
    last_seen: datetime | None = None
    form: _Part | None = None
    # Handled operation and message ids with their expiry, each in insertion order, which is
    # expiry order (one window per kind): pruning only ever looks at the front.
    ops: dict[str, datetime] = field(default_factory=dict)
    messages: dict[str, datetime] = field(default_factory=dict)
    # The message holding this user: its lease and when the lease lapses.
    lease: str | None = None
    lease_until: datetime = _NEVER
    # Effects of messages, kept for dedupe_ttl: message id -> (expiry, name -> result).
    effects: dict[str, tuple[datetime, dict[str, bytes]]] = field(default_factory=dict)
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
            self.critical_form = None
        if self.session and now >= self.session.expires_at:
            self.session, self.last_seen = None, None
        if self.form and now >= self.form.expires_at:
            self.form = None
        if self.lease is not None and now >= self.lease_until:
            self.lease, self.lease_until = None, _NEVER
        for message_id in [m for m, (until, _) in self.effects.items() if now >= until]:
            del self.effects[message_id]
        _prune(self.ops, now)
        _prune(self.messages, now)
        self.due = min(
            [part.expires_at for part in (self.critical, self.session, self.form) if part]
            + [next(iter(ids.values())) for ids in (self.ops, self.messages) if ids]
            + [until for until, _ in self.effects.values()]
            + [self.lease_until],
            default=_NEVER,
        )

    def trim(self) -> None:
        """Keep at most MAX_HANDLED_IDS ids, dropping those that expire first (as save.lua
        does): operation ids, then the oldest message ids."""
        excess = len(self.ops) + len(self.messages) - MAX_HANDLED_IDS
        for ids in (self.ops, self.messages):
            while excess > 0 and ids:
                del ids[next(iter(ids))]
                excess -= 1

    def held_by_other(self, lease: str | None, now: datetime) -> bool:
        return self.lease is not None and self.lease != lease and now < self.lease_until

    @property
    def empty(self) -> bool:
        return not (
            self.critical
            or self.session
            or self.form
            or self.ops
            or self.messages
            or self.lease
            or self.effects
        )


def _prune(handled: dict[str, datetime], now: datetime) -> None:
    """Drop expired ids; insertion order is expiry order, so only the front is looked at."""
    while handled:
        first = next(iter(handled))
        if handled[first] > now:
            return
        del handled[first]


def _stored(user: _User, message_seen: bool = False) -> StoredConversation:
    parts = codec.StoredParts()
    critical = parts.read(CriticalData, _data(user.critical), user.critical_seen)
    if critical is not None:
        critical.form_expires_at = user.critical_form
    return StoredConversation(
        critical=critical,
        session=parts.read(Session, _data(user.session), user.last_seen),
        form=parts.read(Form, _data(user.form)),
        version=user.version,
        message_seen=message_seen,
        damaged=parts.damaged,
        extras=parts.extras,
        documents=parts.documents,
    )


class MemoryConversationRepository:
    """Conversations in a dict, one lock for atomicity, TTLs through the Clock.

    Times come from the caller's ``now`` (the service's Clock); the store's own Clock is only
    for reads that carry no time (peek). Waiting for a user held by another message is a wait
    on a condition, woken when any message ends.
    """

    def __init__(
        self, clock: Clock, timeouts: Timeouts, tokens: MemoryTokenRepository | None = None
    ) -> None:
        self._clock = clock
        self._timeouts = timeouts
        # A message reads the token with its conversation and writes it with its commit.
        self._tokens = tokens
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
        # The highest version this store has given any conversation: a conversation created
        # (again, after a reset or an expiry) starts above it, so no version ever repeats.
        self._versions = 0
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)

    def _user(self, phone: PhoneNumber, now: datetime) -> _User | None:
        user = self._users.get(phone.digits)
        if user is not None:
            user.collect(now)
            if user.empty:
                del self._users[phone.digits]
                return None
        return user

    def _slide(self, user: _User, now: datetime) -> None:
        """Slide only what is still alive, never backwards and a step at a time."""
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

    def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        with self._lock:
            user = self._user(phone, now)
            if user is None:
                return StoredConversation(None, None, None, 0)
            if touch:
                self._slide(user, now)
            return _stored(user, message_id is not None and message_id in user.messages)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline (operators' tools)."""
        with self._lock:
            user = self._user(phone, self._clock.now())
            return StoredConversation(None, None, None, 0) if user is None else _stored(user)

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        return self._write(phone, write, now, lease=None, token=None)

    def delete(self, phone: PhoneNumber) -> None:
        """Forget the conversation and free the user; handled message ids and effect records
        stay, so a redelivery after a reset is still known (and a message in flight cannot
        commit: its lease is gone)."""
        with self._lock:
            user = self._users.get(phone.digits)
            if user is not None:
                # Their deadlines come with them: a new _User's is "never", and expired ids
                # would then be kept, and seen as handled, for good.
                kept = _User(messages=user.messages, effects=user.effects, due=user.due)
                kept.collect(self._clock.now())
                if kept.empty:
                    del self._users[phone.digits]
                else:
                    self._users[phone.digits] = kept
            self._ended.notify_all()

    # Messages
    def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str, lease: str, wait: timedelta
    ) -> Begun:
        with self._lock:
            user = self._user(phone, now)
            if wait > timedelta(0) and user is not None and user.held_by_other(lease, now):
                # Woken by any message's end; the caller asks again with the time left.
                self._ended.wait(wait.total_seconds())
                user = self._user(phone, now)
            if user is not None and message_id in user.messages:
                return Begun(None, duplicate=True)
            if user is not None and user.held_by_other(lease, now):
                return Begun(None, busy_for=user.lease_until - now)
            user = user or self._users.setdefault(phone.digits, _User())
            user.lease, user.lease_until = lease, now + self._timeouts.lease
            user.expect(user.lease_until)
            # No slide: the message's commit writes last-seen (a failed message moves nothing).
            token = self._tokens.get(phone) if self._tokens is not None else None
            return Begun(_stored(user), token=token)

    def commit(
        self,
        phone: PhoneNumber,
        lease: str,
        write: ConversationWrite,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        return self._write(phone, write, now, lease=lease, token=token)

    def release(self, phone: PhoneNumber, lease: str) -> None:
        with self._lock:
            user = self._users.get(phone.digits)
            if user is not None and user.lease == lease:
                user.lease, user.lease_until = None, _NEVER
            self._ended.notify_all()

    def effect_start(
        self, phone: PhoneNumber, lease: str, message_id: str, name: str, now: datetime
    ) -> EffectRecord:
        with self._lock:
            user = self._user(phone, now)
            if user is None or user.lease != lease or now >= user.lease_until:
                return EffectRecord(EffectStatus.LEASE_LOST)
            until, records = user.effects.setdefault(message_id, (now + self._timeouts.dedupe, {}))
            user.expect(until)
            if name not in records:
                records[name] = _STARTED
                return EffectRecord(EffectStatus.RUN)
            result = records[name]
            if result == _STARTED:
                return EffectRecord(EffectStatus.IN_DOUBT)
            return EffectRecord(EffectStatus.DONE, result)

    def effect_finish(
        self, phone: PhoneNumber, message_id: str, name: str, result: bytes, now: datetime
    ) -> None:
        with self._lock:
            user = self._users.setdefault(phone.digits, _User())
            until, records = user.effects.setdefault(message_id, (now + self._timeouts.dedupe, {}))
            user.expect(until)
            records[name] = bytes(result)

    def _write(
        self,
        phone: PhoneNumber,
        write: ConversationWrite,
        now: datetime,
        lease: str | None,
        token: TokenChange | None,
    ) -> WriteResult:
        t = self._timeouts
        # Encode before taking the lock: a too-large part fails here and stores nothing.
        extras, documents = write.extras, write.documents
        critical = codec.encode_stored(
            write.critical, extras.get("critical"), documents.get("critical")
        ).data
        session = codec.encode_stored(write.session, extras.get("session")).data
        form = (
            None
            if write.form is None
            else _Part(
                codec.encode_stored(write.form, extras.get("form"), documents.get("form")).data,
                write.form.expires_at + GRACE,
            )
        )
        with self._lock:
            user = self._user(phone, now) or _User()
            if lease is not None and write.message_id in user.messages:
                # A commit is applied once by its message id (as save.lua does).
                return WriteResult(WriteStatus.APPLIED, user.version)
            if lease is None and write.op_id in user.ops:
                # Applied by an earlier attempt; version 0: the caller reads it if it cares.
                return WriteResult(WriteStatus.APPLIED, 0)
            if lease is not None and (user.lease != lease or now >= user.lease_until):
                return WriteResult(WriteStatus.LEASE_LOST, user.version)
            if write.message_id is not None and write.message_id in user.messages:
                return WriteResult(WriteStatus.DUPLICATE, user.version)
            if lease is None and user.held_by_other(None, now):
                return WriteResult(WriteStatus.BUSY, user.version, user.lease_until - now)
            if user.version != write.expected_version:
                return WriteResult(WriteStatus.CONFLICT, user.version)
            user.version = user.version + 1 if user.version else self._versions + 1
            self._versions = max(self._versions, user.version)
            user.critical = _Part(critical, now + self._keep_critical)
            user.critical_seen = write.critical.last_seen_at
            user.critical_form = write.critical.form_expires_at
            user.session = _Part(session, now + self._keep_session)
            user.last_seen = write.session.last_seen_at
            user.form = form
            if lease is None:
                user.ops[write.op_id] = now + t.retry_window
            if write.message_id is not None:
                user.messages[write.message_id] = now + t.dedupe
            user.trim()
            user.expect(now + self._soonest)
            if form is not None:
                user.expect(form.expires_at)
            if lease is not None:
                user.lease, user.lease_until = None, _NEVER
                if token is not None and self._tokens is not None:
                    self._tokens.change(phone, token)
            self._users[phone.digits] = user
            if lease is not None:
                self._ended.notify_all()
            return WriteResult(WriteStatus.APPLIED, user.version)


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

    def change(self, phone: PhoneNumber, change: TokenChange) -> None:
        """A message's token change, applied with its commit."""
        if change.sealed is None:
            self.delete(phone)
        else:
            self.put(phone, change.sealed, change.ttl)
