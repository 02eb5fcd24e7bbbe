"""PhoneNumber: the only way user identity becomes part of a storage key."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from vimbiso_state.domain.errors import InvalidPhoneNumber

# Separators people and WhatsApp exports put inside numbers. Anything else (letters, "*", ":",
# braces, unicode digits) is refused, because the digits end up inside storage keys.
_SEPARATORS = re.compile(r"[ \-.()]")
_E164_DIGITS = re.compile(r"[1-9][0-9]{7,14}")
_MAX_INPUT = 32


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> PhoneNumber:
    # Cached: a bot sees the same few thousand numbers over and over, and a PhoneNumber is
    # immutable. Refusals raise, and exceptions are never cached.
    if len(text) > _MAX_INPUT:
        raise InvalidPhoneNumber("phone number is too long")
    compact = _SEPARATORS.sub("", text.strip())
    if compact.startswith("+"):
        compact = compact[1:]
    elif compact.startswith("00"):
        compact = compact[2:]
    # isascii() first: str.isdigit() also accepts Arabic-Indic and other unicode digits.
    if not (compact.isascii() and _E164_DIGITS.fullmatch(compact)):
        raise InvalidPhoneNumber(
            f"{text!r} is not an international phone number "
            "(expected E.164, for example +263771234567)"
        )
    return PhoneNumber(compact)


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A canonical E.164 number held as its digits, without the leading ``+``."""

    digits: str

    def __post_init__(self) -> None:
        if not isinstance(self.digits, str) or not _E164_DIGITS.fullmatch(self.digits):
            raise InvalidPhoneNumber(f"not canonical E.164 digits: {self.digits!r}")

    @classmethod
    def parse(cls, text: object) -> PhoneNumber:
        """Accept ``+263 77 123 4567``, ``00263771234567``, ``263771234567``; raise otherwise."""
        if isinstance(text, PhoneNumber):
            return text
        if not isinstance(text, str):
            raise InvalidPhoneNumber(f"a phone number must be text, not {type(text).__name__}")
        return _parse(text)

    @property
    def e164(self) -> str:
        return f"+{self.digits}"

    def __str__(self) -> str:
        return self.digits
