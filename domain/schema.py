"""Stored document versions and the migrations that bring older documents up to date."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 3

Document = dict[str, Any]


def _v1_to_v2(doc: Document) -> Document:
    # Version 1 critical data held a second full copy of the current account; version 2 keeps
    # only its id (the account itself is in the profile).
    if "current_account" in doc:
        account = doc.pop("current_account")
        doc["current_account_id"] = account.get("account_id") if isinstance(account, dict) else None
    return doc


def _v2_to_v3(doc: Document) -> Document:
    # Version 2 reshaped the Credex dicts into {member_id, name, tier (as text), details} and
    # {account_id, name, handle, details}; version 3 keeps the dicts as Credex gives them, in
    # the critical data's own "member" and "accounts". This rebuilds them in Credex's spelling
    # as far as version 2 kept them: the original key spellings and types of the identifiers
    # and the first/last name split were lost (a name is split at its first space). The next
    # set_profile (the bot's next login) stores the exact dicts again.
    if "profile" not in doc:
        return doc
    profile = doc.pop("profile")
    if profile is None:
        doc["member"], doc["accounts"] = None, []
        return doc
    if not isinstance(profile, dict) or not isinstance(profile.get("member"), dict):
        doc["member"] = profile  # not a profile: the codec drops it as damaged
        return doc
    accounts = profile.get("accounts", [])
    doc["member"] = _v2_member(profile["member"])
    # Anything that is not a list of dicts is left as it is, for the codec to drop as damaged.
    doc["accounts"] = (
        [_v2_account(a) if isinstance(a, dict) else a for a in accounts]
        if isinstance(accounts, list)
        else accounts
    )
    return doc


def _v2_member(member: Document) -> Document:
    data = _v2_details(member)
    data["memberID"] = member.get("member_id")
    tier = member.get("tier")
    if isinstance(tier, str) and tier.isdecimal():
        data["memberTier"] = int(tier)
    elif tier is not None:
        data["memberTier"] = tier
    name = member.get("name")
    if isinstance(name, str) and name.strip():
        first, _, last = name.strip().partition(" ")
        data["firstname"] = first
        if last:
            data["lastname"] = last
    return data


def _v2_account(account: Document) -> Document:
    data = _v2_details(account)
    data["accountID"] = account.get("account_id")
    for old, new in (("name", "accountName"), ("handle", "accountHandle")):
        if account.get(old):
            data[new] = account[old]
    return data


def _v2_details(part: Document) -> Document:
    details = part.get("details")
    return dict(details) if isinstance(details, dict) else {}


# MIGRATIONS[n] turns a version-n document into a version n+1 one. Documents of every kind
# (critical data, session, form) share the numbering.
MIGRATIONS: dict[int, Callable[[Document], Document]] = {1: _v1_to_v2, 2: _v2_to_v3}


class UnknownSchema(ValueError):
    """A document written by a newer release, or not a document at all."""


class NewerSchema(UnknownSchema):
    """A document of a schema version this release does not know yet: a newer release wrote
    it (a rolling deploy is under way). It must be left as it is, never dropped."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"schema version {version} (this release reads up to {SCHEMA_VERSION})")


def upgrade(doc: object) -> Document:
    """Bring a decoded JSON document to SCHEMA_VERSION, or raise UnknownSchema."""
    if not isinstance(doc, dict):
        raise UnknownSchema("not a JSON object")
    # A document without a version is read as current (fields missing get their defaults).
    version = doc.get("schema_version", SCHEMA_VERSION)
    if type(version) is int and version > SCHEMA_VERSION:
        raise NewerSchema(version)
    if not isinstance(version, int) or not (min(MIGRATIONS) <= version <= SCHEMA_VERSION):
        raise UnknownSchema(f"schema version {version!r} (this release reads {SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema_version"] = version
    return doc
