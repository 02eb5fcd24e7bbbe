"""Redis repositories: the key schema, TTLs, and one round trip per load and per save."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.exceptions import NoScriptError

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.protocol import ConversationCalls, px, script_source
from vimbiso_state.adapters.redis.wire import Script, Wire, flatten, mget
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import ConversationWrite, StoredConversation, WriteResult
from vimbiso_state.domain.timeouts import Timeouts

LOAD = Script(script_source("load.lua"))
SAVE = Script(script_source("save.lua"))

ScriptRunner = Callable[[Script, Sequence[str], Sequence[Any]], Any]
DocumentReader = Callable[[Sequence[str]], Any]


def script_runner(client: RedisClient) -> ScriptRunner:
    """How scripts reach the server: the lean wire on one server, redis-py's routing on a
    cluster (it knows which node owns a slot and follows MOVED and ASK)."""
    if isinstance(client, redis.Redis):
        return Wire(client).script

    def on_cluster(script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            flat_keys = flatten(keys)
            return client.evalsha(script.sha, len(flat_keys), *flat_keys, *flatten(args))
        except NoScriptError:
            # Scripts are not replicated: a replica promoted by a failover never saw them.
            # EVAL runs and caches the script on the node that owns the keys; redis-py's own
            # fallback would SCRIPT LOAD on every master, so one down shard would fail all.
            flat_keys = flatten(keys)
            return client.eval(script.source, len(flat_keys), *flat_keys, *flatten(args))

    return on_cluster


def document_reader(client: RedisClient) -> DocumentReader:
    """MGET of one user's documents: the lean wire on one server, redis-py on a cluster (the
    keys share the phone's hash tag, so one node holds them all)."""
    if isinstance(client, redis.Redis):
        call = Wire(client).call
        return lambda keys: call(mget(keys))
    return lambda keys: client.mget(flatten(keys))


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
        self._script = script_runner(client)
        self._read = document_reader(client)

    def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        if self._calls.reads_plainly(message_id, touch):
            recalled = self._calls.recalled(phone.digits, now)
            if recalled is not None:
                return recalled
            documents = self._keys.documents(phone)
            values = self._retry.call(lambda: self._read(documents))
            return self._calls.read(values, now, remember=phone.digits)
        keys = self._keys.conversation(phone)
        args = self._calls.load_args(now, message_id, touch)
        reply = self._retry.call(lambda: self._script(LOAD, keys, args))
        return self._calls.loaded(reply, now, remember=phone.digits)

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline or writing (operators' tools)."""
        documents = self._keys.documents(phone)
        return self._calls.peeked(self._retry.call(lambda: self._read(documents)))

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        keys = self._keys.conversation(phone)
        args = self._calls.save_args(write, now)
        try:
            reply = self._retry.call(lambda: self._script(SAVE, keys, args))
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
