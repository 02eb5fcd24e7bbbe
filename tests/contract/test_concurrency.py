"""Concurrent writers on one conversation, on every backend: nothing lost, nothing applied twice.

Threads share one StateService (as a bot's worker threads do), so on Redis they share one
connection pool and queue for the user's lease; on memory, for the repository's lock. Each
test checks the stored entries, how often each change ran, and the versions: every applied
write has a version of its own, above every one before it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import ConcurrencyConflict
from vimbiso_state.services.state_service import StateService

THREADS = 8
PER_THREAD = 25
JOIN_TIMEOUT = 60.0


class BotBug(Exception):
    """Raised by a change on purpose."""


def _run_threads(target: Callable[[int], Any]) -> list[Any]:
    """Run target(0..THREADS-1) in threads released together; re-raise a thread's exception."""
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []
    gate = threading.Barrier(THREADS)

    def run(index: int) -> None:
        try:
            gate.wait()
            results[index] = target(index)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    if errors:
        raise errors[0]
    return results


def test_concurrent_appends_run_once_each_and_lose_nothing(state: StateService, phone: str) -> None:
    base = state.start(phone).version
    runs = Counter[str]()

    def writer(thread: int) -> list[tuple[str, int]]:
        applied = []
        for i in range(PER_THREAD):
            entry = f"t{thread}-{i}"

            def change(conv: Conversation, entry: str = entry) -> None:
                runs[entry] += 1
                conv.context.setdefault("entries", []).append(entry)

            applied.append((entry, state.update(phone, change).version))
        return applied

    applied = [pair for pairs in _run_threads(writer) for pair in pairs]
    conv = state.start(phone)
    entries = conv.context["entries"]
    assert Counter(entries) == Counter(entry for entry, _ in applied), "entries lost or doubled"
    assert set(runs.values()) == {1}, "a change ran more than once"
    versions = [version for _, version in applied]
    assert len(set(versions)) == len(versions) and min(versions) > base
    assert conv.version == max(versions)
    # The stored order is the order of the versions: each write saw every one before it.
    assert entries == [entry for entry, _ in sorted(applied, key=lambda pair: pair[1])]


def test_a_change_that_raises_stores_nothing_under_concurrency(
    state: StateService, phone: str
) -> None:
    state.start(phone)

    def writer(thread: int) -> list[str]:
        applied = []
        for i in range(PER_THREAD):
            entry = f"t{thread}-{i}"
            if (thread + i) % 2:

                def broken(conv: Conversation, entry: str = entry) -> None:
                    conv.context.setdefault("entries", []).append(f"bad-{entry}")
                    conv.context["poisoned"] = True
                    conv.navigate("handle_half_done")
                    raise BotBug(entry)

                with pytest.raises(BotBug):
                    state.update(phone, broken)
                continue
            state.update(phone, lambda c, e=entry: c.context.setdefault("entries", []).append(e))
            applied.append(entry)
        return applied

    applied = [entry for entries in _run_threads(writer) for entry in entries]
    conv = state.start(phone)
    assert Counter(conv.context["entries"]) == Counter(applied)
    assert "poisoned" not in conv.context
    assert conv.stage != "handle_half_done" and "handle_half_done" not in conv.menu


@pytest.mark.parametrize("round_", range(5))
def test_handle_once_applies_a_concurrent_duplicate_once(
    state: StateService, phone: str, round_: int
) -> None:
    before = state.start(phone)
    message_id = f"wamid.concurrent-{round_}"

    def deliver(thread: int) -> Conversation | None:
        def change(conv: Conversation) -> None:
            conv.context["count"] = conv.context.get("count", 0) + 1
            conv.context.setdefault("handled_by", []).append(thread)

        return state.handle_once(phone, message_id, change)

    results = _run_threads(deliver)
    applied = [r for r in results if r is not None]
    assert len(applied) == 1, f"{len(applied)} deliveries applied, expected exactly one"
    conv = state.start(phone)
    assert conv.context["count"] == 1 and len(conv.context["handled_by"]) == 1
    assert conv.version == applied[0].version > before.version
    # A later redelivery is still recognised.
    assert state.handle_once(phone, message_id, lambda c: c.navigate("late")) is None


def test_deliveries_waiting_on_one_message_all_end_when_it_commits(
    container: Container, state: StateService, phone: str
) -> None:
    """Each commit wakes one waiter; a delivery woken only to find its message handled passes
    the wake on, so none of the others sleeps out its whole ``lease_wait``."""
    state.start(phone)
    lease_wait = container.settings().lease_wait
    took: list[float] = [0.0] * THREADS

    def deliver(thread: int) -> Conversation | None:
        began = time.monotonic()
        try:
            return state.handle_once(phone, "wamid.waited-on", lambda conv: time.sleep(0.1))
        finally:
            took[thread] = time.monotonic() - began

    applied = [result for result in _run_threads(deliver) if result is not None]
    assert len(applied) == 1
    assert max(took) < lease_wait / 2, sorted(round(seconds, 2) for seconds in took)


def test_more_threads_than_connections_wait_for_one(container: Container, phone: str) -> None:
    """96 threads on a 64-connection pool: they queue for a connection, none fails."""
    state = container.state_service()
    base = int(phone.lstrip("+"))
    users = [str(base + 3_000_000 + n) for n in range(96)]
    barrier = threading.Barrier(len(users))

    def own(digits: str) -> str:
        barrier.wait()
        conv = state.update(digits, lambda c: c.context.update(owner=digits))
        return str(conv.context["owner"])

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        assert list(pool.map(own, users)) == users


def test_a_reset_during_a_write_in_flight_stores_nothing_of_that_write(
    state: StateService, container: Container, phone: str
) -> None:
    """Another host (or thread) resets the user and builds a new conversation while a write
    holds the user: the write's commit finds its hold gone (ConcurrencyConflict) and stores
    nothing, and its change is not run again on the new conversation."""
    other = container.state_service()
    state.set_profile(phone, {"memberID": "old-member"}, [{"accountID": "a-1"}])
    runs: list[str | None] = []
    reset_in = threading.Event()

    def reset_and_rebuild() -> None:
        other.reset(phone)  # takes the user at once
        reset_in.set()
        other.set_profile(phone, {"memberID": "new-member"}, [{"accountID": "a-1"}])

    rebuild = threading.Thread(target=reset_and_rebuild, daemon=True)

    def change(conv: Conversation) -> None:
        runs.append(conv.profile.member.member_id if conv.profile else None)
        rebuild.start()  # another thread: this one holds the user
        assert reset_in.wait(JOIN_TIMEOUT)
        conv.navigate("handle_action_offer_credex")

    with pytest.raises(ConcurrencyConflict):
        state.update(phone, change)
    rebuild.join(JOIN_TIMEOUT)
    assert runs == ["old-member"]
    stored = other.start(phone)
    assert stored.profile is not None and stored.profile.member.member_id == "new-member"
    assert stored.stage == "handle_action_menu"  # the lost write's navigation is not there
