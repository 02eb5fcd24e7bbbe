"""How a conversation is laid out in Redis, and the script calls that read and write it.

Pure: no I/O. The sync, async and cluster repositories all build their calls and read their
replies here, so the stored format has one definition.

Layout (every key carries the phone's hash tag):
- ``user:{p}:state``: last-seen, version, the form's deadline, the effect records' epoch and
  the last inbound message (16 digits each), then the JSON of the critical data (0.1 wrote
  last-seen and a 12-digit version, 0.2 the first three numbers; both are read);
- ``session:{p}:data``: last-seen (16 digits) + JSON of the session;
- ``form:{p}:data``: JSON of the form;
- ``handled:{p}``: sorted set of the ids of the user's last units of work (a digest of the
  message id, or of a one-call write's lease), each scored by its commit's fence;
- ``effects:{p}``: hash of the user's effect records (see effect.lua);
- ``lease:{p}`` (and ``:waiters``, ``:wake``): the unit of work holding the user;
- ``expiry:{...}``: the expiry index: a sorted set of ``s:<digits>`` and ``f:<digits>`` (a
  session's, a form's), scored no later than its deadline; one partition per hash slot on a
  cluster (partitions.py).
Plain strings, not hashes, for the documents: a hash with a value over 64 bytes leaves the
compact listpack encoding and costs twice the memory, and the fixed-width prefix lets a script
slide the last-seen time with SETRANGE instead of rewriting the document.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec

from vimbiso_state.adapters import codec
from vimbiso_state.domain.conversation import CriticalData, Session, window_closes_at
from vimbiso_state.domain.effects import Effect, InDoubt
from vimbiso_state.domain.expirations import Expiration, ExpiryKind
from vimbiso_state.domain.form import Form
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
from vimbiso_state.domain.timestamps import from_micros, micros

# TTLs are set a little past the domain's deadline: Redis only collects garbage, the domain
# decides what has expired.
GRACE_MS = 2000
SEEN = 16  # width of the last-seen prefix, and of each number after it
# Last-seen, version, the form's deadline, the effect records' epoch, the last inbound message.
HEADER = 5 * SEEN
_OLD_VERSION = 12  # 0.1 wrote last-seen and a 12-digit version, the form's deadline in JSON
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COMMITTED = {b"ok": WriteStatus.APPLIED, b"applied": WriteStatus.APPLIED}
_EFFECTS = {
    b"run": EffectStatus.RUN,
    b"done": EffectStatus.DONE,
    b"in_doubt": EffectStatus.IN_DOUBT,
    b"lease_lost": EffectStatus.LEASE_LOST,
    b"records_lost": EffectStatus.RECORDS_LOST,
}


def micros_of(duration: timedelta) -> int:
    return (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds


def px(duration: timedelta) -> int:
    """A TTL in milliseconds for a part whose domain deadline is ``duration`` away."""
    return max(1, micros_of(duration) // 1000) + GRACE_MS


def _micros_or_zero(moment: datetime | None) -> int:
    return 0 if moment is None else micros(moment)


def _digest(text: str, size: int) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:size]


def handled_member(message_id: str | None, lease: str) -> bytes:
    """A unit of work's id in the handled set: its message id, or a one-call write's lease.
    8 bytes of digest: caller-supplied ids (WhatsApp's are 60 characters) stay small and
    inert, and the set stays in Redis's compact encoding."""
    return _digest("m" + message_id if message_id is not None else "l" + lease, 8)


def legacy_digest(message_id: str) -> bytes:
    """The digest 0.2 named a message's effect records by."""
    return _digest(message_id, 16)


def effect_field(effect: Effect) -> str:
    return f"{effect.name}:{_digest(effect.key, 12).hex()}"


def _header(value: bytes, width: int) -> int | None:
    """The fixed-width number a value starts with, or None if the value is damaged."""
    head = value[:width]
    return int(head) if len(head) == width and head.isdigit() else None


class UserHeader(NamedTuple):
    seen: int
    version: int
    form_at: int | None  # the form's deadline (µs; None: in the JSON, as 0.1 wrote it)
    effects: int  # the epoch of the effect records that guard this conversation (0: none)
    inbound: int  # the member's last inbound message (µs; 0: none)
    start: int  # where the JSON starts; HEADER in the current layout


def _user_header(value: bytes) -> UserHeader | None:
    """The header of a user value, in any layout a release wrote; None if damaged."""
    seen = _header(value, SEEN)
    if seen is None:
        return None
    if value[SEEN + _OLD_VERSION : SEEN + _OLD_VERSION + 1] == b"{":  # 0.1
        version = _header(value[SEEN:], _OLD_VERSION)
        return None if version is None else UserHeader(seen, version, None, 0, 0, 28)
    numbers = [_header(value[at:], SEEN) for at in range(SEEN, HEADER, SEEN)]
    if value[3 * SEEN : 3 * SEEN + 1] == b"{":  # 0.2: no epoch, no inbound message
        version, form_at = numbers[0], numbers[1]
        if version is None or form_at is None:
            return None
        return UserHeader(seen, version, form_at, 0, 0, 3 * SEEN)
    version, form_at, effects, inbound = numbers
    if version is None or form_at is None or effects is None or inbound is None:
        return None
    return UserHeader(seen, version, form_at, effects, inbound, HEADER)


_msgpack = msgspec.msgpack.Encoder()


class ConversationCalls:
    """Arguments of the scripts, and what their replies mean."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._load_constants = [
            micros_of(timeouts.state),
            micros_of(timeouts.session),
            micros_of(slide_step(timeouts.state)),
            micros_of(slide_step(timeouts.session)),
            px(timeouts.state),
            px(timeouts.session),
        ]
        self.lease_px = max(1, micros_of(timeouts.lease) // 1000)
        self._dedupe_us = micros_of(timeouts.dedupe)
        self._session_us = micros_of(timeouts.session)
        # How far past what a write needs a TTL is extended, so that most writes move none.
        self._state_slack = micros_of(slide_step(timeouts.state)) // 1000
        self._dedupe_slack = micros_of(slide_step(timeouts.dedupe)) // 1000
        self._effects_px = px(timeouts.dedupe)

    # Reads
    def load_args(self, now: datetime, touch: bool) -> list[Any]:
        return [b"%016d" % micros(now), b"1" if touch else b"0", *self._load_constants]

    def peek_args(self) -> list[Any]:
        return self.load_args(_EPOCH, False)

    def loaded(self, reply: list[Any], now: datetime) -> StoredConversation:
        """The conversation in load.lua's reply."""
        user, session, form, touched, effects = reply
        return self._parts(user, session, form, int(touched), now, int(effects))

    def peeked(self, reply: list[Any]) -> StoredConversation:
        """What load.lua found without touching, for operators: nothing was slid."""
        # Nothing was touched (flags 0), so ``now`` is never used: last-seen comes from the
        # stored prefixes.
        return self.loaded(reply, _EPOCH)

    # The unit of work
    def begin_args(
        self,
        now: datetime,
        message_id: str | None,
        lease: str,
        waited: bool,
        read_here: bool = False,
    ) -> list[Any]:
        return [
            micros(now),
            b"" if message_id is None else handled_member(message_id, lease),
            lease,
            self.lease_px,
            b"1" if waited else b"0",
            self._dedupe_us,
            b"1" if read_here else b"0",
        ]

    def began(self, reply: list[Any], values: list[Any] | None, now: datetime) -> Begun:
        """What begin.lua found, with the parts it read (``values`` None) or the MGET
        pipelined after it read (user, session, form, token)."""
        status, fence, effects, doubts = reply[:4]
        in_doubt = tuple(_in_doubt(record) for record in doubts)
        if status == b"duplicate":
            return Begun(None, duplicate=True, effects=int(effects), in_doubt=in_doubt)
        if status == b"busy":
            return Begun(None, busy_for=timedelta(milliseconds=max(0, int(reply[4]))))
        user, session, form, token = reply[4:8] if values is None else values
        stored = self._parts(user, session, form, 0, now, int(effects))
        return Begun(
            stored,
            token=None if token == b"!" else token,
            fence=int(fence),
            effects=int(effects),
            in_doubt=in_doubt,
        )

    def commit_args(
        self,
        digits: str,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> list[Any]:
        """commit.lua's arguments."""
        t = self._timeouts
        sealed, token_px = b"", 0
        if token is not None:
            sealed = b"-" if token.sealed is None else token.sealed
            token_px = px(token.ttl)
        parts = _Parts.of(write, now, t) if write is not None else _NO_PARTS
        session_deadline = 0
        if write is not None:
            session_deadline = micros(write.session.last_seen_at) + self._session_us
        numbers = _msgpack.encode(
            (
                holder.fence,
                px(t.state),
                px(t.session),
                parts.form_px,
                px(t.dedupe),
                token_px,
                int(write is not None),
                int(parts.critical_as_stored),
                int(parts.form_as_stored),
                MAX_HANDLED_IDS,
                self._state_slack,
                self._dedupe_slack,
                holder.effects,
                session_deadline,
                micros(now) - self._dedupe_us,
            )
        )
        return [
            numbers,
            parts.header,
            handled_member(message_id, holder.lease),
            parts.critical,
            parts.session,
            parts.form,
            f"{holder.lease}:{holder.fence}",
            sealed,
            digits,
        ]

    @staticmethod
    def committed(reply: list[Any]) -> WriteResult:
        status = _COMMITTED.get(reply[0])
        if status is None:
            return WriteResult(WriteStatus.LEASE_LOST, 0)
        return WriteResult(status, int(reply[1]))

    # Effects
    def effect_start_args(self, holder: Holder, effect: Effect, now: datetime) -> list[Any]:
        # 0.2 kept a message's effects under its own key: an intent that is a message id may
        # have been started there (effect.lua looks at KeySchema's legacy key).
        return [
            b"start",
            effect_field(effect),
            f"{effect.name}\n{effect.key}",
            micros(now),
            f"{holder.lease}:{holder.fence}",
            holder.effects,
            holder.fence,
            self._effects_px,
            self._dedupe_us,
            effect.name,
        ]

    def effect_finish_args(
        self, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> list[Any]:
        kind = b"settle" if settle else b"finish"
        field = effect_field(effect)
        return [kind, field, result, micros(now), b"", 0, 0, self._effects_px, 0, b""]

    @staticmethod
    def effect_record(reply: list[Any]) -> EffectRecord:
        return EffectRecord(_EFFECTS[reply[0]], reply[1] if len(reply) > 1 else None)

    def _parts(
        self,
        user: bytes | None,
        session: bytes | None,
        form: bytes | None,
        touched: int,
        now: datetime,
        effects: int,
    ) -> StoredConversation:
        parts = codec.StoredParts()
        critical = stored_session = None
        version = 0
        guards_lost = False
        if user is not None:
            header = None if user == b"!" else _user_header(user)
            if header is None:
                parts.discard(CriticalData, user, "damaged last-seen and version header")
            else:
                version = header.version
                seen = now if touched & 1 else from_micros(header.seen)
                critical = parts.read(CriticalData, memoryview(user)[header.start :], seen)
                if header.start != HEADER:
                    # An older layout: the next write rewrites it whole, never its header only.
                    parts.documents.pop("critical", None)
                if critical is not None and header.form_at is not None:
                    # The header holds the form's deadline and the last inbound message, so
                    # that an answer (which moves them) rewrites 80 bytes, not the profile.
                    critical.form_expires_at = (
                        from_micros(header.form_at) if header.form_at else None
                    )
                    critical.inbound_at = from_micros(header.inbound) if header.inbound else None
                guards_lost = critical is not None and header.effects not in (0, effects)
        if session is not None:
            header_seen = None if session == b"!" else _header(session, SEEN)
            if header_seen is None:
                parts.discard(Session, session, "damaged last-seen header")
            else:
                seen = now if touched & 2 else from_micros(header_seen)
                stored_session = parts.read(Session, memoryview(session)[SEEN:], seen)
        stored_form = None
        if form == b"!":
            parts.discard(Form, form, "a key of another type")
        elif form is not None:
            stored_form = parts.read(Form, form)
        return StoredConversation(
            critical=critical,
            session=stored_session,
            form=stored_form,
            version=version,
            damaged=parts.damaged,
            guards_lost=guards_lost,
            extras=parts.extras,
            documents=parts.documents,
        )


def _in_doubt(record: bytes) -> InDoubt:
    """An in-doubt record: '?', when it started (16 digits), its name and key, one a line."""
    name, _, key = record[17:].decode().partition("\n")
    return InDoubt(name, key, from_micros(int(record[1:17])))


class _Parts(NamedTuple):
    """A write's parts as commit.lua takes them."""

    header: bytes
    critical: bytes
    critical_as_stored: bool
    session: bytes
    form: bytes
    form_as_stored: bool
    form_px: int

    @classmethod
    def of(cls, write: ConversationWrite, now: datetime, timeouts: Timeouts) -> _Parts:
        extras, documents = write.extras, write.documents
        form = codec.Encoded(b"", False)
        form_px = 0
        if write.form is not None:
            form = codec.encode_stored(write.form, extras.get("form"), documents.get("form"))
            # Kept past its deadline, for the event that tells the member it expired (an
            # acknowledged event deletes it; events are kept at most dedupe_ttl), never
            # longer than the critical data that names it.
            keep = min(write.form.expires_at - now + timeouts.dedupe, timeouts.state)
            form_px = px(keep)
        session = b"%016d%b" % (
            micros(write.session.last_seen_at),
            codec.encode_stored(write.session, extras.get("session")).data,
        )
        critical = codec.encode_stored(
            write.critical, extras.get("critical"), documents.get("critical")
        )
        header = b"%016d%016d%016d" % (
            micros(write.critical.last_seen_at),
            _micros_or_zero(write.critical.form_expires_at),
            _micros_or_zero(write.critical.inbound_at),
        )
        # A part byte for byte as stored goes without its JSON: the script moves its header
        # and TTL only.
        return cls(
            header,
            b"" if critical.unchanged else critical.data,
            critical.unchanged,
            session,
            b"" if form.unchanged else form.data,
            form.unchanged,
            form_px,
        )


_NO_PARTS = _Parts(b"", b"", False, b"", b"", True, 0)  # a commit of the token alone


class ExpiryCalls:
    """Arguments of claim.lua and expiry.lua, and what their replies mean."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._dedupe_us = micros_of(timeouts.dedupe)
        self._session_us = micros_of(timeouts.session)

    def claim_args(
        self, now: datetime, limit: int, lease: timedelta, peek: bool = False
    ) -> list[Any]:
        at = micros(now)
        mode = b"peek" if peek else b"claim"
        return [at, at + micros_of(lease), limit, at - self._dedupe_us, mode]

    @staticmethod
    def entries(reply: list[Any]) -> list[Claim]:
        """Due entries claim.lua only read: each with its score as mark and previous score."""
        return [
            Claim(member.decode()[2:], EXPIRY_KINDS[member.decode()[0]], int(score), int(score))
            for member, score in zip(reply[::2], (float(s) for s in reply[1::2]), strict=True)
        ]

    @staticmethod
    def claims(reply: list[Any], now: datetime, lease: timedelta) -> list[Claim]:
        """The entries claim.lua took: member, score before, member, score..."""
        mark = micros(now) + micros_of(lease)
        claims = []
        for member, score in zip(reply[::2], reply[1::2], strict=True):
            kind, _, digits = member.decode().partition(":")
            claims.append(Claim(digits, EXPIRY_KINDS[kind], mark, int(float(score))))
        return claims

    def check_args(self, claim: Claim, now: datetime) -> list[Any]:
        return [b"check", _member(claim), claim.mark, micros(now), self._session_us]

    @staticmethod
    def ack_args(claim: Claim, now: datetime) -> list[Any]:
        return [b"ack", _member(claim), claim.mark, micros(now), 0]

    @staticmethod
    def checked(claim: Claim, reply: list[Any]) -> Expiration | None:
        """The event in expiry.lua's answer to a check, or None (gone, or later)."""
        if reply[0] != b"due":
            return None
        deadline, inbound, document = int(reply[1]), int(reply[2]), reply[3]
        form = codec.decode_stored(Form, document) if document else None
        return Expiration(
            phone=claim.digits,
            kind=claim.kind,
            expired_at=from_micros(deadline),
            window_closes_at=window_closes_at(from_micros(inbound) if inbound else None),
            name=form.name if form is not None else None,
            answers=dict(form.values) if form is not None else {},
            redelivered=claim.previous > deadline,
        )


EXPIRY_KINDS = {"f": ExpiryKind.FORM, "s": ExpiryKind.SESSION}  # an index member's first letter


def _member(claim: Claim) -> str:
    return f"{claim.kind.value[0]}:{claim.digits}"
