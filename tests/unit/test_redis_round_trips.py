"""The Redis repositories' round trips, driven with scripted replies: no server, no I/O.

round_trips.py decides what each repository method sends; store.py and aio.py only send it.
These tests read the requests it makes, so a change that costs a round trip, or sends the
wrong script or keys, fails here before any server is involved.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

from fakes import DIGITS, T0

from vimbiso_state.adapters.redis.aio import (
    AsyncRedisConversationRepository,
    AsyncRedisTokenRepository,
)
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.partitions import partition_of, slot_tags
from vimbiso_state.adapters.redis.round_trips import (
    ConversationRoundTrips,
    OnNode,
    Pipeline,
    ReadToken,
    RoundTrips,
    Script,
    Servers,
    read_token,
)
from vimbiso_state.adapters.redis.scripts import ACK, BEGIN, CLAIM
from vimbiso_state.adapters.redis.store import RedisConversationRepository, RedisTokenRepository
from vimbiso_state.domain.expirations import ExpiryKind
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import Claim
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.domain.timestamps import micros

PHONE = PhoneNumber(DIGITS)
T0_US = micros(T0)
USER = KeySchema().for_user(PHONE)


def trips(*, cluster: bool = False) -> ConversationRoundTrips:
    return ConversationRoundTrips(Timeouts(), KeySchema(cluster), not cluster, wait_slice=0.2)


def drive(round_trips: RoundTrips[Any], *replies: Any) -> tuple[list[Any], Any]:
    """Run round trips against scripted replies: the requests they made, and their answer."""
    requests: list[Any] = []
    answers = iter(replies)
    reply = None
    while True:
        try:
            request = round_trips.send(reply)
        except StopIteration as done:
            return requests, done.value
        requests.append(request)
        reply = next(answers)


def test_a_begin_holds_the_user_and_reads_the_parts_in_one_pipeline() -> None:
    sent, begun = drive(
        trips().begin(PHONE, T0, "wamid.1", "lease-1", timedelta(0)),
        [[b"ok", 0, []], [None, None, None, None]],
    )
    [pipeline] = sent
    assert isinstance(pipeline, Pipeline) and pipeline.wait is None
    begin, read = pipeline.calls
    assert isinstance(begin, Script) and begin.script is BEGIN and begin.keys == USER.begin
    assert read.name == "mget" and read.args == (USER.parts,)
    # A user with no stored version: the fence is now, on the store's clock.
    assert begun.fence == T0_US and begun.stored.critical is None and begun.token is None


def test_a_begins_fence_is_above_a_stored_version_from_a_clock_that_ran_ahead() -> None:
    ahead = T0_US + 5_000_000
    user = b"%016d%016d%016d%016d%016d{}" % (T0_US, ahead, 0, 0, 0)
    _, begun = drive(
        trips().begin(PHONE, T0, "wamid.1", "lease-1", timedelta(0)),
        [[b"ok", 0, []], [user, None, None, None]],
    )
    assert begun.stored.version == ahead and begun.fence == ahead + 1


def test_a_waiting_begin_blocks_on_the_users_wake_list_in_the_same_round_trip() -> None:
    sent, begun = drive(
        trips().begin(PHONE, T0, None, "lease-1", timedelta(seconds=5)),
        [None, [b"busy", 0, [], 900], [None, None, None, None]],  # BLPOP, begin, MGET
    )
    [pipeline] = sent
    assert pipeline.wait == (USER.wake, 0.2)  # one slice of the wait, then begin again
    assert begun.busy_for == timedelta(milliseconds=900)


def test_on_a_cluster_begin_reads_the_parts_inside_its_script() -> None:
    # A cluster client's pipelines refuse scripts: the wait is part of the same request.
    sent, begun = drive(
        trips(cluster=True).begin(PHONE, T0, None, "lease-1", timedelta(seconds=1)),
        [b"ok", 0, [], None, None, None, b"sealed"],
    )
    [call] = sent
    assert isinstance(call, Script) and call.script is BEGIN and call.keys == USER.begin_reading
    assert call.wait == (USER.wake, 0.2) and call.args[4] == b"1"
    assert begun.fence == T0_US and begun.token == b"sealed"


def _due(member: str, score: int, deadline: int, form: bytes = b"") -> list[Any]:
    """One due event as claim.lua answers it."""
    return [member.encode(), str(score).encode(), deadline, 0, form]


def test_a_claim_asks_each_server_only_for_what_is_still_missing() -> None:
    groups = [("a", ["expiry:{x}", "expiry:{y}"]), ("b", ["expiry:{z}"]), ("c", ["expiry:{w}"])]
    sent, taken = drive(
        trips(cluster=True).claim(T0, 3, timedelta(minutes=1)),
        groups,
        _due(f"s:{DIGITS}", 1, 1) + _due(f"f:{DIGITS}", 2, 2, b'{"name": "offer"}'),
        _due("s:263771234568", 3, 3),
    )
    servers, first, second = sent  # the limit is taken: the third server is not asked
    assert isinstance(servers, Servers) and isinstance(first, OnNode)
    assert first.script is CLAIM and first.node == "a"
    assert first.keys == ["expiry:{x}"] and first.args[-1] == "expiry:{y}"  # the server's others
    assert first.args[2] == 3 and second.args[2] == 1
    assert [(c.kind, c.digits, c.previous, e.phone) for c, e in taken] == [
        (ExpiryKind.SESSION, DIGITS, 1, DIGITS),
        (ExpiryKind.FORM, DIGITS, 2, DIGITS),
        (ExpiryKind.SESSION, "263771234568", 3, "263771234568"),
    ]
    mark = T0_US + 60_000_000
    assert {c.mark for c, _ in taken} == {mark}  # the lease's end marks every claim


def test_acks_are_one_call_a_server_and_none_for_nothing_claimed() -> None:
    cluster = trips(cluster=True)
    a, b = [f"expiry:{{{tag}}}" for tag in slot_tags()[:2]]
    first, second = DIGITS, "263771234568"
    assert partition_of(first, True) != partition_of(second, True)
    groups = [("a", [partition_of(first, True), a]), ("b", [partition_of(second, True), b])]
    claims = [Claim(d, ExpiryKind.FORM, 5, 1) for d in (first, second, first)]
    sent, _ = drive(cluster.ack(claims, T0), groups, 2, 1)
    _, on_a, on_b = sent
    assert isinstance(on_a, OnNode) and on_a.script is ACK and (on_a.node, on_b.node) == ("a", "b")
    assert on_a.args[1:] == [partition_of(first, True), f"f:{first}", 5] * 2
    assert on_b.args[1:] == [partition_of(second, True), f"f:{second}", 5]
    single, _ = drive(trips().ack(claims, T0), [(None, ["expiry:{0}"])], 3)
    assert [type(r) for r in single] == [Servers, OnNode]  # one server: one call
    assert drive(trips().ack([], T0)) == ([], None)  # nothing claimed: no round trip


def test_a_token_is_one_read_of_the_users_token_key() -> None:
    sent, token = drive(read_token(KeySchema(), PHONE), b"sealed")
    assert sent == [ReadToken(USER.token)] and token == b"sealed"


def test_the_blocking_and_asyncio_repositories_offer_the_same_calls() -> None:
    """Both send what round_trips.py asks: their methods differ only in being awaited."""
    for blocking, awaited in (
        (RedisConversationRepository, AsyncRedisConversationRepository),
        (RedisTokenRepository, AsyncRedisTokenRepository),
    ):
        names = {n for n in vars(awaited) if not n.startswith("_")}
        assert names and names <= {n for n in vars(blocking) if not n.startswith("_")}
        for name in names:
            assert inspect.iscoroutinefunction(getattr(awaited, name)), name
            assert inspect.signature(getattr(awaited, name)) == inspect.signature(
                getattr(blocking, name)
            ), name
