"""The Redis repositories' round trips, written once for both I/O styles.

Each repository method is a generator here (sans-I/O, like services/flows.py): it yields the
requests to send, is sent each reply, and returns the domain's answer. store.py carries the
requests out with a blocking client and aio.py with an asyncio one, each retrying a request
as a whole; neither decides anything else, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from vimbiso_state.adapters.redis.calls import ScriptCalls, micros_of
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.layout import legacy_digest
from vimbiso_state.adapters.redis.partitions import PartitionGroups, partition_of, partitions
from vimbiso_state.adapters.redis.scripts import (
    ACK,
    BEGIN,
    CLAIM,
    COMMIT,
    DUE,
    EFFECT,
    FORGET,
    LOAD,
    PEEK,
    RELEASE,
    LuaScript,
)
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.expirations import Expiration
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    ConversationWrite,
    EffectRecord,
    Holder,
    StoredConversation,
    TokenChange,
    WriteResult,
)
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.domain.timestamps import micros

CLAIMED_FIELDS = 5  # claim.lua's reply: member, score before, deadline, inbound, form

T = TypeVar("T")


# The requests: each is one round trip, retried as a whole.
class Wait(NamedTuple):
    """Block first on the waits client until the user's holder ends, up to ``seconds``."""

    key: str
    seconds: float


class Script(NamedTuple):
    """One script call (EVALSHA, then EVAL after NOSCRIPT), after ``wait`` if any."""

    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]
    wait: Wait | None = None


class Command(NamedTuple):
    """A plain command in a pipeline: the pipeline's method of that name, with ``args``."""

    name: str
    args: tuple[Any, ...]


class Pipeline(NamedTuple):
    """Calls in one round trip, their replies in order (``wait``'s first, on the waits
    client); every script again by its source after a NOSCRIPT."""

    calls: Sequence[Script | Command]
    wait: Wait | None = None


class Servers(NamedTuple):
    """The servers holding the expiry index's partitions, from the client's slot map (an
    asyncio cluster client reads it on first use): from the next one in ``groups``' turn,
    or (``in_turn`` False) in their order."""

    groups: PartitionGroups
    in_turn: bool = True


class OnNode(NamedTuple):
    """A script on one server (``node`` None: wherever its keys are); ``failed`` runs after
    each failed attempt."""

    script: LuaScript
    node: Any
    keys: Sequence[str]
    args: Sequence[Any]
    failed: Callable[[], None]


class ReadToken(NamedTuple):
    """GET of a token key; a key of another type there is damaged: deleted, read as None."""

    key: str


Request = Script | Pipeline | Servers | OnNode | ReadToken
RoundTrips = Generator[Request, Any, T]


def queue(pipe: Any, pipeline: Pipeline, by_source: bool) -> None:
    """Queue a Pipeline's calls on a redis-py pipeline, blocking or asyncio (queueing does no
    I/O in either): by SHA, or by source once the server has answered NOSCRIPT."""
    if pipeline.wait is not None:
        pipe.blpop([pipeline.wait.key], timeout=pipeline.wait.seconds)
    for call in pipeline.calls:
        if isinstance(call, Script):
            call.script.queue(pipe, call.keys, call.args, by_source)
        else:
            getattr(pipe, call.name)(*call.args)


