"""A dead or hung Redis gives StateUnavailable within a bounded time, never a hang, to the
sync and the asyncio service alike."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import cast

import fakes
import pytest
from fakes import TOKEN_KEY
from redis_servers import free_port

from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import StateUnavailable
from vimbiso_state.services.state_service import StateService


def _redis_state(url: str) -> Container:
    return Container.from_settings(
        Settings(backend="redis", redis_url=url, token_keys=(TOKEN_KEY,))
    )


@pytest.fixture
def hung_server() -> Iterator[str]:
    with fakes.hung_server() as address:
        yield f"redis://{address}/0"


def test_refused_connection_fails_within_half_a_second() -> None:
    state = _redis_state(f"redis://127.0.0.1:{free_port()}/0").state_service()
    began = time.monotonic()
    with pytest.raises(StateUnavailable, match="unreachable"):
        state.start("+263771234567")
    assert time.monotonic() - began < 0.5


# Each kind of call three times at once: every one is timed on its own, and the concurrency
# costs the suite one socket timeout instead of one per call.
CALLS = ("start", "update", "token") * 3


def _operations(state: StateService | AsyncStateService) -> dict[str, Callable[[], object]]:
    return {
        "start": lambda: state.start("+263771234567"),
        "update": lambda: state.update("+263771234567", lambda c: None),
        "token": lambda: state.revoke_token("+263771234567"),
    }


@pytest.mark.slow
def test_no_thread_stays_blocked_on_a_hung_server(hung_server: str) -> None:
    operations = _operations(_redis_state(hung_server).state_service())
    outcomes: list[tuple[str, BaseException | None, float]] = []

    def call(name: str) -> None:
        began = time.monotonic()
        try:
            operations[name]()
        except BaseException as exc:
            outcomes.append((name, exc, time.monotonic() - began))
        else:
            outcomes.append((name, None, time.monotonic() - began))

    threads = [threading.Thread(target=call, args=(name,)) for name in CALLS]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(name for name, _, _ in outcomes) == sorted(CALLS)
    assert all(isinstance(error, StateUnavailable) for _, error, _ in outcomes), outcomes
    assert max(seconds for _, _, seconds in outcomes) < 2.0, outcomes
    assert time.monotonic() - began < 2.5


async def _on_a_server(
    url: str, calls: tuple[str, ...]
) -> tuple[list[tuple[BaseException | object, float]], set[asyncio.Task[object]]]:
    """Each call's outcome and seconds taken, and the tasks still pending once every call
    has returned (before the clients are closed, which would cancel what a call left behind)."""
    container = _redis_state(url)
    operations = _operations(container.async_state_service())

    async def timed(call: str) -> tuple[BaseException | object, float]:
        began = time.monotonic()
        try:
            outcome: BaseException | object = await cast(Awaitable[object], operations[call]())
        except Exception as exc:
            outcome = exc
        return outcome, time.monotonic() - began

    try:
        # A hang fails the test here rather than stalling the suite.
        outcomes = await asyncio.wait_for(asyncio.gather(*map(timed, calls)), timeout=5)
        await asyncio.sleep(0)  # a task a call started but did not await gets its turn
        pending = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
    finally:
        await container.aclose()
    return outcomes, pending


def test_refused_connection_fails_an_asyncio_call_within_half_a_second() -> None:
    outcomes, pending = asyncio.run(_on_a_server(f"redis://127.0.0.1:{free_port()}/0", CALLS[:3]))
    assert all(isinstance(outcome, StateUnavailable) for outcome, _ in outcomes), outcomes
    assert max(seconds for _, seconds in outcomes) < 0.5, outcomes
    assert not pending, pending


@pytest.mark.slow
def test_no_task_stays_blocked_on_a_hung_server(hung_server: str) -> None:
    outcomes, pending = asyncio.run(_on_a_server(hung_server, CALLS))
    assert len(outcomes) == len(CALLS)
    assert all(isinstance(outcome, StateUnavailable) for outcome, _ in outcomes), outcomes
    assert max(seconds for _, seconds in outcomes) < 2.0, outcomes
    assert not pending, pending


def test_a_read_only_replica_is_unavailable_not_a_bug() -> None:
    """READONLY (a failover under way, or a URL naming a replica): redis-py strips the prefix
    the reply-text check looked for, so the error's type decides."""
    from redis.exceptions import ReadOnlyError

    from vimbiso_state.adapters.redis.connection import RetryPolicy

    def write() -> None:
        raise ReadOnlyError("You can't write against a read only replica.")

    with pytest.raises(StateUnavailable, match="read-only replica"):
        RetryPolicy(retries=2, backoff=0).call(write)
