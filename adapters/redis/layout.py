"""How a conversation is laid out in Redis: the bytes of every stored part, read and written.

Pure: no I/O, no cache (the JSON goes through adapters/codec.py). The scripts read the same
layout (commit.lua, load.lua, expiry.lua); calls.py puts these bytes into their arguments.

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
from datetime import datetime
from typing import NamedTuple

from vimbiso_state.adapters import codec
from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.effects import Effect, InDoubt
from vimbiso_state.domain.expirations import ExpiryKind
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.ports import Claim, ConversationWrite, StoredConversation
from vimbiso_state.domain.timestamps import from_micros, micros

SEEN = 16  # width of the last-seen prefix, and of each number after it
# Last-seen, version, the form's deadline, the effect records' epoch, the last inbound message.
HEADER = 5 * SEEN
_OLD_VERSION = 12  # 0.1 wrote last-seen and a 12-digit version, the form's deadline in JSON
# What a script returns in place of a key of another type (prelude.lua): damaged.
FOREIGN = b"!"


def micros_or_zero(moment: datetime | None) -> int:
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
    """An effect's field in the user's effect records: its name and a digest of its key."""
    return f"{effect.name}:{_digest(effect.key, 12).hex()}"


def in_doubt(record: bytes) -> InDoubt:
    """An in-doubt record: '?', when it started (16 digits), its name and key, one a line."""
    name, _, key = record[17:].decode().partition("\n")
    return InDoubt(name, key, from_micros(int(record[1:17])))


def fixed_number(value: bytes, width: int) -> int | None:
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


def user_header(value: bytes) -> UserHeader | None:
    """The header of a user value, in any layout a release wrote; None if damaged."""
    seen = fixed_number(value, SEEN)
    if seen is None:
        return None
    if value[SEEN + _OLD_VERSION : SEEN + _OLD_VERSION + 1] == b"{":  # 0.1
        version = fixed_number(value[SEEN:], _OLD_VERSION)
        return None if version is None else UserHeader(seen, version, None, 0, 0, 28)
    numbers = [fixed_number(value[at:], SEEN) for at in range(SEEN, HEADER, SEEN)]
    if value[3 * SEEN : 3 * SEEN + 1] == b"{":  # 0.2: no epoch, no inbound message
        version, form_at = numbers[0], numbers[1]
        if version is None or form_at is None:
            return None
        return UserHeader(seen, version, form_at, 0, 0, 3 * SEEN)
    version, form_at, effects, inbound = numbers
    if version is None or form_at is None or effects is None or inbound is None:
        return None
    return UserHeader(seen, version, form_at, effects, inbound, HEADER)


# Reading: the stored values (None: missing; FOREIGN: a key of another type) into the domain's
# StoredConversation. ``touched`` is load.lua's flag of what it slid to ``now`` (1: the user,
# 2: the session); what it did not slide keeps the last-seen time stored in its prefix.
def read_conversation(
    user: bytes | None,
    session: bytes | None,
    form: bytes | None,
    *,
    touched: int,
    now: datetime,
    effects: int,
) -> StoredConversation:
    """The conversation in a user's stored values; ``effects`` is the epoch of the effect
    records found beside them."""
    parts = codec.StoredParts()
    critical, version, guards_lost = _read_critical(parts, user, touched, now, effects)
    return StoredConversation(
        critical=critical,
        session=_read_session(parts, session, touched, now),
        form=_read_form(parts, form),
        version=version,
        damaged=parts.damaged,
        guards_lost=guards_lost,
        extras=parts.extras,
        documents=parts.documents,
    )


def _read_critical(
    parts: codec.StoredParts, user: bytes | None, touched: int, now: datetime, effects: int
) -> tuple[CriticalData | None, int, bool]:
    """The critical data, the version and whether its effect records were lost."""
    if user is None:
        return None, 0, False
    header = None if user == FOREIGN else user_header(user)
    if header is None:
        parts.discard(CriticalData, user, "damaged last-seen and version header")
        return None, 0, False
    seen = now if touched & 1 else from_micros(header.seen)
    critical = parts.read(CriticalData, memoryview(user)[header.start :], seen)
    if header.start != HEADER:
        # An older layout: the next write rewrites it whole, never its header only.
        parts.documents.pop("critical", None)
    if critical is not None and header.form_at is not None:
        # The header holds the form's deadline and the last inbound message, so that an
        # answer (which moves them) rewrites 80 bytes, not the profile.
        critical.form_expires_at = from_micros(header.form_at) if header.form_at else None
        critical.inbound_at = from_micros(header.inbound) if header.inbound else None
    guards_lost = critical is not None and header.effects not in (0, effects)
    return critical, header.version, guards_lost


def _read_session(
    parts: codec.StoredParts, session: bytes | None, touched: int, now: datetime
) -> Session | None:
    if session is None:
        return None
    seen_at = None if session == FOREIGN else fixed_number(session, SEEN)
    if seen_at is None:
        parts.discard(Session, session, "damaged last-seen header")
        return None
    seen = now if touched & 2 else from_micros(seen_at)
    return parts.read(Session, memoryview(session)[SEEN:], seen)


def _read_form(parts: codec.StoredParts, form: bytes | None) -> Form | None:
    if form == FOREIGN:
        parts.discard(Form, form, "a key of another type")
        return None
    return None if form is None else parts.read(Form, form)


def read_form(document: bytes) -> Form | None:
    """A form's stored JSON (as expiry.lua returns it), migrated; None if unreadable."""
    return codec.decode_stored(Form, document)


