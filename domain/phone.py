"""PhoneNumber: the only way user identity becomes part of a storage key.

Numbers are parsed by libphonenumber (the ``phonenumbers`` package), so that every way of
writing one number (``+263 77 123 4567``, ``+263 (0) 77 123 4567``, ``tel:+263-77-123-4567``,
``077 123 4567`` in Zimbabwe) is one user, and anything that is not a possible number is
refused before it can name a key.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from vimbiso_state.domain.errors import ConfigurationError, InvalidPhoneNumber

# 7 to 15 digits: Niue, Tokelau and Tristan da Cunha have 7-digit numbers.
_E164_DIGITS = re.compile(r"[1-9][0-9]{6,14}")
# What may appear in a number as people, WhatsApp exports and RFC 3966 write it: ASCII digits,
# one "+" before them, and spaces, dashes, dots and brackets between them (which carry no
# meaning, so they are dropped before libphonenumber reads the rest). Letters (libphonenumber
# would read "ABC" as 222), unicode digits, "*", ":", braces and extensions are refused.
_SEPARATORS = re.compile(r"[ \-.()]")
_COMPACT = re.compile(r"\+?[0-9]+")
_MAX_INPUT = 32


def check_region(region: object) -> str | None:
    """A default region for national numbers (ISO 3166 code such as ``ZW``), or None."""
    if region is None or region == "":
        return None
    code = region.strip().upper() if isinstance(region, str) else ""
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError(
            f"phone region must be a two-letter region code libphonenumber knows (such as ZW), "
            f"not {region!r}"
        )
    return code


def _readings(text: str, region: str | None) -> list[tuple[str, str | None]]:
    """How to read ``text``, in order: (text for libphonenumber, the region it is read in)."""
    if text.startswith("+"):
        return [(text, None)]
    readings: list[tuple[str, str | None]] = []
    if text.startswith("00"):
        # The international prefix of most of the world; a region's own (such as 011 in the
        # US) is understood by the region's reading below.
        readings.append(("+" + text[2:], None))
    elif not text.startswith("0"):
        # WhatsApp gives the sender as international digits without the "+" (its wa_id), and
        # that reading comes first: a national number that does not start with 0 (North
        # America's) is read this way when it is also a possible international number.
        readings.append(("+" + text, None))
    if region is not None:
        # A national number: "077 123 4567" in ZW.
        readings.append((text, region))
    return readings


def _read(text: str, region: str | None) -> str | None:
    """The E.164 digits of one reading, or None if it is not a possible number."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if number.extension:
        return None
    # Not LOCAL_ONLY: a WhatsApp identity is never a number without its area code.
    if phonenumbers.is_possible_number_with_reason(number) != ValidationResult.IS_POSSIBLE:
        return None
    digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    return digits if _E164_DIGITS.fullmatch(digits) else None


@functools.lru_cache(maxsize=4096)
def _parse(text: str, region: str | None) -> PhoneNumber:
    # Cached: a bot sees the same few thousand numbers over and over, and a PhoneNumber is
    # immutable. Refusals raise, and exceptions are never cached.
    if len(text) > _MAX_INPUT:
        raise InvalidPhoneNumber("phone number is too long")
    region = check_region(region)
    written = text.strip()
    if written[:4].lower() == "tel:":
        written = written[4:]
    compact = _SEPARATORS.sub("", written)
    if _COMPACT.fullmatch(compact):  # [0-9] is ASCII: unicode digits are refused
        for reading, reading_region in _readings(compact, region):
            digits = _read(reading, reading_region)
            if digits is not None:
                return PhoneNumber(digits)
    national = f", nor a possible national number of {region}" if region else ""
    raise InvalidPhoneNumber(
        f"{text!r} is not an international phone number (E.164, for example +263771234567)"
        f"{national}"
    )


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A canonical E.164 number held as its digits, without the leading ``+``."""

    digits: str

    def __post_init__(self) -> None:
        if not isinstance(self.digits, str) or not _E164_DIGITS.fullmatch(self.digits):
            raise InvalidPhoneNumber(f"not canonical E.164 digits: {self.digits!r}")

    @classmethod
    def parse(cls, text: object, region: str | None = None) -> PhoneNumber:
        """Accept ``+263 77 123 4567``, ``00263771234567``, ``263771234567`` (international),
        and with ``region`` (``ZW``) national numbers such as ``077 123 4567``; raise
        InvalidPhoneNumber for anything that is not a possible number."""
        if isinstance(text, PhoneNumber):
            return text
        if not isinstance(text, str):
            raise InvalidPhoneNumber(f"a phone number must be text, not {type(text).__name__}")
        return _parse(text, region)

    @property
    def e164(self) -> str:
        return f"+{self.digits}"

    def __str__(self) -> str:
        return self.digits
