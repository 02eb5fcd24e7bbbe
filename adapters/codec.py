"""The storage codec: msgspec JSON into the same dataclasses that dataclasses-json serves.

dataclasses-json costs hundreds of microseconds per conversation, more than the Redis round
trip; msgspec does the same job in about a microsecond. Both read what the other writes:
datetimes are ISO 8601 text, decimals are strings, enums are their values.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import msgspec

from vimbiso_state.adapters.otel import PART, PART_SIZE, PROVIDERS
from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.errors import StateFromNewerRelease, StateTooLarge
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.schema import SCHEMA_VERSION, NewerSchema, UnknownSchema, upgrade

log = logging.getLogger(__name__)

T = TypeVar("T")

# A WhatsApp conversation with a realistic profile is about 2-3 KB; anything near this limit
# is a bug or abuse, and Redis's allkeys-lru would evict real users to make room for it.
MAX_DOCUMENT_BYTES = 64 * 1024

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (CriticalData, Session, Form)
}
# The stored kinds whose values come from bot code: checked (plain JSON, valid steps) before
# they are encoded, so that nothing is silently converted and a refusal happens before I/O.
_CHECKED = frozenset({CriticalData, Session, Form})


# The name of each stored kind in StoredConversation.extras, and the fields it knows.
PARTS = {CriticalData: "critical", Session: "session", Form: "form"}
_SIZED = {kind: {PART: name} for kind, name in PARTS.items()}  # made once, not per write
_KNOWN = {kind: frozenset(f.name for f in dataclasses.fields(kind)) for kind in PARTS}
# The top level of a document, its values left as raw JSON (scanned, not decoded).
_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])


# What each stored document holds, in the words of the bot code that filled it.
_DOCUMENTS = {
    "CriticalData": "the profile and current account (set_profile)",
    "Session": "the session: navigation, offer and context",
    "Form": "the form's answers",
}


class Encoded(NamedTuple):
    """A part as a store writes it, and whether it is byte for byte what was stored."""

    data: bytes
    unchanged: bool


def encode_stored(
    value: object, extras: Mapping[str, bytes] | None = None, stored: bytes | None = None
) -> Encoded:
    """``encode`` for the stores, which keep last-seen beside each document: the document's
    own ``last_seen_at`` is written as its creation time, so that a part nobody changed
    encodes to the bytes it was stored as, and is neither checked again nor rewritten. The
    critical data's ``form_expires_at`` and ``inbound_at`` are kept beside the document as well.

    (A profile the caller changed encodes differently and is checked; the equality only
    proves that nothing stored would change, which is all a skipped check may rely on.)
    """
    if stored is not None and not extras and type(value) is not Session:
        data = _pinned(value)
        if data == stored:
            # Still a stored part of this write, as far as sizes go (it is only not resent).
            if PROVIDERS.metering:
                PART_SIZE.record(len(stored), _SIZED.get(type(value)))
            return Encoded(stored, True)
    return Encoded(encode(value, extras, pin=True), False)


class _Pinned:
    """Encodes one stored kind with the fields a store keeps beside its document (they move
    with every message and form answer) pinned to what the document holds in their place, so
    that a part nobody changed encodes to the bytes it was stored as.

    Encoded from a copy of the fields, as a msgspec Struct with the same fields in the same
    order (the same JSON, nearly as fast as the dataclass): the domain object is never changed,
    not even while it is encoded, so another thread reading it never sees a pinned value.
    """

    def __init__(self, kind: type[Any], pins: Mapping[str, str | None]) -> None:
        names = tuple(f.name for f in dataclasses.fields(kind))
        self._values = operator.attrgetter(*names)
        self._document = msgspec.defstruct(f"Stored{kind.__name__}", [(n, Any) for n in names])
        # (the field's place, the place of the field it takes its value from; None: null)
        self._pins = [
            (names.index(name), None if source is None else names.index(source))
            for name, source in pins.items()
        ]

    def encode(self, value: object) -> bytes:
        values = list(self._values(value))
        for at, source in self._pins:
            values[at] = None if source is None else values[source]
        return _encoder.encode(self._document(*values))


# Last-seen is stored as the creation time; the critical data's form deadline and last
# inbound message, as nothing.
_PINNED = {
    CriticalData: _Pinned(
        CriticalData, {"last_seen_at": "created_at", "form_expires_at": None, "inbound_at": None}
    ),
    Session: _Pinned(Session, {"last_seen_at": "started_at"}),
}


def _pinned(value: object) -> bytes:
    """JSON of a part as the stores keep it (see _Pinned)."""
    pinned = _PINNED.get(type(value))
    return _encoder.encode(value) if pinned is None else pinned.encode(value)


def encode(value: object, extras: Mapping[str, bytes] | None = None, pin: bool = False) -> bytes:
    """JSON of a domain object; InvalidInput (before any I/O) for a value JSON cannot carry.

    ``extras`` are fields of the stored document this release does not know (a newer one
    wrote them): they go back as they came, so that this write does not drop them.
    """
    if type(value) in _CHECKED:
        value.check_values()  # type: ignore[attr-defined]
    data = _pinned(value) if pin else _encoder.encode(value)
    if extras:
        document = _top_level.decode(data)
        for name, raw in extras.items():
            document.setdefault(name, msgspec.Raw(raw))
        data = _encoder.encode(document)
    if len(data) > MAX_DOCUMENT_BYTES:
        kind = type(value).__name__
        raise StateTooLarge(
            f"{kind} document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit "
            f"(MAX_DOCUMENT_BYTES) for {_DOCUMENTS.get(kind, 'one stored document')}; "
            "nothing was stored"
        )
    if PROVIDERS.metering:
        PART_SIZE.record(len(data), _SIZED.get(type(value)))
    return data


def decode(kind: type[T], data: bytes | memoryview) -> T:
    decoder = _decoders.get(kind) or msgspec.json.Decoder(kind)
    result: T = decoder.decode(data)
    return result


def decode_stored(kind: type[T], data: bytes | memoryview) -> T | None:
    """Decode a stored document, migrating an older schema; None if it cannot be read.

    The fast typed decode handles every current document. Anything else goes through the
    migrations; what still fails is logged and dropped, so that a corrupt key costs the user
    a restart at the menu instead of crashing every message they send.
    """
    return _salvaged(kind, data)[0]


def _salvaged(kind: type[T], data: bytes | memoryview) -> tuple[T | None, bool]:
    """The part in ``data`` and whether anything of it was dropped as damaged."""
    try:
        part = decode(kind, data)
        current = getattr(part, "schema_version", SCHEMA_VERSION) == SCHEMA_VERSION
    except msgspec.DecodeError:
        current = False
    if not current:
        try:
            part = _migrated(kind, data)
        except NewerSchema as exc:
            # Never dropped: this release's next write would replace what a newer one stored.
            raise StateFromNewerRelease(
                f"the stored {kind.__name__} was written by a newer release of vimbiso-state "
                f"({exc}); nothing was read or changed. A rolling deploy is under way: answer "
                "non-2xx so that WhatsApp redelivers the message to an upgraded worker"
            ) from exc
        except UnknownSchema as exc:
            _dropped(kind, data, exc)
            return None, True
        except msgspec.DecodeError as exc:
            return _without_profile(kind, data, exc)
    return _sound(part)


def _migrated(kind: type[T], data: bytes | memoryview) -> T:
    return msgspec.convert(upgrade(msgspec.json.decode(data)), kind)


def _without_profile(
    kind: type[T], data: bytes | memoryview, error: Exception
) -> tuple[T | None, bool]:
    # A damaged profile inside critical data that is otherwise sound costs the profile (the
    # user logs in again), not the live session and form that the rest of it anchors.
    if kind is CriticalData:
        try:
            doc = upgrade(msgspec.json.decode(data))
            for name in CriticalData.PROFILE_FIELDS:
                doc.pop(name, None)
            part = msgspec.convert(doc, kind)
        except (msgspec.DecodeError, UnknownSchema):
            pass
        else:
            log.warning("dropping an undecodable profile (%d bytes): %s", len(data), error)
            return part, True
    _dropped(kind, data, error)
    return None, True


def _sound(part: T) -> tuple[T | None, bool]:
    """Apply the domain's own checks to a decoded part: what fails them is damaged."""
    if type(part) is CriticalData:
        problem = part.drop_damaged_profile()
        if problem:
            log.warning("dropping a stored profile: %s", problem)
            return part, True
    elif type(part) is Session:
        problem = part.step_problem()
        if problem:
            log.warning("dropping a stored session: %s", problem)
            return None, True
    return part, False


