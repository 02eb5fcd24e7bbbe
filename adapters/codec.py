"""The storage codec: msgspec JSON into the same dataclasses that dataclasses-json serves.

dataclasses-json costs hundreds of microseconds per conversation, more than the Redis round
trip; msgspec does the same job in about a microsecond. Both read what the other writes:
datetimes are ISO 8601 text, decimals are strings, enums are their values.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any, TypeVar, get_type_hints

import msgspec

from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.deferred import Deferred
from vimbiso_state.domain.errors import StateTooLarge
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.profile import Profile
from vimbiso_state.domain.schema import SCHEMA_VERSION, UnknownSchema, upgrade

log = logging.getLogger("vimbiso_state")

T = TypeVar("T")

# A WhatsApp conversation with a realistic profile is about 2-3 KB; anything near this limit
# is a bug or abuse, and Redis's allkeys-lru would evict real users to make room for it.
MAX_DOCUMENT_BYTES = 64 * 1024

_NULL = b"null"


def _deferred_as_raw(value: object) -> object:
    if type(value) is Deferred:
        data = value.data  # written back as it was read, never decoded
        return data if type(data) is msgspec.Raw else msgspec.Raw(data)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_deferred_as_raw)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (CriticalData, Session, Form)
}


class _LazyDecoder:
    """Decodes a dataclass whose ``LoadedOnUse`` fields stay raw JSON until first read.

    msgspec cannot leave one field of a dataclass undecoded, so this decodes into a struct
    built from the dataclass's own fields (the deferred ones as ``msgspec.Raw``, which msgspec
    only scans) and moves the values over.
    """

    def __init__(self, kind: type[Any], deferred: dict[str, type[Any]]) -> None:
        hints = get_type_hints(kind)
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for f in dataclasses.fields(kind):
            if f.name in deferred:
                spec.append((f.name, msgspec.Raw, msgspec.Raw(_NULL)))
            elif f.default is not dataclasses.MISSING:
                spec.append((f.name, hints[f.name], f.default))
            elif f.default_factory is not dataclasses.MISSING:
                spec.append(
                    (f.name, hints[f.name], msgspec.field(default_factory=f.default_factory))
                )
            else:
                spec.append((f.name, hints[f.name]))
        self._kind = kind
        self._deferred = {name: msgspec.json.Decoder(of).decode for name, of in deferred.items()}
        self._struct = msgspec.json.Decoder(
            msgspec.defstruct(f"Stored{kind.__name__}", spec, kw_only=True)
        )

    def decode(self, data: bytes | memoryview) -> Any:
        instance = object.__new__(self._kind)
        values = msgspec.structs.asdict(self._struct.decode(data))
        for name, decode in self._deferred.items():
            raw = values[name]
            # Raw keeps the bytes it was found in; nothing is copied until it is decoded.
            null = len(raw) == len(_NULL) and bytes(raw) == _NULL
            values[name] = None if null else Deferred(raw, decode, None)
        instance.__dict__ = values
        return instance


# What StoredParts decodes with: the profile stays raw until bot code reads it.
_stored_decoders: dict[type[Any], Any] = {
    CriticalData: _LazyDecoder(CriticalData, {"profile": Profile}),
    Session: _decoders[Session],
    Form: _decoders[Form],
}
# Encoded from the instance's own values (vars()), so that a deferred field goes out raw.
_HELD_AS_STORED = frozenset({CriticalData})


# What each stored document holds, in the words of the bot code that filled it.
_DOCUMENTS = {
    "CriticalData": "the profile and current account (set_profile)",
    "Session": "the session: navigation, offer and context",
    "Form": "the form's answers",
}


def encode(value: object) -> bytes:
    data = _encoder.encode(vars(value) if type(value) in _HELD_AS_STORED else value)
    if len(data) > MAX_DOCUMENT_BYTES:
        kind = type(value).__name__
        raise StateTooLarge(
            f"{kind} document is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit "
            f"(MAX_DOCUMENT_BYTES) for {_DOCUMENTS.get(kind, 'one stored document')}; "
            "nothing was stored"
        )
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
    try:
        part = decode(kind, data)
        # An older document may decode (unknown fields are ignored) yet mean something else.
        if getattr(part, "schema_version", SCHEMA_VERSION) == SCHEMA_VERSION:
            return part
    except msgspec.DecodeError:
        pass
    try:
        return msgspec.convert(upgrade(msgspec.json.decode(data)), kind)
    except (msgspec.DecodeError, UnknownSchema) as exc:
        log.warning(
            "dropping an undecodable %s document (%d bytes): %s", kind.__name__, len(data), exc
        )
        return None


class StoredParts:
    """Decodes the parts of one stored conversation, remembering whether any was dropped."""

    def __init__(self) -> None:
        self.damaged = False

    def discard(self, kind: type[Any], data: bytes, reason: str) -> None:
        """Drop a part the store cannot even frame (its header is damaged)."""
        log.warning(
            "dropping an undecodable %s document (%d bytes): %s", kind.__name__, len(data), reason
        )
        self.damaged = True

    def read(
        self, kind: type[T], data: bytes | memoryview | None, last_seen: datetime | None = None
    ) -> T | None:
        if data is None:
            return None
        try:
            # The common case inline (this runs for every part of every message): a current
            # document; anything else takes decode_stored's migrating path.
            part: T | None = _stored_decoders[kind].decode(data)
            if part.schema_version != SCHEMA_VERSION:  # type: ignore[union-attr]
                part = decode_stored(kind, data)
        except (msgspec.DecodeError, KeyError):
            part = decode_stored(kind, data)
        if part is None:
            self.damaged = True
        elif last_seen is not None:
            # The store keeps last-seen beside the document so it can slide it without
            # rewriting the JSON; that copy is the true one.
            part.last_seen_at = last_seen  # type: ignore[attr-defined]
        return part


DecodeError = msgspec.DecodeError
