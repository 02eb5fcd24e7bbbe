"""Stored documents read and rewritten under a backend, as corruption or another release
would leave them: for tests that put such documents beside the library's own."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vimbiso_state.services.container import Container

HEADERS = {"user": 80, "session": 16, "form": 0}  # bytes before the JSON, on Redis
KEYS = {"user": "user:{%s}:state", "session": "session:{%s}:data", "form": "form:{%s}:data"}


def _memory_part(container: Container, phone: str, part: str) -> Any:
    user = container.memory_conversations()._users[phone.lstrip("+")]
    stored = {"user": user.critical, "session": user.session, "form": user.form}[part]
    assert stored is not None
    return stored


def raw_of(container: Container, backend: str, phone: str, part: str) -> bytes:
    if backend == "memory":
        return bytes(_memory_part(container, phone, part).data)
    value = container.redis_client().get(KEYS[part] % phone.lstrip("+"))
    assert value is not None
    return bytes(value)


def json_of(container: Container, backend: str, phone: str, part: str) -> dict[str, Any]:
    raw = raw_of(container, backend, phone, part)
    document: dict[str, Any] = json.loads(raw[0 if backend == "memory" else HEADERS[part] :])
    return document


def rewrite(
    container: Container,
    backend: str,
    phone: str,
    part: str,
    edit: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Rewrite one stored document in place (its header and TTL kept), as corruption or
    another release would have written it."""
    document = json.dumps(edit(json_of(container, backend, phone, part))).encode()
    if backend == "memory":
        _memory_part(container, phone, part).data = document
        return
    head = raw_of(container, backend, phone, part)[: HEADERS[part]]
    container.redis_client().set(KEYS[part] % phone.lstrip("+"), head + document, keepttl=True)