def _dropped(kind: type[Any], data: bytes | memoryview, reason: object) -> None:
    log.warning(
        "dropping an undecodable %s document (%d bytes): %s", kind.__name__, len(data), reason
    )


_CURRENT = str(SCHEMA_VERSION).encode()


class _SoundDocuments:
    """The documents of the current schema read lately that decoded and passed the domain's
    checks, with their unknown fields: a user's profile comes back unchanged message after
    message, and checking it again every time cost more than decoding it. Keyed by the
    document's bytes, so it holds them: bounded in bytes as well as in entries (documents
    may be up to MAX_DOCUMENT_BYTES each), the oldest forgotten first."""

    # What an entry costs beside its bytes: the key tuple, the dict slots, the unknown fields'
    # dict (an estimate; the bound is about the documents, which dominate).
    ENTRY_OVERHEAD = 256

    def __init__(self, max_bytes: int = 4 * 1024 * 1024, max_entries: int = 2048) -> None:
        self.max_bytes = max_bytes
        self._max_entries = max_entries
        self.clear()

    def clear(self) -> None:
        """Forget everything; a forked child starts here (a lock held by another thread of
        its parent at the fork would stay held in the child forever)."""
        self._known: OrderedDict[tuple[type[Any], bytes], tuple[dict[str, bytes], int]] = (
            OrderedDict()
        )
        self.size = 0  # bytes held, by the same estimate
        self._lock = threading.Lock()  # taken on a miss only: the hits stay lock-free

    def get(self, key: tuple[type[Any], bytes]) -> dict[str, bytes] | None:
        entry = self._known.get(key)
        return None if entry is None else entry[0]

    def remember(self, key: tuple[type[Any], bytes], unknown: dict[str, bytes]) -> None:
        kind, document = key
        size = len(document) + sum(map(len, unknown.values())) + self.ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        # A copy of its own, as large as the document: bytes fresh from msgspec's encoder (the
        # memory backend's) sit in a buffer up to half as large again.
        key = (kind, bytes(memoryview(document)))
        with self._lock:
            known = self._known
            if key in known:
                return
            while known and (self.size + size > self.max_bytes or len(known) >= self._max_entries):
                self.size -= known.popitem(last=False)[1][1]
            known[key] = (unknown, size)
            self.size += size


