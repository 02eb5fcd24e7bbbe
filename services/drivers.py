"""The drivers: what carries out a flow's requests on the repositories, blocking or awaited.

A request's fields are the arguments of the repository method it names (phone first), so one
table says where each kind goes, and the two drivers differ only in awaiting the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from vimbiso_state.services.flows import (
    AckClaims,
    Begin,
    ClaimDue,
    Commit,
    EffectFinish,
    EffectStart,
    Flow,
    Forget,
    GetToken,
    Load,
    Noticed,
    Release,
    Request,
    Steps,
)
from vimbiso_state.services.telemetry import WATCHED, Telemetry, Watch

T = TypeVar("T")

# Each request kind: which repository ("conversations", "messages", "tokens" or "expiry") and
# which of its methods.
CALLS: dict[type[Request], tuple[str, str]] = {
    Load: ("conversations", "load"),
    Begin: ("messages", "begin"),
    Commit: ("messages", "commit"),
    Release: ("messages", "release"),
    Forget: ("messages", "forget"),
    EffectStart: ("messages", "effect_start"),
    EffectFinish: ("messages", "effect_finish"),
    GetToken: ("tokens", "get"),
    ClaimDue: ("expiry", "claim"),
    AckClaims: ("expiry", "ack"),
}


def _methods(repositories: dict[str, Any]) -> dict[type[Request], Callable[..., Any]]:
    """Each request kind's bound repository method, looked up once."""
    return {kind: getattr(repositories[repo], name) for kind, (repo, name) in CALLS.items()}


class Driver:
    """Carries out flows on blocking repositories; ``run`` one operation, or ``drive`` a
    step of a larger one (a message) under its watch."""

    def __init__(self, repositories: dict[str, Any], telemetry: Telemetry):
        self.telemetry = telemetry
        self._methods = _methods(repositories)

    def run(self, flow: Flow[T], operation: str) -> T:
        with self.telemetry.watch(operation) as watch:
            return self.drive(flow, watch)

    def drive(self, flow: Flow[T], watch: Watch) -> T:
        steps = Steps(flow)
        with watch.entered():
            for request in steps:
                watch.number = watch.number or getattr(request, "phone", None)
                kind = type(request)
                if kind is Noticed:  # not I/O: an event for the watch
                    watch.saw(request, None)
                    continue
                try:
                    answer = self._methods[kind](*request)
                except Exception as error:
                    steps.fail(error)
                    continue
                steps.answer(answer)
                if kind in WATCHED:
                    watch.saw(request, answer)
        return steps.result


class AsyncDriver:
    """Driver for asyncio repositories; ``refresh`` (the server clock's) is awaited first."""

    def __init__(
        self,
        repositories: dict[str, Any],
        telemetry: Telemetry,
        refresh: Callable[[], Awaitable[None]] | None = None,
    ):
        self.telemetry = telemetry
        self._refresh = refresh
        self._methods = _methods(repositories)

    async def run(self, flow: Flow[T], operation: str) -> T:
        with self.telemetry.watch(operation) as watch:
            return await self.drive(flow, watch)

    async def drive(self, flow: Flow[T], watch: Watch) -> T:
        steps = Steps(flow)
        with watch.entered():
            if self._refresh is not None:
                await self._refresh()
            for request in steps:
                watch.number = watch.number or getattr(request, "phone", None)
                kind = type(request)
                if kind is Noticed:
                    watch.saw(request, None)
                    continue
                try:
                    answer = await self._methods[kind](*request)
                except Exception as error:
                    steps.fail(error)
                    continue
                steps.answer(answer)
                if kind in WATCHED:
                    watch.saw(request, answer)
        return steps.result
