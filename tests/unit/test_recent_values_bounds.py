"""RecentValues (adapters/redis/protocol.py): bounded in age and in size, without a server."""

from __future__ import annotations

from datetime import timedelta

from fakes import T0

from vimbiso_state.adapters.redis.protocol import RECENT, RecentValues


def test_values_are_recalled_within_their_age_only() -> None:
    recent = RecentValues()
    recent.remember("263771234567", [b"u", b"s", None], T0)
    assert recent.recall("263771234567", T0) == [b"u", b"s", None]
    assert recent.recall("263771234567", T0 + RECENT) == [b"u", b"s", None]
    assert recent.recall("263771234567", T0 + RECENT + timedelta(microseconds=1)) is None
    assert recent.recall("263771234567", T0 - timedelta(seconds=1)) is None  # clock went back
    assert recent.recall("263771234568", T0) is None


def test_the_least_recently_stored_user_goes_first_when_full() -> None:
    recent = RecentValues(size=2)
    recent.remember("1", [b"1", None, None], T0)
    recent.remember("2", [b"2", None, None], T0)
    recent.remember("1", [b"1'", None, None], T0)  # stored again: now the most recent
    recent.remember("3", [b"3", None, None], T0)
    assert recent.recall("2", T0) is None
    assert recent.recall("1", T0) == [b"1'", None, None]
    assert recent.recall("3", T0) == [b"3", None, None]


def test_forgotten_values_are_not_recalled() -> None:
    recent = RecentValues()
    recent.remember("1", [b"1", None, None], T0)
    recent.forget("1")
    recent.forget("never seen")
    assert recent.recall("1", T0) is None


def test_the_values_held_stay_within_their_byte_budget() -> None:
    recent = RecentValues(max_bytes=10_000)
    for n in range(10):
        recent.remember(str(n), [b"u" * 2_000, b"s" * 500, None], T0)
    assert recent.held_bytes == 4 * 2_500  # the four most recent users
    assert recent.recall("5", T0) is None and recent.recall("6", T0) is not None
    recent.remember("9", [b"u" * 100, None, None], T0)  # stored again, smaller
    recent.forget("8")
    assert recent.held_bytes == 2 * 2_500 + 100
    recent.remember("big", [b"x" * 20_000, None, None], T0)  # larger than the budget
    assert recent.held_bytes == 0 and recent.recall("big", T0) is None
