"""Redis repositories: the key schema, TTLs, and one round trip per load and per save."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, TypeVar

from redis.exceptions import NoScriptError

from adapters import codec
from adapters.redis.connection import RedisClient, RetryPolicy
from adapters.redis.keys import KeySchema
from domain.conversation import CriticalData, Session
from domain.form import Form
from domain.phone import PhoneNumber
from domain.ports import ConversationWrite, StoredConversation, WriteResult, WriteStatus
from domain.timeouts import Timeouts

T = TypeVar("T")

# TTLs are set a little past the domain's deadline: Redis only collects garbage, the domain
# decides what has expired.
GRACE_MS = 2000
_STATUS = {
    b"ok": WriteStatus.APPLIED,
    b"applied": WriteStatus.APPLIED,
    b"conflict": WriteStatus.CONFLICT,
    b"duplicate": WriteStatus.DUPLICATE,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    # Integer arithmetic: float timestamps lose the last microsecond and break equality.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _micros_of(duration: timedelta) -> int:
    return (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds


def _from_micros(value: bytes) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000) + GRACE_MS


def _script(name: str) -> str:
    return resources.files("adapters.redis").joinpath(name).read_text(encoding="utf-8")


class LuaScript:
    """A script run by EVALSHA, with EVAL of its source when the server answers NOSCRIPT.

    A server forgets its scripts on restart and SCRIPT FLUSH, and in a cluster a replica
    promoted by a failover never saw them (scripts are not replicated). EVAL both runs the
    script and caches it, on the node that owns the keys, in one more round trip. redis-py's
    own fallback (register_script) instead sends SCRIPT LOAD to every master of the cluster,
    so one unreachable shard would fail the calls of every other shard.
    """

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._client.eval(self.source, len(keys), *keys, *args)


def message_member(message_id: str) -> str:
    # WhatsApp ids are long and caller-supplied: a digest keeps the set small and inert.
    return "m:" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


class RedisConversationRepository:
    """Conversations under ``user:{phone}:state``, ``session:{phone}:data`` and
    ``form:{phone}:data``, plus the handled operation and message ids."""

    def __init__(
        self,
        client: RedisClient,
        timeouts: Timeouts,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        self._client = client
        self._retry = retry or RetryPolicy()
        self._timeouts = timeouts
        self._keys = keys or KeySchema()
        self._load: Callable[..., Any] = LuaScript(client, _script("load.lua"))
        self._save: Callable[..., Any] = LuaScript(client, _script("save.lua"))
        self._state_timeout_us = _micros_of(timeouts.state)
        self._session_timeout_us = _micros_of(timeouts.session)

    def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None
    ) -> StoredConversation:
        t = self._timeouts
        args = [
            _micros(now),
            self._state_timeout_us,
            self._session_timeout_us,
            _ms(t.state),
            _ms(t.session),
            message_member(message_id) if message_id is not None else "",
        ]
        keys = self._keys.for_user(phone).conversation
        reply = self._retry.call(lambda: self._load(keys=keys, args=args))
        critical, critical_seen, version, session, session_seen, form, duplicate = reply
        parts = codec.StoredParts()
        return StoredConversation(
            critical=parts.read(
                CriticalData, critical, critical_seen and _from_micros(critical_seen)
            ),
            session=parts.read(Session, session, session_seen and _from_micros(session_seen)),
            form=parts.read(Form, form),
            version=int(version) if version is not None else 0,
            message_seen=bool(duplicate),
            damaged=parts.damaged,
        )

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline or writing (operators' tools)."""
        keys = self._keys.for_user(phone)

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)  # plain reads, one round trip
            pipe.hmget(keys.user, "d", "t", "v")
            pipe.hmget(keys.session, "d", "t")
            pipe.get(keys.form)
            return list(pipe.execute())

        (critical, critical_seen, version), (session, session_seen), form = self._retry.call(read)
        parts = codec.StoredParts()
        return StoredConversation(
            critical=parts.read(
                CriticalData, critical, critical_seen and _from_micros(critical_seen)
            ),
            session=parts.read(Session, session, session_seen and _from_micros(session_seen)),
            form=parts.read(Form, form),
            version=int(version) if version is not None else 0,
            damaged=parts.damaged,
        )

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        t = self._timeouts
        form = b""
        form_ms = 0
        if write.form is not None:
            form = codec.encode(write.form)
            form_ms = max(1, int((write.form.expires_at - now).total_seconds() * 1000)) + GRACE_MS
        now_us = _micros(now)
        args = [
            write.expected_version,
            "o:" + write.op_id,
            message_member(write.message_id) if write.message_id is not None else "",
            now_us,
            codec.encode(write.critical),
            _ms(t.state),
            codec.encode(write.session),
            _micros(write.session.last_seen_at),
            _ms(t.session),
            form,
            form_ms,
            now_us + _micros_of(t.retry_window),
            now_us + _micros_of(t.dedupe),
            _ms(t.dedupe if write.message_id is not None else t.retry_window),
            _micros(write.critical.last_seen_at),
        ]
        keys = self._keys.for_user(phone).conversation
        status, version = self._retry.call(lambda: self._save(keys=keys, args=args))
        return WriteResult(_STATUS[status], int(version))

    def delete(self, phone: PhoneNumber) -> None:
        keys = self._keys.for_user(phone).conversation
        self._retry.call(lambda: self._client.delete(*keys))


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
        self._retry.call(lambda: self._client.set(key, sealed, px=_ms(ttl)))

    def get(self, phone: PhoneNumber) -> bytes | None:
        key = self._keys.for_user(phone).token
        value = self._retry.call(lambda: self._client.get(key))
        # The client is built without decode_responses, so this is bytes or None.
        return value.encode() if isinstance(value, str) else value

    def delete(self, phone: PhoneNumber) -> bool:
        key = self._keys.for_user(phone).token
        return bool(self._retry.call(lambda: self._client.delete(key)))