def read_session(value: bytes) -> Session:
    """A stored session value as it is, last-seen from its prefix (operators' scans);
    codec.DecodeError when it cannot be read."""
    seen_at = fixed_number(value, SEEN)
    if seen_at is None:
        raise codec.DecodeError("damaged last-seen header")
    session = codec.decode(Session, value[SEEN:])
    session.last_seen_at = from_micros(seen_at)
    return session


class StoredWrite(NamedTuple):
    """A write's parts as commit.lua takes them: a part byte for byte as stored goes without
    its JSON (the script moves its header and TTL only)."""

    user: bytes  # the header, then the critical data's JSON unless it is as stored
    critical_as_stored: bool
    session: bytes  # last-seen (16 digits) and the JSON
    form: bytes  # b"": no form, or as stored
    form_as_stored: bool


def stored_write(write: ConversationWrite, version: int, epoch: int) -> StoredWrite:
    """The bytes commit.lua writes for ``write`` as ``version`` (the fence), naming the effect
    records of ``epoch``; InvalidInput or StateTooLarge (before any I/O) for a part that
    cannot be stored."""
    extras, documents = write.extras, write.documents
    form = codec.Encoded(b"", False)
    if write.form is not None:
        form = codec.encode_stored(write.form, extras.get("form"), documents.get("form"))
    session = b"%016d%b" % (
        micros(write.session.last_seen_at),
        codec.encode_stored(write.session, extras.get("session")).data,
    )
    critical = write.critical
    encoded = codec.encode_stored(critical, extras.get("critical"), documents.get("critical"))
    header = b"%016d%016d%016d%016d%016d" % (
        micros(critical.last_seen_at),
        version,
        micros_or_zero(critical.form_expires_at),
        epoch,
        micros_or_zero(critical.inbound_at),
    )
    return StoredWrite(
        header if encoded.unchanged else header + encoded.data,
        encoded.unchanged,
        session,
        b"" if form.unchanged else form.data,
        form.unchanged,
    )


# The expiry index: a member is a kind's first letter, ':' and the phone's digits.
EXPIRY_KINDS = {"f": ExpiryKind.FORM, "s": ExpiryKind.SESSION}


def index_member(claim: Claim) -> str:
    return f"{claim.kind.value[0]}:{claim.digits}"


def index_entry(member: bytes) -> tuple[ExpiryKind, str]:
    """The kind and phone digits an index member names."""
    kind, _, digits = member.decode().partition(":")
    return EXPIRY_KINDS[kind], digits
