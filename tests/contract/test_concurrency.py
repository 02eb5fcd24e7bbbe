"""Concurrent writers on one conversation, on every backend: nothing lost, nothing applied twice.

Threads share one StateService (as a bot's worker threads do), so on Redis they share one
connection pool and race through the compare-and-set in save.lua; on memory, through the
repository's lock. Each test checks the count of stored entries AND the version: the version
moves exactly once per applied write, so a write applied twice or half-applied shows up.
"""

from __future__ import annotations

import threading
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


def _append(entry: str) -> Callable[[Conversation], None]:
    # A function of the conversation it is given, as update() requires: safe to run again.
    def change(conv: Conversation) -> None:
        conv.context.setdefault("entries", []).append(entry)

    return change


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


def _stored(state: StateService, phone: str) -> Conversation:
    return state.start(phone)


def _append_until_applied(state: StateService, phone: str, entry: str) -> int:
    """Append ``entry``, calling update again after each ConcurrencyConflict (its bounded
    retries used up: nothing was stored, so trying again is safe); how many there were."""
    conflicts = 0
    while True:
        try:
            state.update(phone, _append(entry))
        except ConcurrencyConflict:
            conflicts += 1
            continue
        return conflicts


@pytest.mark.parametrize("max_retries", [8, 0], ids=["default_retries", "no_retries"])
def test_concurrent_appends_lose_nothing_and_duplicate_nothing(
    container: Container, phone: str, max_retries: int
) -> None:
    # With no retries most collisions surface as ConcurrencyConflict, which the thread retries
    # itself: the stored list must still be exactly the successful appends.
    container.config.from_dict({"max_retries": max_retries})
    state = container.state_service()
    base = state.start(phone).version
    conflicts = Counter[int]()

    def writer(thread: int) -> list[str]:
        applied = []
        for i in range(PER_THREAD):
            entry = f"t{thread}-{i}"
            conflicts[thread] += _append_until_applied(state, phone, entry)
            applied.append(entry)
        return applied

    applied = [entry for entries in _run_threads(writer) for entry in entries]
    conv = _stored(state, phone)
    entries = conv.context["entries"]
    assert len(applied) == THREADS * PER_THREAD
    assert Counter(entries) == Counter(applied), "entries lost or duplicated"
    assert len(entries) == len(set(entries)) == THREADS * PER_THREAD
    # One version step per applied update: nothing was written twice or left half-done.
    assert conv.version == base + THREADS * PER_THREAD
    # Each thread's own appends are stored in the order it made them.
    for thread in range(THREADS):
        mine = [e for e in entries if e.startswith(f"t{thread}-")]
        assert mine == [f"t{thread}-{i}" for i in range(PER_THREAD)]
    # Reported, not asserted: how often the bounded retries ran out under this load.
    print(f"ConcurrencyConflict raised {sum(conflicts.values())} times")


def test_conflicts_past_the_bound_raise_and_store_nothing(container: Container, phone: str) -> None:
    """Every writer loads the same version before anyone saves: one wins, the rest conflict.

    With max_retries=0 the losers must raise ConcurrencyConflict (never loop, never store).
    """
    container.config.from_dict({"max_retries": 0})
    state = container.state_service()
    base = state.start(phone).version
    loaded = threading.Barrier(THREADS)

    def writer(thread: int) -> str:
        def change(conv: Conversation) -> None:
            conv.context.setdefault("entries", []).append(f"t{thread}")
            loaded.wait(JOIN_TIMEOUT)  # every thread holds the same version before saving

        try:
            state.update(phone, change)
        except ConcurrencyConflict:
            return "conflict"
        return "applied"

    outcomes = _run_threads(writer)
    assert Counter(outcomes) == {"applied": 1, "conflict": THREADS - 1}
    conv = _stored(state, phone)
    winner = outcomes.index("applied")
    assert conv.context["entries"] == [f"t{winner}"]
    assert conv.version == base + 1


def test_retries_after_a_conflict_rerun_the_change_on_fresh_state(
    container: Container, phone: str
) -> None:
    """With retries left, the losers reload and re-run their change: all of them land once."""
    container.config.from_dict({"max_retries": THREADS})
    state = container.state_service()
    base = state.start(phone).version
    loaded = threading.Barrier(THREADS)
    runs = Counter[int]()

    def writer(thread: int) -> None:
        def change(conv: Conversation) -> None:
            runs[thread] += 1
            conv.context.setdefault("entries", []).append(f"t{thread}")
            if runs[thread] == 1:
                loaded.wait(JOIN_TIMEOUT)

        state.update(phone, change)

    _run_threads(writer)
    conv = _stored(state, phone)
    assert sorted(conv.context["entries"]) == sorted(f"t{i}" for i in range(THREADS))
    assert conv.version == base + THREADS
    assert sum(runs.values()) > THREADS  # the changes really were re-run after conflicts


def test_a_change_that_raises_stores_nothing_under_concurrency(
    state: StateService, phone: str
) -> None:
    base = state.start(phone).version

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
            _append_until_applied(state, phone, entry)
            applied.append(entry)
        return applied

    applied = [entry for entries in _run_threads(writer) for entry in entries]
    conv = _stored(state, phone)
    assert Counter(conv.context["entries"]) == Counter(applied)
    assert not any(e.startswith("bad-") for e in conv.context["entries"])
    assert "poisoned" not in conv.context
    assert conv.stage != "handle_half_done" and "handle_half_done" not in conv.menu
    assert conv.version == base + len(applied)


@pytest.mark.parametrize("round_", range(5))
def test_handle_once_applies_a_concurrent_duplicate_once(
    state: StateService, phone: str, round_: int
) -> None:
    state.start(phone)
    message_id = f"wamid.concurrent-{round_}"
    before = state.start(phone)

    def deliver(thread: int) -> Conversation | None:
        def change(conv: Conversation) -> None:
            conv.context["count"] = conv.context.get("count", 0) + 1
            conv.context.setdefault("handled_by", []).append(thread)

        while True:
            try:
                return state.handle_once(phone, message_id, change)
            except ConcurrencyConflict:
                continue  # nothing stored; WhatsApp would redeliver, so we retry

    results = _run_threads(deliver)
    applied = [r for r in results if r is not None]
    assert len(applied) == 1, f"{len(applied)} deliveries applied, expected exactly one"
    conv = _stored(state, phone)
    assert conv.context["count"] == 1
    assert len(conv.context["handled_by"]) == 1
    assert conv.version == before.version + 1
    assert applied[0].version == conv.version
    # A later redelivery is still recognised.
    assert state.handle_once(phone, message_id, _append("late")) is None


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


def test_a_reset_during_a_change_in_flight_makes_the_change_start_again(
    state: StateService, container: Container, phone: str
) -> None:
    """Another host (or thread) resets the user and builds a new conversation between this
    write's load and its save: the write must start again on the new conversation, not pass
    the compare-and-set with the version it loaded before the reset."""
    other = container.state_service()
    state.set_profile(phone, {"memberID": "old-member"}, [{"accountID": "a-1"}])
    runs: list[str | None] = []

    def change(conv: Conversation) -> None:
        runs.append(conv.profile.member.member_id if conv.profile else None)
        if len(runs) == 1:
            other.reset(phone)
            other.set_profile(phone, {"memberID": "new-member"}, [{"accountID": "a-1"}])
        conv.navigate("handle_action_offer_credex")

    conv = state.update(phone, change)
    assert runs == ["old-member", "new-member"]
    assert conv.profile is not None and conv.profile.member.member_id == "new-member"
    stored = other.start(phone)
    assert stored.profile is not None and stored.profile.member.member_id == "new-member"
