"""Dict-backed repositories with the same semantics as Redis, TTLs included.

Parts are stored encoded, never as live objects, so a caller that keeps mutating an object it
saved (an aliasing bug) sees the same thing it would see on Redis: nothing changes in storage.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vimbiso_state.adapters import codec
from vimbiso_state.adapters.memory.expiry_index import ExpiryIndex
from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.effects import Effect, InDoubt
from vimbiso_state.domain.expirations import LOOKED_AT_PER_EVENT, Due, Expiration, ExpiryKind, due
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.lifecycle import expiration_of, expiry_deadline
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    ConversationWrite,
    EffectRecord,
    EffectStatus,
    Holder,
    StoredConversation,
    TokenChange,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS, Timeouts, slide_step
from vimbiso_state.domain.timestamps import micros

# Storage keeps a part a little longer than its domain deadline, as the Redis TTLs do, so that
# the domain (not the garbage collector) is what decides expiry.
GRACE = timedelta(seconds=2)
_NEVER = datetime.max.replace(tzinfo=UTC)
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Part:
    data: bytes
    expires_at: datetime


def _data(part: _Part | None) -> bytes | None:
    return part.data if part is not None else None


@dataclass(slots=True)
class _Record:
    """An effect's record: in doubt (no result) or done (its JSON result)."""

    at: datetime  # when it started, or when its result was recorded
    result: bytes | None = None


@dataclass(slots=True)
class _Effects:
    """A user's effect records; ``epoch`` names this set of records (see Begun.effects)."""

    epoch: int
    records: dict[Effect, _Record] = field(default_factory=dict)
    expires_at: datetime = _NEVER

    def in_doubt(self) -> tuple[InDoubt, ...]:
        return tuple(
            InDoubt(e.name, e.key, r.at) for e, r in self.records.items() if r.result is None
        )


@dataclass(slots=True)
class _User:
    critical: _Part | None = None
    critical_seen: datetime | None = None
    # The critical data's form deadline and last inbound message, kept beside its document
    # (see codec.encode_stored).
    critical_form: datetime | None = None
    critical_inbound: datetime | None = None
    # The epoch of the effect records the critical data was written with (0: none).
    critical_effects: int = 0
    version: int = 0
    session: _Part | None = None
    last_seen: datetime | None = None
    form: _Part | None = None
    # Handled ids (a message id, or "~" and the lease of a one-call write), each with the
    # fence of the commit that recorded it and when; insertion order is commit order.
    handled: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    # The unit of work holding this user: its lease, its fence and when the lease lapses.
    lease: str | None = None
    fence: int = 0
    lease_until: datetime = _NEVER
    effects: _Effects | None = None

    def collect(self, now: datetime, dedupe: timedelta) -> None:
        """Drop what has outlived its TTL, as Redis would."""
        if self.critical and now >= self.critical.expires_at:
            self.critical, self.critical_seen, self.version = None, None, 0
            self.critical_form, self.critical_inbound, self.critical_effects = None, None, 0
        if self.session and now >= self.session.expires_at:
            self.session, self.last_seen = None, None
        if self.form and now >= self.form.expires_at:
            self.form = None
        if self.lease is not None and now >= self.lease_until:
            self.lease, self.lease_until = None, _NEVER
        if self.effects is not None and now >= self.effects.expires_at:
            self.effects = None
        handled = self.handled
        while handled:  # insertion order is time order: only the front can have expired
            oldest = next(iter(handled))
            if now - handled[oldest][1] <= dedupe + GRACE:
                break
            del handled[oldest]

    def held_by_other(self, lease: str | None, now: datetime) -> bool:
        return self.lease is not None and self.lease != lease and now < self.lease_until

    def handled_before(self, member: str, now: datetime, dedupe: timedelta) -> bool:
        seen = self.handled.get(member)
        return seen is not None and now - seen[1] < dedupe

    def keep_effects(self, until: datetime) -> None:
        """Effect records outlive the critical data that names them (as on Redis), unless
        in doubt, when they never expire."""
        effects = self.effects
        if effects is not None and effects.expires_at != _NEVER:
            effects.expires_at = max(effects.expires_at, until)

    @property
    def empty(self) -> bool:
        return not (
            self.critical or self.session or self.form or self.handled or self.lease or self.effects
        )


