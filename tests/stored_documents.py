"""Stored documents read and rewritten under a backend, as corruption or another release
would leave them: for tests that put such documents beside the library's own."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vimbiso_state.services.container import Container

HEADERS = {"user": 80, "session": 16, "form": 0}  # bytes before the JSON, on Redis


def raw_of(container: Container, backend: str, phone: str, part: str) -> bytes:
    digits = phone.lstrip("+")
    if backend == "memory":
        user = container.memory_conversations()._users[digits]
        stored = {"user": user.critical, "session": user.session, "form": user.form}[part]
        assert stored is not None
        return stored.data
    value = container.redis_client().get(key_of(part, digits))
    assert value is not None
    return bytes(value)


def key_of(part: str, digits: str) -> str:
    return {"user": "user:{%s}:state", "session": "session:{%s}:data", "form": "form:{%s}:data"}[
        part
    ] % digits


def rewrite(
    container: Container,
    backend: str,
    phone: str,
    part: str,
    edit: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Rewrite one stored document in place (its header and TTL kept), as corruption or
    another release would have written it."""
    digits = phone.lstrip("+")
    if backend == "memory":
        user = container.memory_conversations()._users[digits]
        stored = {"user": user.critical, "session": user.session, "form": user.form}[part]
        assert stored is not None
        stored.data = json.dumps(edit(json.loads(stored.data))).encode()
        return
    client = container.redis_client()
    value = client.get(key_of(part, digits))
    assert value is not None
    head = HEADERS[part]
    document = json.dumps(edit(json.loads(value[head:]))).encode()
    client.set(key_of(part, digits), value[:head] + document, keepttl=True)


def json_of(container: Container, backend: str, phone: str, part: str) -> dict[str, Any]:
    raw = raw_of(container, backend, phone, part)
    document: dict[str, Any] = json.loads(raw[0 if backend == "memory" else HEADERS[part] :])
    return document
