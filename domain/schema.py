"""Stored document versions and the migrations that bring older documents up to date."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 2

Document = dict[str, Any]


def _v1_to_v2(doc: Document) -> Document:
    # Version 1 critical data held a second full copy of the current account; version 2 keeps
    # only its id (the account itself is in the profile).
    if "current_account" in doc:
        account = doc.pop("current_account")
        doc["current_account_id"] = account.get("account_id") if isinstance(account, dict) else None
    return doc


# MIGRATIONS[n] turns a version-n document into a version n+1 one. Documents of every kind
# (critical data, session, form) share the numbering.
MIGRATIONS: dict[int, Callable[[Document], Document]] = {1: _v1_to_v2}


class UnknownSchema(ValueError):
    """A document written by a newer release, or not a document at all."""


def upgrade(doc: object) -> Document:
    """Bring a decoded JSON document to SCHEMA_VERSION, or raise UnknownSchema."""
    if not isinstance(doc, dict):
        raise UnknownSchema("not a JSON object")
    # A document without a version is read as current (fields missing get their defaults).
    version = doc.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or not (min(MIGRATIONS) <= version <= SCHEMA_VERSION):
        raise UnknownSchema(f"schema version {version!r} (this release reads {SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema_version"] = version
    return doc