def _stored(user: _User) -> StoredConversation:
    parts = codec.StoredParts()
    critical = parts.read(CriticalData, _data(user.critical), user.critical_seen)
    if critical is not None:
        critical.form_expires_at = user.critical_form
        critical.inbound_at = user.critical_inbound
    effects = user.effects
    guards_lost = bool(user.critical_effects) and (
        effects is None or effects.epoch != user.critical_effects
    )
    return StoredConversation(
        critical=critical,
        session=parts.read(Session, _data(user.session), user.last_seen),
        form=parts.read(Form, _data(user.form)),
        version=user.version,
        damaged=parts.damaged,
        guards_lost=guards_lost and critical is not None,
        extras=parts.extras,
        documents=parts.documents,
    )


class MemoryConversationRepository:
    """Conversations in a dict, one lock for atomicity, TTLs through the Clock.

    Times come from the caller's ``now`` (the service's Clock); the store's own Clock is only
    for reads that carry no time (peek). Waiting for a user held by another unit of work is a
    wait on a condition, woken when any one ends.
    """

    def __init__(
        self, clock: Clock, timeouts: Timeouts, tokens: MemoryTokenRepository | None = None
    ) -> None:
        self._clock = clock
        self._timeouts = timeouts
        # A unit of work reads the token with its conversation and writes it with its commit.
        self._tokens = tokens or MemoryTokenRepository(clock)
        self._keep_critical = timeouts.state + GRACE
        self._keep_session = timeouts.session + GRACE
        # As load.lua: a part slides when alive and at least a slide step old (so never
        # backwards); the bounds, computed once.
        self._state_slide = (slide_step(timeouts.state), timeouts.state)
        self._session_slide = (slide_step(timeouts.session), timeouts.session)
        self._users: dict[str, _User] = {}
        # The last fence given to any unit of work: every fence (and so every version) is
        # above all before it, a user reset or expired included.
        self._fences = 0
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._pid = os.getpid()
        self._expiry = ExpiryIndex()

    def _check_process(self) -> None:
        """Warn once in a forked child (gunicorn --preload, Celery prefork): its copy of the
        store is its own, so workers no longer see each other's conversations."""
        if os.getpid() != self._pid:
            parent, self._pid = self._pid, os.getpid()
            log.warning(
                "the memory backend was built in process %d and is used in its forked child "
                "%d: state is not shared between workers (each has its own copy). Use Redis "
                "(REDIS_STATE_URL) when more than one process handles messages",
                parent,
                self._pid,
            )

    def _user(self, phone: PhoneNumber, now: datetime) -> _User | None:
        user = self._users.get(phone.digits)
        if user is not None:
            user.collect(now, self._timeouts.dedupe)
            if user.empty:
                del self._users[phone.digits]
                return None
        return user

    def _fence(self) -> int:
        self._fences += 1
        return self._fences

    def _slide(self, user: _User, now: datetime) -> None:
        """Slide only what is still alive, never backwards and a step at a time."""
        critical, session = user.critical, user.session
        if critical and user.critical_seen:
            step, timeout = self._state_slide
            if step <= now - user.critical_seen <= timeout:
                user.critical_seen = now
                critical.expires_at = now + self._keep_critical
                user.keep_effects(critical.expires_at)
        if session and user.last_seen:
            step, timeout = self._session_slide
            if step <= now - user.last_seen <= timeout:
                user.last_seen = now
                session.expires_at = now + self._keep_session
                if critical and user.critical_seen:  # as load.lua: the user's follows it
                    user.critical_seen = now
                    critical.expires_at = max(critical.expires_at, now + self._keep_critical)

    def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        self._check_process()
        with self._lock:
            user = self._user(phone, now)
            if user is None:
                return StoredConversation(None, None, None, 0)
            self._slide(user, now)
            return _stored(user)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline (operators' tools)."""
        self._check_process()
        with self._lock:
            user = self._user(phone, self._clock.now())
            return StoredConversation(None, None, None, 0) if user is None else _stored(user)

    # The unit of work
    def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None,
        lease: str,
        wait: timedelta,
    ) -> Begun:
        self._check_process()
        with self._lock:
            user = self._user(phone, now)
            if wait > timedelta(0) and user is not None and user.held_by_other(lease, now):
                # Woken by any unit of work's end; the caller asks again with the time left.
                self._ended.wait(wait.total_seconds())
                user = self._user(phone, now)
            effects = user.effects if user is not None else None
            epoch = effects.epoch if effects is not None else 0
            in_doubt = effects.in_doubt() if effects is not None else ()
            dedupe = self._timeouts.dedupe
            if message_id is not None and user and user.handled_before(message_id, now, dedupe):
                return Begun(None, duplicate=True, effects=epoch, in_doubt=in_doubt)
            if user is not None and user.held_by_other(lease, now):
                return Begun(None, busy_for=user.lease_until - now)
            user = user or self._users.setdefault(phone.digits, _User())
            if user.lease != lease:  # not a retry of this begin
                user.lease, user.fence = lease, self._fence()
            user.lease_until = now + self._timeouts.lease
            # No slide: the commit writes last-seen (a failed unit of work moves nothing).
            return Begun(
                _stored(user),
                token=self._tokens.get(phone),
                fence=user.fence,
                effects=epoch,
                in_doubt=in_doubt,
            )

    def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        # Encode before taking the lock: a too-large part fails here and stores nothing.
        parts = None if write is None else self._encoded(write)
        member = message_id if message_id is not None else "~" + holder.lease
        with self._lock:
            user = self._user(phone, now) or _User()
            if user.lease != holder.lease or user.fence != holder.fence:
                # Applied by an earlier attempt whose answer was lost: its fence is recorded.
                applied = user.handled.get(member, (0,))[0] == holder.fence
                status = WriteStatus.APPLIED if applied else WriteStatus.LEASE_LOST
                return WriteResult(status, holder.fence if applied else 0)
            if write is not None and parts is not None:
                self._write(user, holder, write, parts, now)
                self._expiry.noted(
                    phone.digits,
                    write.session.last_seen_at + self._timeouts.session,
                    write.form.expires_at if write.form is not None else None,
                    now - self._timeouts.dedupe,
                )
            if len(user.handled) >= MAX_HANDLED_IDS:  # make room first: this id is kept
                for oldest in list(user.handled)[: len(user.handled) - MAX_HANDLED_IDS + 1]:
                    del user.handled[oldest]
            user.handled[member] = (holder.fence, now)
            if token is not None:
                self._tokens.change(phone, token)
            user.lease, user.lease_until = None, _NEVER
            self._users[phone.digits] = user
            self._ended.notify_all()
            return WriteResult(WriteStatus.APPLIED, holder.fence)

    def _encoded(self, write: ConversationWrite) -> tuple[bytes, bytes, bytes | None]:
        extras, documents = write.extras, write.documents
        critical = codec.encode_stored(
            write.critical, extras.get("critical"), documents.get("critical")
        ).data
        session = codec.encode_stored(write.session, extras.get("session")).data
        form = None
        if write.form is not None:
            form_extras, form_stored = extras.get("form"), documents.get("form")
            form = codec.encode_stored(write.form, form_extras, form_stored).data
        return critical, session, form

    def _write(
        self,
        user: _User,
        holder: Holder,
        write: ConversationWrite,
        parts: tuple[bytes, bytes, bytes | None],
        now: datetime,
    ) -> None:
        critical, session, form = parts
        user.version = holder.fence
        user.critical = _Part(critical, now + self._keep_critical)
        user.critical_seen = write.critical.last_seen_at
        user.critical_form = write.critical.form_expires_at
        user.critical_inbound = write.critical.inbound_at
        # The records as begun; ones the unit of work started itself when there were none.
        current = user.effects.epoch if user.effects is not None else 0
        user.critical_effects = holder.effects or current
        user.keep_effects(user.critical.expires_at)
        user.session = _Part(session, now + self._keep_session)
        user.last_seen = write.session.last_seen_at
        user.form = None
        if form is not None and write.form is not None:
            # Kept past its deadline for the event that tells the member, never longer than
            # the critical data that names it (as on Redis).
            until = write.form.expires_at + self._timeouts.dedupe + GRACE
            user.form = _Part(form, min(until, user.critical.expires_at))

    def release(self, phone: PhoneNumber, lease: str) -> None:
        with self._lock:
            user = self._users.get(phone.digits)
            if user is not None and user.lease == lease:
                user.lease, user.lease_until = None, _NEVER
            self._ended.notify_all()

    def forget(self, phone: PhoneNumber) -> None:
        """Forget the conversation and the token and free the user; handled ids and effect
        records stay, so a redelivery after a reset is still known (and a unit of work in
        flight cannot commit: its lease is gone)."""
        with self._lock:
            user = self._users.get(phone.digits)
            if user is not None:
                kept = _User(handled=user.handled, effects=user.effects)
                self._users[phone.digits] = kept
            self._tokens.delete(phone)
            self._ended.notify_all()

    def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        with self._lock:
            user = self._user(phone, now)
            if user is None or user.lease != holder.lease or user.fence != holder.fence:
                return EffectRecord(EffectStatus.LEASE_LOST)
            effects = user.effects
            if holder.effects and (effects is None or effects.epoch != holder.effects):
                return EffectRecord(EffectStatus.RECORDS_LOST)
            if effects is not None:
                self._prune(effects, now)
                record = effects.records.get(effect)
                if record is not None:
                    if record.result is None:
                        return EffectRecord(EffectStatus.IN_DOUBT)
                    return EffectRecord(EffectStatus.DONE, record.result)
            else:
                effects = user.effects = _Effects(holder.fence)
                if user.critical is not None:
                    user.critical_effects = effects.epoch
            effects.records[effect] = _Record(now)
            effects.expires_at = _NEVER  # in doubt until settled
            return EffectRecord(EffectStatus.RUN)

    def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        with self._lock:
            user = self._user(phone, now) or self._users.setdefault(phone.digits, _User())
            if user.effects is None:
                # Lost (or never there): new records, which the critical data does not name.
                user.effects = _Effects(self._fence())
            effects = user.effects
            record = effects.records.get(effect)
            if settle and record is not None and record.result is not None:
                return EffectRecord(EffectStatus.DONE, record.result)
            effects.records[effect] = _Record(now, bytes(result))
            if not effects.in_doubt():
                until = now + self._timeouts.dedupe + GRACE
                if user.critical is not None:
                    until = max(until, user.critical.expires_at)
                effects.expires_at = until
            return EffectRecord(EffectStatus.DONE, bytes(result))

    def _prune(self, effects: _Effects, now: datetime) -> None:
        """Drop results older than dedupe_ttl (an effect in doubt stays until settled)."""
        dedupe = self._timeouts.dedupe
        for effect, record in list(effects.records.items()):
            if record.result is not None and now - record.at > dedupe:
                del effects.records[effect]

    # Expiry events
    def claim(self, now: datetime, limit: int, lease: timedelta) -> list[tuple[Claim, Expiration]]:
        with self._lock:
            self._expiry.drop_before(now - self._timeouts.dedupe)
            return self._due(now, limit, micros(now + lease))

    def due(self, now: datetime, limit: int) -> list[Expiration]:
        """Up to ``limit`` due events, taken by nobody: nothing is written."""
        with self._lock:
            return [event for _, event in self._due(now, limit, None)]

    def _due(self, now: datetime, limit: int, mark: int | None) -> list[tuple[Claim, Expiration]]:
        """The due events of the oldest entries, each checked against its conversation; with
        a ``mark`` (a claim's lease end) they are claimed, the entries whose deadline moved
        are put back and those with nothing pending dropped."""
        taken: list[tuple[Claim, Expiration]] = []
        for entry, score in self._expiry.due(now, limit * LOOKED_AT_PER_EVENT):
            kind, digits = entry
            user = self._user(PhoneNumber(digits), now)
            stored = _stored(user) if user is not None else None
            deadline = None if stored is None else expiry_deadline(stored, kind, self._timeouts)
            outcome = due(deadline, now)
            if outcome is Due.DUE:
                assert deadline is not None and stored is not None
                if mark is not None:
                    self._expiry.set(entry, mark)
                claim = Claim(digits, kind, score if mark is None else mark, score)
                taken.append((claim, expiration_of(digits, kind, stored, deadline, score)))
                if len(taken) == limit:
                    break
            elif mark is not None:
                self._expiry.settle(entry, deadline if outcome is Due.LATER else None)
        return taken

    def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        with self._lock:
            for claim in claims:
                if not self._expiry.claimed(claim):
                    continue
                self._expiry.drop(claim)
                user = self._users.get(claim.digits)
                if user is None or claim.kind is not ExpiryKind.FORM:
                    continue
                if user.critical_form is not None and user.critical_form <= now:
                    user.form = None  # the member was told: the expired form is done with

    def expiry_counts(self, now: datetime) -> tuple[int, int]:
        """Index entries not yet due, and due ones nobody took yet."""
        with self._lock:
            return self._expiry.counts(now)


class MemoryTokenRepository:
    """Sealed tokens in a dict, expiring through the Clock; written by commits."""

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
        """A commit's token change."""
        if change.sealed is None:
            self.delete(phone)
        else:
            self.put(phone, change.sealed, change.ttl)
