"""Redis repositories: the key schema, TTLs, and one round trip for each step of a unit of
work (begin, each effect's start and finish, commit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy, is_wrong_type
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.partitions import PartitionGroups, partitions
from vimbiso_state.adapters.redis.protocol import (
    ConversationCalls,
    ExpiryCalls,
    legacy_digest,
)
from vimbiso_state.adapters.redis.scripts import (
    BEGIN,
    CLAIM,
    COMMIT,
    EFFECT,
    EXPIRY,
    FORGET,
    LOAD,
    RELEASE,
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


class RedisConversationRepository:
    """Conversations under ``user:{phone}:state``, ``session:{phone}:data`` and
    ``form:{phone}:data``, with the handled ids, the effect records and the lease of the unit
    of work that holds the user (see protocol.py).

    ``waits`` is the client a unit of work blocks on while it waits for the user's previous
    one (its socket timeout must outlast ``wait_slice``, the longest single block); the
    container gives it one with a long enough timeout. Without it, the main client waits in
    short slices.
    """

    def __init__(
        self,
        client: RedisClient,
        timeouts: Timeouts,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
        waits: RedisClient | None = None,
        wait_slice: float = 0.2,
    ) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()
        self._keys = keys or KeySchema(cluster=isinstance(client, RedisCluster))
        self._calls = ConversationCalls(timeouts)
        self._expiry = ExpiryCalls(timeouts)
        self._partitions = PartitionGroups(self._keys.cluster)
        self._waits = waits or client
        self._wait_slice = wait_slice

    def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        keys, args = self._keys.for_user(phone).load, self._calls.load_args(now, True)
        return self._calls.loaded(self._retry.call(lambda: LOAD(self._client, keys, args)), now)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline or writing (operators' tools)."""
        keys, args = self._keys.for_user(phone).load, self._calls.peek_args()
        return self._calls.peeked(self._retry.call(lambda: LOAD(self._client, keys, args)))

    # The unit of work
    def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None,
        lease: str,
        wait: timedelta,
    ) -> Begun:
        user = self._keys.for_user(phone)
        waited = wait > timedelta(0)
        # A wait blocks until the holder ends (or the wait is up), then tries again.
        seconds = round(min(wait.total_seconds(), self._wait_slice), 3) or 0.001
        if isinstance(self._client, RedisCluster):
            # The cluster client's pipelines refuse scripts: begin.lua reads the parts itself,
            # and a wait costs a round trip of its own.
            args = self._calls.begin_args(now, message_id, lease, waited, read_here=True)

            def on_cluster() -> Any:
                if waited:
                    self._waits.blpop([user.wake], timeout=seconds)
                return BEGIN(self._client, user.begin, args)

            return self._calls.began(self._retry.call(on_cluster), None, now)
        args = self._calls.begin_args(now, message_id, lease, waited)

        def attempt(by_source: bool) -> list[Any]:
            # One round trip: (the wait,) hold the user, read the parts.
            pipe = (self._waits if waited else self._client).pipeline(transaction=False)
            if waited:
                pipe.blpop([user.wake], timeout=seconds)
            BEGIN.queue(pipe, user.begin, args, by_source)
            pipe.mget(user.parts)
            replies: list[Any] = pipe.execute()
            return replies[-2:]

        def one_round_trip() -> list[Any]:
            try:
                return attempt(by_source=False)
            except NoScriptError:
                return attempt(by_source=True)

        reply, values = self._retry.call(one_round_trip)
        return self._calls.began(reply, values, now)

    def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        keys = self._keys.for_user(phone).commit
        args = self._calls.commit_args(phone.digits, holder, message_id, write, token, now)
        return self._calls.committed(self._retry.call(lambda: COMMIT(self._client, keys, args)))

    def release(self, phone: PhoneNumber, lease: str) -> None:
        keys = self._keys.for_user(phone).release
        self._retry.call(lambda: RELEASE(self._client, keys, [lease]))

    def forget(self, phone: PhoneNumber) -> None:
        keys = self._keys.for_user(phone).forget
        self._retry.call(lambda: FORGET(self._client, keys, []))

    def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        keys = self._keys.for_user(phone).effect(legacy_digest(effect.key))
        args = self._calls.effect_start_args(holder, effect, now)
        return self._calls.effect_record(self._retry.call(lambda: EFFECT(self._client, keys, args)))

    def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        keys = self._keys.for_user(phone).effect(None)
        args = self._calls.effect_finish_args(effect, result, now, settle)
        return self._calls.effect_record(self._retry.call(lambda: EFFECT(self._client, keys, args)))

    # Expiry events
    def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        reply = self._each_server(self._expiry.claim_args(now, limit, lease))
        return ExpiryCalls.claims(reply, now, lease)

    def due_entries(self, now: datetime, limit: int) -> list[Claim]:
        """Up to ``limit`` entries due at ``now``, read without claiming them (operators'
        tools): each with its score as both mark and previous score."""
        reply = self._each_server(self._expiry.claim_args(now, limit, timedelta(0), peek=True))
        return ExpiryCalls.entries(reply)

    def _each_server(self, args: list[Any]) -> list[Any]:
        """claim.lua on every server that holds partitions of the index (one call a server),
        until ``args``' limit is reached; the replies joined."""
        limit, taken = int(args[2]), list[Any]()
        for node, keys in self._partitions.in_turn(self._client):

            def attempt(node: Any = node, keys: list[str] = keys) -> list[Any]:
                try:
                    reply: list[Any] = CLAIM.on_node(
                        self._client, node, keys[:1], [*args, *keys[1:]]
                    )
                except Exception:
                    self._partitions.forget()  # the slot map moved: group them again
                    raise
                return reply

            taken += self._retry.call(attempt)
            args[2] = limit - len(taken) // 2
            if args[2] <= 0:
                break
        return taken

    def expiry_counts(self, now: datetime) -> tuple[int, int]:
        """Index entries not yet due, and due ones nobody took yet (operators' tools)."""
        names = partitions(self._keys.cluster)

        def count() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.zcard(name)
                pipe.zcount(name, "-inf", micros(now))
            counted: list[Any] = pipe.execute()
            return counted

        counted = self._retry.call(count)
        total, due = sum(counted[::2]), sum(counted[1::2])
        return total - due, due

    def check(self, claims: Sequence[Claim], now: datetime) -> list[Expiration | None]:
        replies = self._each(claims, lambda claim: self._expiry.check_args(claim, now))
        return [
            ExpiryCalls.checked(claim, reply) for claim, reply in zip(claims, replies, strict=True)
        ]

    def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        self._each(claims, lambda claim: self._expiry.ack_args(claim, now))

    def _each(self, claims: Sequence[Claim], args: Callable[[Claim], list[Any]]) -> list[Any]:
        """expiry.lua for each claim: one pipeline on a single Redis, a call each on a cluster
        (whose pipelines refuse scripts)."""
        keys = [self._keys.for_user(PhoneNumber(c.digits)).expiry_entry for c in claims]
        if isinstance(self._client, RedisCluster):
            return [
                self._retry.call(lambda k=k, c=c: EXPIRY(self._client, k, args(c)))
                for k, c in zip(keys, claims, strict=True)
            ]

        def attempt(by_source: bool) -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for k, c in zip(keys, claims, strict=True):
                EXPIRY.queue(pipe, k, args(c), by_source)
            replies: list[Any] = pipe.execute()
            return replies

        def one_round_trip() -> list[Any]:
            try:
                return attempt(by_source=False)
            except NoScriptError:
                return attempt(by_source=True)

        return self._retry.call(one_round_trip) if claims else []


class RedisTokenRepository:
    """Sealed tokens under ``token:{phone}`` (written by commits, with the token TTL)."""

    def __init__(
        self, client: RedisClient, retry: RetryPolicy | None = None, keys: KeySchema | None = None
    ) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()
        self._keys = keys or KeySchema()

    def get(self, phone: PhoneNumber) -> bytes | None:
        key = self._keys.for_user(phone).token

        def get() -> Any:
            try:
                return self._client.get(key)
            except ResponseError as exc:
                if not is_wrong_type(exc):
                    raise
                self._client.delete(key)  # not a token: damaged, the member logs in again
                return None

        value = self._retry.call(get)
        # The client is built without decode_responses, so this is bytes or None.
        return value.encode() if isinstance(value, str) else value
