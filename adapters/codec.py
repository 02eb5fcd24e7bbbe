"""The storage codec: msgspec JSON into the same dataclasses that dataclasses-json serves.

dataclasses-json costs hundreds of microseconds per conversation, more than the Redis round
trip; msgspec does the same job in about a microsecond. Both read what the other writes:
datetimes are ISO 8601 text, decimals are strings, enums are their values.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from domain.conversation import CriticalData, Session
from domain.errors import StateTooLarge
from domain.form import Form

T = TypeVar("T")

# A WhatsApp conversation with a realistic profile is about 1-2 KB; anything near this limit
# is a bug or abuse, and Redis's allkeys-lru would evict real users to make room for it.
MAX_DOCUMENT_BYTES = 64 * 1024

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (CriticalData, Session, Form)
}


def encode(value: object) -> bytes:
    data = _encoder.encode(value)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise StateTooLarge(
            f"{type(value).__name__} is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES} limit"
        )
    return data


def decode(kind: type[T], data: bytes) -> T:
    decoder = _decoders.get(kind) or msgspec.json.Decoder(kind)
    result: T = decoder.decode(data)
    return result


DecodeError = msgspec.DecodeError
