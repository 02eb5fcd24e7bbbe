"""Redis repositories: the key schema, TTLs, and one round trip for each step of a unit of
work (begin, each effect's start and finish, commit)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy, is_wrong_type
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.protocol import ConversationCalls, legacy_digest
from vimbiso_state.adapters.redis.scripts import BEGIN, COMMIT, EFFECT, FORGET, LOAD, RELEASE
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    ConversationWrite,
    EffectRecord,
    Holder,
    StoredConversation,
    TokenChange,
    WriteResult,
)
from vimbiso_state.domain.timeouts import Timeouts


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
        self._keys = keys or KeySchema()
        self._calls = ConversationCalls(timeouts)
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
        args = self._calls.commit_args(holder, message_id, write, token, now)
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
