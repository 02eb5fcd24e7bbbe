"""Redis repositories: the key schema, TTLs, and one round trip per load and per save."""

from __future__ import annotations

from datetime import datetime, timedelta

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.protocol import ConversationCalls, px
from vimbiso_state.adapters.redis.scripts import LOAD, SAVE
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import ConversationWrite, StoredConversation, WriteResult
from vimbiso_state.domain.timeouts import Timeouts


class RedisConversationRepository:
    """Conversations under ``user:{phone}:state``, ``session:{phone}:data`` and
    ``form:{phone}:data``, plus the handled operation and message ids (see protocol.py)."""

    def __init__(
        self,
        client: RedisClient,
        timeouts: Timeouts,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()
        self._keys = keys or KeySchema()
        self._calls = ConversationCalls(timeouts)

    def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        if self._calls.reads_plainly(message_id, touch):
            recalled = self._calls.recalled(phone.digits, now)
            if recalled is not None:
                return recalled
            documents = self._keys.documents(phone)
            values = self._retry.call(lambda: self._client.mget(documents))
            return self._calls.read(values, now, remember=phone.digits)
        keys = self._keys.conversation(phone)
        args = self._calls.load_args(now, message_id, touch)
        reply = self._retry.call(lambda: LOAD(self._client, keys, args))
        return self._calls.loaded(reply, now, remember=phone.digits)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline or writing (operators' tools)."""
        documents = self._keys.documents(phone)
        return self._calls.peeked(self._retry.call(lambda: self._client.mget(documents)))

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        keys = self._keys.conversation(phone)
        args = self._calls.save_args(write, now)
        try:
            reply = self._retry.call(lambda: SAVE(self._client, keys, args))
        except BaseException:
            self._calls.recent.forget(phone.digits)  # the outcome is unknown
            raise
        return self._calls.saved(reply, phone.digits, args)

    def delete(self, phone: PhoneNumber) -> None:
        keys = self._keys.for_user(phone).conversation
        try:
            self._retry.call(lambda: self._client.delete(*keys))
        finally:
            self._calls.recent.forget(phone.digits)


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
        value = self._retry.call(lambda: self._client.get(key))
        # The client is built without decode_responses, so this is bytes or None.
        return value.encode() if isinstance(value, str) else value

    def delete(self, phone: PhoneNumber) -> bool:
        key = self._keys.for_user(phone).token
        return bool(self._retry.call(lambda: self._client.delete(key)))
