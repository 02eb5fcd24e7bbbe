"""A batch of expiry events: ``with state.expirations(limit=100) as batch``.

Entering claims the due entries of the store's expiry index and checks each against its
conversation; leaving the block cleanly acknowledges every event of the batch. After an
exception, or a consumer that died, nothing is acknowledged: the events come back once the
claim's lease has passed (at least once, never to two consumers at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from types import TracebackType

from vimbiso_state.domain.expirations import Expiration
from vimbiso_state.domain.ports import Claim
from vimbiso_state.services.drivers import AsyncDriver, Driver
from vimbiso_state.services.flows import Flow, Flows


class _Batch:
    """The events claimed; iterate over it, or take ``events``. ``now`` is when they were
    taken, by the store's clock (the one every deadline is on)."""

    def __init__(self, flows: Flows, claimed: Flow[list[tuple[Claim, Expiration]]]) -> None:
        self._flows = flows
        self._claimed: Flow[list[tuple[Claim, Expiration]]] | None = claimed
        self._pairs: list[tuple[Claim, Expiration]] = []
        self._now: datetime | None = None

    @property
    def now(self) -> datetime:
        if self._now is None:
            raise RuntimeError("a batch of expirations is taken when its block is entered")
        return self._now

    @property
    def events(self) -> list[Expiration]:
        return [event for _, event in self._pairs]

    def __iter__(self) -> Iterator[Expiration]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self._pairs)

    def _claim_flow(self) -> Flow[list[tuple[Claim, Expiration]]]:
        flow, self._claimed = self._claimed, None
        if flow is None:
            raise RuntimeError("a batch of expirations is entered once")
        return flow

    def _ack_flow(self) -> Flow[None]:
        return self._flows.acknowledge([claim for claim, _ in self._pairs])


class Expirations(_Batch):
    """A batch on a StateService."""

    def __init__(
        self, driver: Driver, claimed: Flow[list[tuple[Claim, Expiration]]], flows: Flows
    ) -> None:
        super().__init__(flows, claimed)
        self._driver = driver

    def __enter__(self) -> Expirations:
        self._pairs = self._driver.run(self._claim_flow(), "expirations")
        self._now = self._flows.clock.now()
        self._driver.telemetry.delivered(self.events, self._now)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None and self._pairs:
            self._driver.run(self._ack_flow(), "expirations")


class AsyncExpirations(_Batch):
    """A batch on an AsyncStateService: ``async with``."""

    def __init__(
        self, driver: AsyncDriver, claimed: Flow[list[tuple[Claim, Expiration]]], flows: Flows
    ) -> None:
        super().__init__(flows, claimed)
        self._driver = driver

    async def __aenter__(self) -> AsyncExpirations:
        self._pairs = await self._driver.run(self._claim_flow(), "expirations")
        self._now = self._flows.clock.now()
        self._driver.telemetry.delivered(self.events, self._now)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None and self._pairs:
            await self._driver.run(self._ack_flow(), "expirations")
