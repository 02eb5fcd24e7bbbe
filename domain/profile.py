"""The member's profile from Credex: critical data that outlives the session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dataclasses_json import DataClassJsonMixin

from vimbiso_state.domain.errors import InvalidInput

_MEMBER_ID_KEYS = ("member_id", "memberID", "memberId", "id")
_ACCOUNT_ID_KEYS = ("account_id", "accountID", "accountId", "id")


def _first(data: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    raise InvalidInput(f"missing identifier: expected one of {', '.join(keys)}")


def _details(data: Mapping[str, Any], used: tuple[str, ...]) -> dict[str, Any]:
    return {str(k): v for k, v in data.items() if k not in used}


@dataclass(kw_only=True, slots=True)
class Member(DataClassJsonMixin):
    """The Credex member behind a phone number."""

    member_id: str
    name: str = ""
    tier: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Member:
        """Build from the plain dict the Credex API returns (``memberID`` or ``member_id``)."""
        if not isinstance(data, Mapping):
            raise InvalidInput("member must be a mapping")
        name = data.get("name") or " ".join(
            str(data[k]) for k in ("firstname", "lastname") if data.get(k)
        )
        tier = data.get("tier", data.get("memberTier"))
        used = (*_MEMBER_ID_KEYS, "name", "firstname", "lastname", "tier", "memberTier")
        return cls(
            member_id=_first(data, _MEMBER_ID_KEYS),
            name=str(name),
            tier=None if tier is None else str(tier),
            details=_details(data, used),
        )


@dataclass(kw_only=True, slots=True)
class Account(DataClassJsonMixin):
    """One Credex account the member can act for."""

    account_id: str
    name: str = ""
    handle: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Account:
        if not isinstance(data, Mapping):
            raise InvalidInput("each account must be a mapping")
        name = data.get("name", data.get("accountName", ""))
        handle = data.get("handle", data.get("accountHandle", ""))
        used = (*_ACCOUNT_ID_KEYS, "name", "accountName", "handle", "accountHandle")
        return cls(
            account_id=_first(data, _ACCOUNT_ID_KEYS),
            name=str(name),
            handle=str(handle),
            details=_details(data, used),
        )


@dataclass(kw_only=True, slots=True)
class Profile(DataClassJsonMixin):
    """The member and the accounts they can use."""

    member: Member
    accounts: list[Account] = field(default_factory=list)

    @classmethod
    def from_credex(
        cls, member: Mapping[str, Any], accounts: Sequence[Mapping[str, Any]]
    ) -> Profile:
        """The member and accounts as the Credex API returns them (plain dicts), validated."""
        return cls(
            member=Member.from_mapping(member),
            accounts=[Account.from_mapping(a) for a in accounts],
        )

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)
