"""Both services of a container behind one interface, so that a test body written once holds
the StateService and the AsyncStateService to the same expectations.

The asyncio one runs on an ``asyncio.Runner``: every call is run to completion on the one
event loop its clients were made on (``asyncio.run`` per call would give each call a new
loop, and redis.asyncio connections belong to the loop that opened them). No thread is
involved, unlike the contract suite's facade, which serves tests that call from threads.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.container import Container
from vimbiso_state.services.message import AsyncMessage
from vimbiso_state.services.state_service import StateService

T = TypeVar("T")

KINDS = ["sync", "async"]


class _RunMessage:
    """An AsyncMessage used with a plain ``with``."""

    def __init__(self, message: AsyncMessage, runner: asyncio.Runner) -> None:
        self._message = message
        self._runner = runner

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def __enter__(self) -> _RunMessage:
        self._run(self._message.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._run(self._message.__aexit__(*exc))

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._message, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return lambda *args, **kwargs: self._run(attribute(*args, **kwargs))


class _RunService:
    """An AsyncStateService called like a StateService."""

    def __init__(self, service: AsyncStateService, runner: asyncio.Runner) -> None:
        self._service = service
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._service, name)
        if name == "message":
            return lambda *args, **kwargs: _RunMessage(attribute(*args, **kwargs), self._runner)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return lambda *args, **kwargs: self._runner.run(attribute(*args, **kwargs))


@contextmanager
def service_of(container: Container, kind: str) -> Iterator[StateService]:
    """The container's service of ``kind`` ("sync" or "async"); its clients are closed at
    the end."""
    if kind == "sync":
        try:
            yield container.state_service()
        finally:
            container.close()
        return
    with asyncio.Runner() as runner:
        try:
            yield cast(StateService, _RunService(container.async_state_service(), runner))
        finally:
            runner.run(container.aclose())
