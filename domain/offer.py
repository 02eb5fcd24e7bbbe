"""A Credex offer in progress: parsed from the form, confirmed by the member's signature."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from dataclasses_json import DataClassJsonMixin

from vimbiso_state.domain.errors import InvalidInput
from vimbiso_state.domain.timestamps import timestamp


class Denomination(StrEnum):
    USD = "USD"
    ZWG = "ZWG"
    XAU = "XAU"
    CAD = "CAD"


class OfferStatus(StrEnum):
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


_CODES = "|".join(d.value for d in Denomination)
_AMOUNT = re.compile(
    rf"(?:(?P<pre>{_CODES})\s*)?(?P<num>[0-9]{{1,12}}(?:\.[0-9]{{1,2}})?)(?:\s*(?P<post>{_CODES}))?",
    re.IGNORECASE,
)
_HANDLE = re.compile(r"[a-zA-Z0-9_]{1,64}")
_MAX_INPUT = 64


def parse_amount(text: str) -> tuple[Decimal, Denomination]:
    """``100``, ``USD 100`` or ``100 USD`` (USD when no code is given); raise InvalidInput."""
    cleaned = text.strip() if isinstance(text, str) else ""
    match = _AMOUNT.fullmatch(cleaned) if len(cleaned) <= _MAX_INPUT else None
    if match is None or (match["pre"] and match["post"]):
        raise InvalidInput(
            f"enter an amount like 100, USD 100 or 100 USD ({', '.join(_CODES.split('|'))})"
        )
    try:
        amount = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise InvalidInput("not a number") from exc
    if amount <= 0:
        raise InvalidInput("the amount must be more than zero")
    code = (match["pre"] or match["post"] or Denomination.USD.value).upper()
    return amount, Denomination(code)


def parse_handle(text: str) -> str:
    """A Credex account handle: letters, digits and underscores only."""
    cleaned = text.strip() if isinstance(text, str) else ""
    if not _HANDLE.fullmatch(cleaned):
        raise InvalidInput("a handle has only letters, digits and underscores (at most 64)")
    return cleaned


def parse_denomination(text: str) -> Denomination:
    cleaned = text.strip().upper() if isinstance(text, str) else ""
    try:
        return Denomination(cleaned)
    except ValueError as exc:
        raise InvalidInput(f"denomination must be one of {', '.join(_CODES.split('|'))}") from exc


@dataclass(kw_only=True, slots=True)
class Offer(DataClassJsonMixin):
    """The transaction context of an offer, kept through its confirmation step."""

    amount: Decimal
    denomination: Denomination
    recipient: str
    created_at: datetime = timestamp()
    status: OfferStatus = OfferStatus.AWAITING_CONFIRMATION
    signed_by: str | None = None

    @property
    def pending(self) -> bool:
        return self.status is OfferStatus.AWAITING_CONFIRMATION

    def confirm(self, signature: str) -> None:
        """The member's signature is the confirmation; only a pending offer can be signed."""
        if not self.pending:
            raise InvalidInput(f"this offer is already {self.status.value}")
        if not signature:
            raise InvalidInput("an offer is confirmed by the member's signature")
        self.status = OfferStatus.CONFIRMED
        self.signed_by = signature

    def cancel(self) -> None:
        if not self.pending:
            raise InvalidInput(f"this offer is already {self.status.value}")
        self.status = OfferStatus.CANCELLED
