"""Redis repositories: the key schema, TTLs, and one round trip per load and per save."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy, is_wrong_type
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.protocol import ConversationCalls, message_digest, px
from vimbiso_state.adapters.redis.scripts import BEGIN, EFFECT, LOAD, RELEASE, SAVE
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    ConversationWrite,
    EffectRecord,
    StoredConversation,
    TokenChange,
    WriteResult,
)
from vimbiso_state.domain.timeouts import Timeouts


class RedisConversationRepository:
    """Conversations under ``user:{phone}:state``, ``session:{phone}:data`` and
    ``form:{phone}:data``, the handled operation and message ids, and the lease and effects of
    the message being handled (see protocol.py).

    ``waits`` is the client a message blocks on while it waits for the user's previous
    message (its socket timeout must outlast ``wait_slice``, the longest single block); the
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

    def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        if self._calls.reads_plainly(message_id, touch):
            recalled = self._calls.recalled(phone.digits, now)
            if recalled is not None:
                return recalled
            documents = self._keys.for_user(phone).documents
            values = self._retry.call(lambda: self._client.mget(documents))
            return self._calls.read(values, now, remember=phone.digits)
        keys = self._keys.for_user(phone).load
        args = self._calls.load_args(now, message_id, touch)
        reply = self._retry.call(lambda: LOAD(self._client, keys, args))
        return self._calls.loaded(reply, now, remember=phone.digits)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline or writing (operators' tools)."""
        documents = self._keys.for_user(phone).documents
        return self._calls.peeked(self._retry.call(lambda: self._client.mget(documents)))

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        return self._save(phone, write, now, "", None)

    def delete(self, phone: PhoneNumber) -> None:
        """Forget the conversation and free the user (handled ids and effects stay)."""
        keys = self._keys.for_user(phone).release
        try:
            self._retry.call(lambda: RELEASE(self._client, keys, [""]))
        finally:
            self._calls.recent.forget(phone.digits)

    # Messages
    def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str, lease: str, wait: timedelta
    ) -> Begun:
        user = self._keys.for_user(phone)
        waited = wait > timedelta(0)
        # A wait blocks until the holder ends (or the wait is up), then tries again.
        seconds = round(min(wait.total_seconds(), self._wait_slice), 3) or 0.001
        self._calls.recent.forget(phone.digits)
        if isinstance(self._client, RedisCluster):
            # The cluster client's pipelines refuse scripts: load.lua holds the user and
            # reads the parts in one script, and a wait costs a round trip of its own.
            args = self._calls.load_args(now, message_id, False, lease, waited)

            def on_cluster() -> Any:
                if waited:
                    self._waits.blpop([user.wake], timeout=seconds)
                return LOAD(self._client, user.load, args)

            return self._calls.begun(self._retry.call(on_cluster), now)
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
        lease: str,
        write: ConversationWrite,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        return self._save(phone, write, now, lease, token)

    def release(self, phone: PhoneNumber, lease: str) -> None:
        keys = self._keys.for_user(phone).release
        self._retry.call(lambda: RELEASE(self._client, keys, [lease]))

    def effect_start(
        self, phone: PhoneNumber, lease: str, message_id: str, name: str, now: datetime
    ) -> EffectRecord:
        keys = self._effect_keys(phone, message_id)
        args = self._calls.effect_args(lease, name, None)
        return self._calls.effect_record(self._retry.call(lambda: EFFECT(self._client, keys, args)))

    def effect_finish(
        self, phone: PhoneNumber, message_id: str, name: str, result: bytes, now: datetime
    ) -> None:
        keys = self._effect_keys(phone, message_id)
        args = self._calls.effect_args("", name, result)
        self._retry.call(lambda: EFFECT(self._client, keys, args))

    def _effect_keys(self, phone: PhoneNumber, message_id: str) -> list[str]:
        user = self._keys.for_user(phone)
        return [user.lease, user.effects(message_digest(message_id))]

    def _save(
        self,
        phone: PhoneNumber,
        write: ConversationWrite,
        now: datetime,
        lease: str,
        token: TokenChange | None,
    ) -> WriteResult:
        keys = self._keys.for_user(phone).save
        call = self._calls.save_args(write, now, lease, token)
        try:
            reply = self._retry.call(lambda: SAVE(self._client, keys, call.args))
        except BaseException:
            self._calls.recent.forget(phone.digits)  # the outcome is unknown
            raise
        return self._calls.saved(reply, phone.digits, call)


class RedisTokenRepository:
    """Sealed tokens under ``token:{phone}`` with the token TTL."""

    def __init__(
        self, client: RedisClient, retry: RetryPolicy | None = None, keys: KeySchema | None = None
    ) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()
        self._keys = keys or KeySchema()

    def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None:
        key = self._keys.for_user(phone).token
        self._retry.call(lambda: self._client.set(key, sealed, px=px(ttl)))

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

    def delete(self, phone: PhoneNumber) -> bool:
        key = self._keys.for_user(phone).token
        return bool(self._retry.call(lambda: self._client.delete(key)))
