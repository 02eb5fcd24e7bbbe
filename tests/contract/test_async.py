"""What only the asyncio service can get wrong: cancellation and coroutine concurrency."""

from __future__ import annotations

import asyncio
import random

from vimbiso_state.adapters.redis.aio import close_async
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import ConcurrencyConflict


def _run(container: Container, scenario: object) -> None:
    async def main() -> None:
        try:
            await scenario  # type: ignore[misc]
        finally:
            if container.settings().backend != "memory":
                # Not aclose(): a client given its pool leaves the pool's connections open.
                await close_async(container.async_redis_client())

    asyncio.run(main())


def _owned(digits: str) -> object:
    def change(conv: Conversation) -> None:
        conv.context["owner"] = digits

    return change


def test_cancelled_reads_never_hand_a_later_caller_someone_elses_state(
    container: Container, phone: str
) -> None:
    """1,000 reads cancelled mid-flight: every read that completes, then or later, is the
    caller's own conversation (a cancelled reply left on a pooled connection would not be)."""
    base = int(phone.lstrip("+"))
    users = [str(base + 1_000_000 + n) for n in range(50)]

    async def scenario() -> None:
        state: AsyncStateService = container.async_state_service()
        for digits in users:
            await state.update(digits, _owned(digits))  # type: ignore[arg-type]

        async def read(digits: str) -> None:
            conv = await state.start(digits)
            assert conv.phone == digits and conv.context["owner"] == digits

        rng = random.Random(7)
        for _ in range(10):
            tasks = [asyncio.create_task(read(rng.choice(users))) for _ in range(100)]
            await asyncio.sleep(0)
            for task in tasks:
                if rng.random() < 0.5:
                    # Cancel at different points: before sending, while awaiting the reply.
                    task.get_loop().call_later(rng.random() * 0.002, task.cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in results:
                if not isinstance(outcome, asyncio.CancelledError):
                    assert outcome is None, outcome  # a wrong owner fails the assert in read()
        # Afterwards, with every connection reused many times, each user still reads their own.
        for digits in users:
            await read(digits)

    _run(container, scenario())


def test_concurrent_coroutines_lose_no_update(container: Container, phone: str) -> None:
    async def scenario() -> None:
        state: AsyncStateService = container.async_state_service()

        async def append(n: int) -> None:
            # Past the bounded retries the caller gets ConcurrencyConflict, and nothing was
            # stored, so trying again cannot duplicate the entry.
            while True:
                try:
                    await state.update(phone, lambda c: c.context.setdefault("ids", []).append(n))
                    return
                except ConcurrencyConflict:
                    await asyncio.sleep(0.001)

        await asyncio.gather(*(append(n) for n in range(60)))
        conv = await state.start(phone)
        assert sorted(conv.context["ids"]) == list(range(60))

    _run(container, scenario())


def test_handle_once_applies_once_across_coroutines(container: Container, phone: str) -> None:
    async def scenario() -> None:
        state: AsyncStateService = container.async_state_service()
        outcomes = await asyncio.gather(
            *(
                state.handle_once(phone, "wamid.same", lambda c: c.navigate("handle_x"))
                for _ in range(20)
            )
        )
        assert sum(outcome is not None for outcome in outcomes) == 1
        assert (await state.start(phone)).menu == ["handle_action_menu"]

    _run(container, scenario())


def test_more_coroutines_than_connections_wait_for_one(container: Container, phone: str) -> None:
    """128 concurrent handlers on a 64-connection pool: they queue, none fails."""
    base = int(phone.lstrip("+"))

    async def scenario() -> None:
        state: AsyncStateService = container.async_state_service()
        users = [str(base + 2_000_000 + n) for n in range(128)]
        done = await asyncio.gather(*(state.update(u, _owned(u)) for u in users))  # type: ignore[arg-type]
        assert [conv.context["owner"] for conv in done] == users

    _run(container, scenario())
