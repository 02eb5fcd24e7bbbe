"""The member's profile from Credex: critical data that outlives the session.

The member and account dicts are kept exactly as Credex gave them (types, nesting, fields
this library has never heard of), because the bot reads them as Credex spells them
(``memberTier < 3``, ``firstname``, ``balanceData``...). Member and Account are views over
those dicts: typed accessors on top, the dict itself in ``data``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vimbiso_state.domain.errors import InvalidInput
from vimbiso_state.domain.json_values import check_json

# The spellings of the identifiers, Credex's first.
MEMBER_ID_KEYS = ("memberID", "member_id", "memberId", "id")
ACCOUNT_ID_KEYS = ("accountID", "account_id", "accountId", "id")


def _identifier(data: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        # bool is an int, but never an identifier.
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def _text(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str):
            return value
    return None


def _tier(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value)
    if isinstance(value, Mapping):
        # Older Credex answers carried Neo4j integers: {"low": 2, "high": 0}.
        return _tier(value.get("low"))
    return None


@dataclass(frozen=True, slots=True)
class Member:
    """The Credex member behind a phone number: ``data`` is the dict as Credex gave it."""

    data: dict[str, Any]

    @property
    def member_id(self) -> str:
        return _identifier(self.data, MEMBER_ID_KEYS) or ""

    @property
    def tier(self) -> int | None:
        """``memberTier`` as a number (the bot compares ``tier < 3``), or None."""
        return _tier(self.data.get("memberTier", self.data.get("tier")))

    @property
    def firstname(self) -> str | None:
        return _text(self.data, "firstname", "firstName")

    @property
    def lastname(self) -> str | None:
        return _text(self.data, "lastname", "lastName")

    @property
    def handle(self) -> str | None:
        return _text(self.data, "memberHandle", "handle")

    @property
    def name(self) -> str:
        """The name to greet the member by: first and last name, else ``name``, else ''."""
        parts = [part.strip() for part in (self.firstname, self.lastname) if part]
        return " ".join(p for p in parts if p) or (_text(self.data, "name") or "").strip()


@dataclass(frozen=True, slots=True)
class Account:
    """One Credex account the member can act for: ``data`` is the dict as Credex gave it."""

    data: dict[str, Any]

    @property
    def account_id(self) -> str:
        return _identifier(self.data, ACCOUNT_ID_KEYS) or ""

    @property
    def name(self) -> str:
        return _text(self.data, "accountName", "name") or ""

    @property
    def handle(self) -> str:
        return _text(self.data, "accountHandle", "handle") or ""

    @property
    def account_type(self) -> str | None:
        """``accountType``: ``PERSONAL`` for the member's own account, else e.g. ``BUSINESS``."""
        return _text(self.data, "accountType")


class AccountSelection(StrEnum):
    """Which account becomes current when a profile arrives and none is selected yet."""

    # A one-account member has nothing to choose; a member with several chooses
    # (select_account), as the VimbisoPay bot asks them to.
    SINGLE = "single"
    # None until select_account, whatever the number of accounts.
    NONE = "none"
    # The account whose accountType is PERSONAL (what the bot's login does), else none.
    PERSONAL = "personal"
    # The first account of the list (releases before 0.3 did this).
    FIRST = "first"


def account_selection(value: object) -> AccountSelection:
    """Parse a configured selection; InvalidInput names the choices."""
    try:
        return AccountSelection(str(value).strip().lower() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except ValueError:
        choices = ", ".join(s.value for s in AccountSelection)
        raise InvalidInput(f"account selection must be one of {choices}, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class Profile:
    """The member and the accounts they can use, as views over the stored Credex dicts."""

    member: Member
    accounts: list[Account]

    @classmethod
    def from_credex(
        cls, member: Mapping[str, Any], accounts: Sequence[Mapping[str, Any]]
    ) -> Profile:
        """Validated copies of the dicts the Credex API returns; InvalidInput says what is wrong.

        Every value must be plain JSON (domain/json_values.py), the member needs an id
        (``memberID``) and each account one (``accountID``), distinct.
        """
        if not isinstance(member, Mapping):
            raise InvalidInput("member must be a dict (the Credex member)")
        if isinstance(accounts, str | bytes | Mapping) or not isinstance(accounts, Sequence):
            raise InvalidInput("accounts must be a list of dicts (the Credex accounts)")
        member_data = dict(member)
        check_json(member_data, "member")
        account_data = []
        for index, account in enumerate(accounts):
            if not isinstance(account, Mapping):
                raise InvalidInput(f"accounts[{index}] must be a dict (a Credex account)")
            data = dict(account)
            check_json(data, f"accounts[{index}]")
            account_data.append(data)
        problem = profile_problem(member_data, account_data)
        if problem:
            raise InvalidInput(problem)
        # Copies: the caller's dicts may change after this call; the stored profile must not.
        return cls.of(copy.deepcopy(member_data), copy.deepcopy(account_data))

    @classmethod
    def of(cls, member: dict[str, Any], accounts: list[dict[str, Any]]) -> Profile:
        """Views over stored dicts, which they share (no copy, no check)."""
        return cls(member=Member(member), accounts=[Account(a) for a in accounts])

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)

    def default_account(self, selection: AccountSelection) -> Account | None:
        """The account ``selection`` makes current when none is selected yet."""
        if selection is AccountSelection.SINGLE:
            return self.accounts[0] if len(self.accounts) == 1 else None
        if selection is AccountSelection.PERSONAL:
            return next((a for a in self.accounts if a.account_type == "PERSONAL"), None)
        if selection is AccountSelection.FIRST:
            return self.accounts[0] if self.accounts else None
        return None


def profile_problem(member: dict[str, Any], accounts: list[dict[str, Any]]) -> str | None:
    """What makes these member and account dicts unusable as a profile, or None."""
    if _identifier(member, MEMBER_ID_KEYS) is None:
        return f"the member has no id: expected one of {', '.join(MEMBER_ID_KEYS)}"
    seen: set[str] = set()
    for index, account in enumerate(accounts):
        account_id = _identifier(account, ACCOUNT_ID_KEYS)
        if account_id is None:
            return f"accounts[{index}] has no id: expected one of {', '.join(ACCOUNT_ID_KEYS)}"
        if account_id in seen:
            return f"accounts[{index}] repeats the account id of an earlier account"
        seen.add(account_id)
    return None
