"""How a conversation is laid out in Redis, and the script calls that read and write it.

Pure: no I/O. The sync, async and cluster repositories all build their calls and read their
replies here, so the stored format has one definition.

Layout (every key carries the phone's hash tag):
- ``user:{p}:state``: last-seen (16 digits, microseconds) + version (16 digits) + JSON of the
  critical data (0.1 wrote a 12-digit version; both are read);
- ``session:{p}:data``: last-seen (16 digits) + JSON of the session;
- ``form:{p}:data``: JSON of the form;
- ``handled:{p}:ids``: sorted set of operation and message ids, scored by their expiry;
- ``lease:{p}`` (and ``:waiters``, ``:wake``): the message holding the user;
- ``effects:{p}:<message digest>``: a hash of one message's effects.
Plain strings, not hashes: a hash with a value over 64 bytes leaves the compact listpack
encoding and costs twice the memory, and the fixed-width prefix lets a script slide the
last-seen time with SETRANGE instead of rewriting the document.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec

from vimbiso_state.adapters import codec
from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.lifecycle import resume
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

# TTLs are set a little past the domain's deadline: Redis only collects garbage, the domain
# decides what has expired.
GRACE_MS = 2000
SEEN = 16  # width of the last-seen prefix
VERSION = 16  # width of the version after it, in the user value
FORM_AT = 16  # width of the form's deadline after that (zeros: no form)
HEADER = SEEN + VERSION + FORM_AT
_OLD_VERSION = 12  # 0.1 wrote last-seen and a 12-digit version, the form's deadline in JSON
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS = {
    b"ok": WriteStatus.APPLIED,
    b"applied": WriteStatus.APPLIED,
    b"conflict": WriteStatus.CONFLICT,
    b"duplicate": WriteStatus.DUPLICATE,
    b"busy": WriteStatus.BUSY,
    b"lease_lost": WriteStatus.LEASE_LOST,
}
_EFFECTS = {
    b"run": EffectStatus.RUN,
    b"done": EffectStatus.DONE,
    b"in_doubt": EffectStatus.IN_DOUBT,
    b"lease_lost": EffectStatus.LEASE_LOST,
}


def micros(moment: datetime) -> int:
    # Integer arithmetic: float timestamps lose the last microsecond and break equality.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_of(duration: timedelta) -> int:
    return (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def px(duration: timedelta) -> int:
    """A TTL in milliseconds for a part whose domain deadline is ``duration`` away."""
    return max(1, micros_of(duration) // 1000) + GRACE_MS


def _micros_or_zero(moment: datetime | None) -> int:
    return 0 if moment is None else micros(moment)


def message_digest(message_id: str) -> bytes:
    # WhatsApp ids are long and caller-supplied: a 16-byte digest keeps keys and the handled
    # set small and inert.
    return hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).digest()[:16]


def message_member(message_id: str) -> bytes:
    return b"m" + message_digest(message_id)


def op_member(op_id: str) -> bytes:
    return b"o" + op_id.encode()


def _header(value: bytes, width: int) -> int | None:
    """The fixed-width number a value starts with, or None if the value is damaged."""
    head = value[:width]
    return int(head) if len(head) == width and head.isdigit() else None


class UserHeader(NamedTuple):
    seen: int
    version: int
    form_at: int | None  # the form's deadline (µs; None: in the JSON, as 0.1 wrote it)
    start: int  # where the JSON starts


def _user_header(value: bytes) -> UserHeader | None:
    """The header of a user value; None if damaged."""
    seen = _header(value, SEEN)
    if value[SEEN + _OLD_VERSION : SEEN + _OLD_VERSION + 1] == b"{":
        version = _header(value[SEEN:], _OLD_VERSION)
        if seen is None or version is None:
            return None
        return UserHeader(seen, version, None, SEEN + _OLD_VERSION)
    version = _header(value[SEEN:], VERSION)
    form_at = _header(value[SEEN + VERSION :], FORM_AT)
    if seen is None or version is None or form_at is None:
        return None
    return UserHeader(seen, version, form_at, HEADER)


def user_value(seen_and_form: bytes, version: int, critical: bytes) -> bytes:
    """A user value as save.lua writes it: last-seen, version, form's deadline, JSON."""
    return b"%b%016d%b%b" % (seen_and_form[:SEEN], version, seen_and_form[SEEN:], critical)