class ConversationRoundTrips:
    """What the conversation repositories send: the unit of work (begin, effects, commit),
    reads, and the expiry index. ``pipelined_scripts`` is False for a cluster client, whose
    pipelines refuse scripts."""

    def __init__(
        self, timeouts: Timeouts, keys: KeySchema, pipelined_scripts: bool, wait_slice: float
    ) -> None:
        self.calls = ScriptCalls(timeouts)
        self._keys = keys
        self._pipelined = pipelined_scripts
        self._partitions = PartitionGroups(keys.cluster)
        self._servers: tuple[object, dict[str, int]] = (None, {})
        self._wait_slice = wait_slice

    def load(self, phone: PhoneNumber, now: datetime) -> RoundTrips[StoredConversation]:
        keys, args = self._keys.for_user(phone).load, self.calls.load_args(now, True)
        return self.calls.load_reply((yield Script(LOAD, keys, args)), now)

    def peek(self, phone: PhoneNumber) -> RoundTrips[StoredConversation]:
        keys, args = self._keys.for_user(phone).load, self.calls.peek_args()
        return self.calls.peek_reply((yield Script(PEEK, keys, args)))

    def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str | None, lease: str, wait: timedelta
    ) -> RoundTrips[Begun]:
        user = self._keys.for_user(phone)
        waited = wait > timedelta(0)
        block = None
        if waited:
            # A wait blocks until the holder ends (or the wait is up), then tries again.
            block = Wait(user.wake, round(min(wait.total_seconds(), self._wait_slice), 3) or 0.001)
        args = self.calls.begin_args(now, message_id, lease, waited)
        if not self._pipelined:
            # begin.lua reads the parts itself, and a wait costs a round trip of its own.
            reply = yield Script(BEGIN, user.begin_reading, args, block)
            return self.calls.begin_reply(reply, None, now)
        # One round trip: (the wait,) hold the user, read the parts.
        read = Command("mget", (user.parts,))
        replies = yield Pipeline((Script(BEGIN, user.begin, args), read), block)
        return self.calls.begin_reply(replies[-2], replies[-1], now)

    def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> RoundTrips[WriteResult]:
        user = self._keys.for_user(phone)
        keys = user.commit if token is None else [*user.commit, user.token]
        args = self.calls.commit_args(holder, message_id, write, token, now)
        return self.calls.commit_reply((yield Script(COMMIT, keys, args)), holder)

    def release(self, phone: PhoneNumber, lease: str) -> RoundTrips[None]:
        yield Script(RELEASE, self._keys.for_user(phone).release, [lease])

    def forget(self, phone: PhoneNumber) -> RoundTrips[None]:
        yield Script(FORGET, self._keys.for_user(phone).forget, [])

    def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> RoundTrips[EffectRecord]:
        keys = self._keys.for_user(phone).effect(legacy_digest(effect.key))
        args = self.calls.effect_start_args(holder, effect, now)
        return self.calls.effect_reply((yield Script(EFFECT, keys, args)))

    def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> RoundTrips[EffectRecord]:
        keys = self._keys.for_user(phone).effect(None)
        args = self.calls.effect_finish_args(effect, result, now, settle)
        return self.calls.effect_reply((yield Script(EFFECT, keys, args)))

    # The expiry index
    def claim(
        self, now: datetime, limit: int, lease: timedelta
    ) -> RoundTrips[list[tuple[Claim, Expiration]]]:
        args = self.calls.claim_args(now, limit, lease)
        taken = yield from self._each_server(CLAIM, args)
        return self.calls.claim_reply(taken, micros(now) + micros_of(lease))

    def due(self, now: datetime, limit: int) -> RoundTrips[list[Expiration]]:
        """Up to ``limit`` due events, taken by nobody: nothing is written (operators' tools;
        it runs on a full server too)."""
        args = self.calls.claim_args(now, limit, timedelta(0), peek=True)
        taken = yield from self._each_server(DUE, args)
        return [event for _, event in self.calls.claim_reply(taken, None)]

    def _each_server(self, script: LuaScript, args: list[Any]) -> RoundTrips[list[Any]]:
        """claim.lua on every server that holds partitions of the index (one call a server),
        until ``args``' limit is reached; the replies joined."""
        limit, taken = int(args[2]), list[Any]()
        groups: list[tuple[Any, list[str]]] = yield Servers(self._partitions)
        for node, keys in groups:
            forget = self._partitions.forget  # the slot map moved: group them again
            taken += yield OnNode(script, node, keys[:1], [*args, *keys[1:]], forget)
            args[2] = limit - len(taken) // CLAIMED_FIELDS
            if args[2] <= 0:
                break
        return taken

    def ack(self, claims: Sequence[Claim], now: datetime) -> RoundTrips[None]:
        """ack.lua once a server, for the claims whose entries it holds."""
        if not claims:
            return
        groups: list[tuple[Any, list[str]]] = yield Servers(self._partitions, in_turn=False)
        server_of = self._server_of(groups)
        by_server: dict[int, list[Claim]] = {}
        for claim in claims:
            by_server.setdefault(server_of[self._partition_of(claim.digits)], []).append(claim)
        for server, mine in by_server.items():
            args = self.calls.ack_args(mine, self._partition_of, now)
            first = [self._partition_of(mine[0].digits)]
            yield OnNode(ACK, groups[server][0], first, args, self._partitions.forget)

    def _server_of(self, groups: list[tuple[Any, list[str]]]) -> dict[str, int]:
        """Which of ``groups``' servers holds each partition (kept while the groups stand)."""
        if self._servers[0] is not groups:
            where = {key: at for at, (_, keys) in enumerate(groups) for key in keys}
            self._servers = (groups, where)
        return self._servers[1]

    def _partition_of(self, digits: str) -> str:
        return partition_of(digits, self._keys.cluster)

    def expiry_counts(self, now: datetime) -> RoundTrips[tuple[int, int]]:
        """Index entries not yet due, and due ones nobody took yet (operators' tools)."""
        counts: list[Command] = []
        for name in partitions(self._keys.cluster):
            counts += [Command("zcard", (name,)), Command("zcount", (name, "-inf", micros(now)))]
        counted = yield Pipeline(counts)
        total, due = sum(counted[::2]), sum(counted[1::2])
        return total - due, due


def read_token(keys: KeySchema, phone: PhoneNumber) -> RoundTrips[bytes | None]:
    value = yield ReadToken(keys.for_user(phone).token)
    # The client is built without decode_responses, so this is bytes or None.
    return value.encode() if isinstance(value, str) else value