_SOUND = _SoundDocuments()
if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_SOUND.clear)


def _fields(kind: type[Any], data: bytes | memoryview) -> tuple[bool, dict[str, bytes]]:
    """Whether a document is of the current schema as stored (not migrated on the way in),
    and the fields of such a document that this release does not know: a newer release added
    them. (An older document's leftovers are the migrations' business.)"""
    top = _top_level.decode(data)
    version = top.get("schema_version")
    if version is not None and bytes(version) != _CURRENT:
        return False, {}
    return True, {name: bytes(raw) for name, raw in top.items() if name not in _KNOWN[kind]}


class StoredParts:
    """Decodes the parts of one stored conversation, remembering whether any was dropped."""

    def __init__(self) -> None:
        self.damaged = False
        self.extras: dict[str, dict[str, bytes]] = {}
        # Each part's JSON as it was read, so that a write can tell what did not change.
        self.documents: dict[str, bytes] = {}

    def discard(self, kind: type[Any], data: bytes, reason: str) -> None:
        """Drop a part the store cannot even frame (its header is damaged)."""
        _dropped(kind, data, reason)
        self.damaged = True

    def read(
        self, kind: type[T], data: bytes | memoryview | None, last_seen: datetime | None = None
    ) -> T | None:
        if data is None:
            return None
        document = bytes(data)
        known = _SOUND.get((kind, document))
        if known is not None:
            # Read (and found sound) a moment ago: only the typed decode is left to do.
            part: T | None = decode(kind, document)
            damaged, unknown = False, known
        else:
            part, damaged = _salvaged(kind, document)
            current, unknown = (False, {}) if damaged or part is None else _fields(kind, document)
            if current:
                _SOUND.remember((kind, document), unknown)
        if damaged:
            self.damaged = True
        elif part is not None:
            if unknown:
                self.extras[PARTS[kind]] = unknown
            self.documents[PARTS[kind]] = document
        if part is not None and last_seen is not None:
            # The store keeps last-seen beside the document so it can slide it without
            # rewriting the JSON; that copy is the true one.
            part.last_seen_at = last_seen  # type: ignore[attr-defined]
        return part


DecodeError = msgspec.DecodeError