# How long what this process last read or wrote for a user is trusted by the next write.
RECENT = timedelta(seconds=2)


class RecentValues:
    """The stored values of the conversations this process read or wrote a moment ago.

    A write reads the conversation, changes it and compares-and-sets it. When this process
    read or wrote that conversation a moment ago (``start`` then ``update`` in one webhook,
    or several updates in a row), the values it holds are almost always still the stored
    ones, and when they are not the version check fails and the write reads again, as on any
    conflict. So such a write skips its read: a message costs one round trip less.
    """

    def __init__(
        self, size: int = 4096, max_bytes: int = 16 * 1024 * 1024, max_age: timedelta = RECENT
    ) -> None:
        # Bounded in users and in bytes: documents may be up to 64 KB each.
        self._size = size
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._values: dict[str, tuple[datetime, list[bytes | None], int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, digits: str, values: list[bytes | None], at: datetime) -> None:
        weight = sum(len(value) for value in values if value is not None)
        with self._lock:
            self._drop(digits)
            self._values[digits] = (at, values, weight)
            self._bytes += weight
            while len(self._values) > self._size or self._bytes > self._max_bytes:
                self._drop(next(iter(self._values)))  # the least recently stored

    def recall(self, digits: str, now: datetime) -> list[bytes | None] | None:
        entry = self._values.get(digits)
        if entry is None:
            return None
        at, values, _ = entry
        return values if timedelta(0) <= now - at <= self._max_age else None

    def forget(self, digits: str) -> None:
        with self._lock:
            self._drop(digits)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def _drop(self, digits: str) -> None:
        entry = self._values.pop(digits, None)
        if entry is not None:
            self._bytes -= entry[2]


_msgpack = msgspec.msgpack.Encoder()


class SaveCall(NamedTuple):
    args: list[Any]
    now: datetime
    # What the user, session and form keys hold once the call is applied (the user's
    # header without its version, which the script chooses).
    stored: tuple[bytes, bytes, bytes, bytes | None]


class ConversationCalls:
    """Arguments of the scripts, and what their replies mean."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self.recent = RecentValues()
        self._load_constants = [
            micros_of(timeouts.state),
            micros_of(timeouts.session),
            micros_of(slide_step(timeouts.state)),
            micros_of(slide_step(timeouts.session)),
            px(timeouts.state),
            px(timeouts.session),
        ]
        self.lease_px = max(1, micros_of(timeouts.lease) // 1000)
        # How far past what a write needs a TTL is extended, so that most writes move none.
        self._state_slack = micros_of(slide_step(timeouts.state)) // 1000
        self._dedupe_slack = micros_of(slide_step(timeouts.dedupe)) // 1000
        self._retry_slack = micros_of(slide_step(timeouts.retry_window)) // 1000
        self.effects_px = px(timeouts.dedupe)

    def load_args(
        self,
        now: datetime,
        message_id: str | None,
        touch: bool,
        lease: str = "",
        waited: bool = False,
    ) -> list[Any]:
        return [
            b"%016d" % micros(now),
            b"1" if touch else b"0",
            *self._load_constants,
            message_member(message_id) if message_id is not None else b"",
            lease,
            self.lease_px,
            b"1" if waited else b"0",
        ]

    @staticmethod
    def reads_plainly(message_id: str | None, touch: bool) -> bool:
        """Whether a load is a plain read of the three documents (MGET) instead of load.lua.

        A read before a write slides nothing (the write sets last-seen) and, without a
        message id, has no duplicate to look up: the script would only read, at several
        times MGET's cost on the server.
        """
        return not touch and message_id is None

    def recalled(self, digits: str, now: datetime) -> StoredConversation | None:
        """For a plain read (``reads_plainly``; never a slide, nor handle_once's read, which
        must recognise a duplicate before its change runs): what this process read or wrote
        for ``digits`` a moment ago, if that may stand in for the round trip, that is if the
        domain would take it as it is (no part expired or went missing since)."""
        values = self.recent.recall(digits, now)
        if values is None:
            return None
        stored = self.read(values, now)
        if resume(digits, stored, now, self._timeouts)[1]:
            self.recent.forget(digits)
            return None
        return stored

    def loaded(
        self, reply: list[Any], now: datetime, remember: str | None = None
    ) -> StoredConversation:
        """The conversation in a load script's reply (status 'ok' or 'duplicate'); with
        ``remember`` (the phone digits), its values are kept for the next write (see
        RecentValues)."""
        status, user, session, form, touched = reply[:5]
        if remember is not None:
            # A slid part now holds ``now`` in its last-seen prefix.
            stamp = b"%016d" % micros(now)
            self.recent.remember(
                remember,
                [
                    stamp + user[SEEN:] if user is not None and touched & 1 else user,
                    stamp + session[SEEN:] if session is not None and touched & 2 else session,
                    form,
                ],
                now,
            )
        return self._parts(user, session, form, touched, now, status == b"duplicate")

    def begin_args(self, now: datetime, message_id: str, lease: str, waited: bool) -> list[Any]:
        return [
            micros(now),
            message_member(message_id),
            lease,
            self.lease_px,
            b"1" if waited else b"0",
        ]

    def began(self, reply: list[Any], values: list[Any], now: datetime) -> Begun:
        """What begin.lua and the MGET pipelined after it (user, session, form, token) found."""
        status = reply[0]
        if status == b"duplicate":
            return Begun(None, duplicate=True)
        if status == b"busy":
            return Begun(None, busy_for=timedelta(milliseconds=max(0, int(reply[1]))))
        user, session, form, token = values
        return Begun(self._parts(user, session, form, 0, now, False), token=token)

    def begun(self, reply: list[Any], now: datetime) -> Begun:
        """What load.lua found for a message that asked for the lease."""
        status = reply[0]
        if status == b"duplicate":
            return Begun(None, duplicate=True)
        if status == b"busy":
            return Begun(None, busy_for=timedelta(milliseconds=max(0, int(reply[6]))))
        stored = self._parts(*reply[1:5], now, False)
        return Begun(stored, token=reply[5])

    def _parts(
        self,
        user: bytes | None,
        session: bytes | None,
        form: bytes | None,
        touched: int,
        now: datetime,
        duplicate: bool,
    ) -> StoredConversation:
        parts = codec.StoredParts()
        critical = stored_session = None
        version = 0
        if user is not None:
            header = _user_header(user)
            if header is None:
                parts.discard(CriticalData, user, "damaged last-seen and version header")
            else:
                version = header.version
                seen = now if touched & 1 else from_micros(header.seen)
                critical = parts.read(CriticalData, memoryview(user)[header.start :], seen)
                if header.form_at is None:
                    # 0.1's layout: the next write rewrites it whole, never only its header.
                    parts.documents.pop("critical", None)
                elif critical is not None:
                    # The header holds the form's deadline, so that a form answer (which
                    # moves it) rewrites 48 bytes, not the profile.
                    critical.form_expires_at = (
                        from_micros(header.form_at) if header.form_at else None
                    )
        if session is not None:
            header_seen = _header(session, SEEN)
            if header_seen is None:
                parts.discard(Session, session, "damaged last-seen header")
            else:
                seen = now if touched & 2 else from_micros(header_seen)
                stored_session = parts.read(Session, memoryview(session)[SEEN:], seen)
        return StoredConversation(
            critical=critical,
            session=stored_session,
            form=parts.read(Form, form) if form is not None else None,
            version=version,
            message_seen=duplicate,
            damaged=parts.damaged,
            extras=parts.extras,
            documents=parts.documents,
        )

    def save_args(
        self,
        write: ConversationWrite,
        now: datetime,
        lease: str = "",
        token: TokenChange | None = None,
    ) -> SaveCall:
        """save.lua's arguments for ``write``, and what it stores when applied."""
        t = self._timeouts
        now_us = micros(now)
        extras, documents = write.extras, write.documents
        form = codec.Encoded(b"", False)
        form_px = 0
        if write.form is not None:
            form = codec.encode_stored(write.form, extras.get("form"), documents.get("form"))
            form_px = px(write.form.expires_at - now)
        session = b"%016d%b" % (
            micros(write.session.last_seen_at),
            codec.encode_stored(write.session, extras.get("session")).data,
        )
        critical = codec.encode_stored(
            write.critical, extras.get("critical"), documents.get("critical")
        )
        header = b"%016d%016d" % (
            micros(write.critical.last_seen_at),
            _micros_or_zero(write.critical.form_expires_at),
        )
        sealed: bytes = b""
        token_px = 0
        if token is not None:
            sealed = b"-" if token.sealed is None else token.sealed
            token_px = px(token.ttl)
        message = write.message_id is not None
        # The numbers go as one MessagePack argument: redis-py packs, and Redis hands a
        # script, each argument on its own.
        numbers = _msgpack.encode(
            (
                write.expected_version,
                now_us,
                px(t.state),
                px(t.session),
                form_px,
                now_us + micros_of(t.retry_window),
                now_us + micros_of(t.dedupe),
                px(t.dedupe if message else t.retry_window),
                token_px,
                int(critical.unchanged),
                int(form.unchanged),
                MAX_HANDLED_IDS,
                self._state_slack,
                self._dedupe_slack if message else self._retry_slack,
            )
        )
        args = [
            numbers,
            header,
            op_member(write.op_id),
            message_member(write.message_id) if message else b"",
            # A part byte for byte as stored goes without its JSON: the script moves its
            # header and TTL only.
            b"" if critical.unchanged else critical.data,
            session,
            b"" if form.unchanged else form.data,
            lease,
            sealed,
        ]
        stored_form = documents.get("form") if form.unchanged else form.data or None
        stored_critical = documents.get("critical", b"") if critical.unchanged else critical.data
        return SaveCall(args, now, (header, stored_critical, session, stored_form))

    def saved(
        self, reply: list[Any], digits: str | None = None, call: SaveCall | None = None
    ) -> WriteResult:
        """The outcome in a save script's reply; given the phone digits and the call, what
        an applied write stored is kept for the next write, and anything else forgotten
        (see RecentValues)."""
        status, version = reply[0], int(reply[1])
        result = WriteResult(_STATUS[status], version)
        if status == b"busy":
            result = result._replace(busy_for=timedelta(milliseconds=max(0, int(reply[2]))))
        if digits is not None:
            if result.status is WriteStatus.APPLIED and version and call is not None:
                header, critical, session, form = call.stored
                user = user_value(header, version, critical)
                self.recent.remember(digits, [user, session, form], call.now)
            else:
                self.recent.forget(digits)
        return result

    def effect_args(self, lease: str, name: str, result: bytes | None) -> list[Any]:
        if result is None:
            return [b"start", lease, name, b"", self.effects_px]
        return [b"finish", b"", name, result, self.effects_px]

    @staticmethod
    def effect_record(reply: list[Any]) -> EffectRecord:
        return EffectRecord(_EFFECTS[reply[0]], reply[1] if len(reply) > 1 else None)

    def read(
        self, values: list[Any], now: datetime, remember: str | None = None
    ) -> StoredConversation:
        """The conversation in a plain read's reply: user, session and form as stored."""
        return self.loaded([b"ok", *values, 0], now, remember)

    def peeked(self, values: list[Any]) -> StoredConversation:
        """What a plain read found, for operators: nothing was slid."""
        # Nothing was touched (flags 0), so ``now`` is never used: last-seen comes from the
        # stored prefixes.
        return self.read(values, _EPOCH)
