"""The sync and async services drive the shared flows the same way: whatever a backend raises
reaches the caller as an error, never as an early end of the flow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import PHONE

from vimbiso_state.services.container import Container


class _Raising:
    """A conversation repository whose every call raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def load(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error

    begin = commit = release = forget = effect_start = effect_finish = load
    claim = check = ack = load


class _AsyncRaising(_Raising):
    async def load(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise self._error

    begin = commit = release = forget = effect_start = effect_finish = load  # type: ignore[assignment]
    claim = check = ack = load  # type: ignore[assignment]


def _start(container: Container, kind: str, error: Exception) -> Any:
    if kind == "sync":
        container.conversations.override(_Raising(error))
        return container.state_service().start(PHONE)
    container.async_conversations.override(_AsyncRaising(error))
    return asyncio.run(container.async_state_service().start(PHONE))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_backends_stop_iteration_is_an_error_not_a_none_result(
    container: Container, kind: str
) -> None:
    with pytest.raises(RuntimeError) as raised:
        _start(container, kind, StopIteration())
    assert isinstance(raised.value.__cause__ or raised.value.__context__, StopIteration)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_backends_error_reaches_the_caller_unchanged(container: Container, kind: str) -> None:
    failure = LookupError("the backend broke")
    with pytest.raises(LookupError) as raised:
        _start(container, kind, failure)
    assert raised.value is failure
