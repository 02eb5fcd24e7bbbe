"""Tokens sealed with Fernet, bound to their owner, with key rotation through MultiFernet."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from vimbiso_state.domain.errors import ConfigurationError, TokenError
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.token import Token


class _Sealed(msgspec.Struct, frozen=True):
    owner: str
    value: str
    issued_at: datetime
    expires_at: datetime


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Sealed)


class FernetTokenCipher:
    """Encrypts tokens at rest. The first key encrypts; every key decrypts (rotation)."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise ConfigurationError("token encryption needs at least one Fernet key")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            # The message must not echo the key itself.
            raise ConfigurationError(
                "a token key is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from exc

    @classmethod
    def ephemeral(cls) -> FernetTokenCipher:
        """A random key that lives as long as the process: enough for the in-memory backend."""
        return cls([Fernet.generate_key()])

    def seal(
        self, phone: PhoneNumber, value: str, issued_at: datetime, expires_at: datetime
    ) -> bytes:
        plain = _encoder.encode(_Sealed(phone.digits, value, issued_at, expires_at))
        return self._fernet.encrypt(plain)

    def open(self, phone: PhoneNumber, sealed: bytes) -> Token:
        try:
            token = _decoder.decode(self._fernet.decrypt(sealed))
        except (InvalidToken, msgspec.DecodeError) as exc:
            raise TokenError("stored token cannot be decrypted with the configured keys") from exc
        # A ciphertext copied under another user's key decrypts fine; the owner inside it is
        # what stops one member from acting with another's token.
        if token.owner != phone.digits:
            raise TokenError("stored token belongs to another user")
        return Token(value=token.value, issued_at=token.issued_at, expires_at=token.expires_at)

    def rotate(self, sealed: bytes) -> bytes:
        """Re-encrypt under the primary key."""
        return self._fernet.rotate(sealed)
