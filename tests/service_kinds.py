"""Both services of a container behind one interface, so that a test body written once holds
the StateService and the AsyncStateService to the same expectations.

The asyncio service runs on one event loop in a background thread (``LoopThread``): its facade
can be called from any thread, as the concurrency tests do, and every call runs to completion
on that loop, where its redis.asyncio connections belong. Effects run in a worker thread, so
that a slow one does not hold up the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

T = TypeVar("T")

KINDS = ["sync", "async"]


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result, or its exception (SystemExit included: raised here, in the
        caller, rather than ending the loop's thread and every later call with it)."""
        value, error = asyncio.run_coroutine_threadsafe(_caught(coroutine), self.loop).result()
        if error is not None:
            raise error
        return cast(T, value)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _caught(coroutine: Coroutine[Any, Any, Any]) -> tuple[Any, BaseException | None]:
    try:
        return await coroutine, None
    except BaseException as error:  # raised again in the caller's thread
        return None, error


class _Facade:
    """An asyncio object called like its blocking twin: coroutine methods are run to
    completion on the loop."""

    def __init__(self, target: Any, loop: LoopThread) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return lambda *args, **kwargs: self._loop.run(attribute(*args, **kwargs))


class BlockingMessage(_Facade):
    """An AsyncMessage used with a plain ``with``."""

    def __enter__(self) -> BlockingMessage:
        self._loop.run(self._target.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.run(self._target.__aexit__(*exc))

    def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T:
        return cast(T, self._loop.run(self._target.effect(name, _in_thread(run), key=key)))


def _in_thread(run: Callable[[], T]) -> Callable[[], Coroutine[Any, Any, T]]:
    return lambda: asyncio.to_thread(run)


class BlockingExpirations(_Facade):
    """An AsyncExpirations batch used with a plain ``with``."""

    def __enter__(self) -> Any:
        return self._loop.run(self._target.__aenter__())

    def __exit__(self, *exc: Any) -> None:
        self._loop.run(self._target.__aexit__(*exc))


class Blocking(_Facade):
    """An AsyncStateService called like a StateService, from any thread."""

    def message(self, *args: Any, **kwargs: Any) -> BlockingMessage:
        return BlockingMessage(self._target.message(*args, **kwargs), self._loop)

    def expirations(self, *args: Any, **kwargs: Any) -> BlockingExpirations:
        return BlockingExpirations(self._target.expirations(*args, **kwargs), self._loop)


@contextmanager
def service_of(
    container: Container, kind: str, loop: LoopThread | None = None
) -> Iterator[StateService]:
    """The container's service of ``kind`` ("sync" or "async", on ``loop`` or a loop of its
    own); its clients are closed at the end."""
    if kind == "sync":
        try:
            yield container.state_service()
        finally:
            container.close()
        return
    runner = loop or LoopThread()
    service: AsyncStateService = container.async_state_service()
    try:
        yield cast(StateService, Blocking(service, runner))
    finally:
        runner.run(container.aclose())
        if loop is None:
            runner.close()
