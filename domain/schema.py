"""Stored document versions and the migrations that bring older documents up to date."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 1

Document = dict[str, Any]


def _v0_to_v1(doc: Document) -> Document:
    # Version 0 documents (the first development builds) named the field "schema" and kept
    # no last-seen time beside the critical data; the started or created time stands in.
    doc.pop("schema", None)
    if "created_at" in doc and "last_seen_at" not in doc:
        doc["last_seen_at"] = doc["created_at"]
    return doc


# MIGRATIONS[n] turns a version-n document into a version n+1 one. Documents of every kind
# (critical data, session, form) share the numbering.
MIGRATIONS: dict[int, Callable[[Document], Document]] = {0: _v0_to_v1}


class UnknownSchema(ValueError):
    """A document written by a newer release, or not a document at all."""


def upgrade(doc: object) -> Document:
    """Bring a decoded JSON document to SCHEMA_VERSION, or raise UnknownSchema."""
    if not isinstance(doc, dict):
        raise UnknownSchema("not a JSON object")
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or version < 0 or version > SCHEMA_VERSION:
        raise UnknownSchema(f"schema version {version!r} (this release reads {SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema_version"] = version
    return doc
