"""The Redis backend for asyncio: redis.asyncio clients, the same layout, scripts and rules.

Only the I/O differs from store.py; the calls and the meaning of replies come from
protocol.py, and the retry decisions from RetryPolicy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from vimbiso_state.adapters.redis.connection import AsyncRetryPolicy, RetryPolicy, client_options
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.protocol import ConversationCalls, px
from vimbiso_state.adapters.redis.store import LOAD, SAVE
from vimbiso_state.adapters.redis.wire import AsyncWire, Script, flatten, mget
from vimbiso_state.domain.errors import StateUnavailable
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import ConversationWrite, StoredConversation, WriteResult
from vimbiso_state.domain.timeouts import Timeouts


class _FirstCallSafeCluster(AsyncRedisCluster):
    """redis-py 8.1's asyncio cluster client discovers the cluster on its first command; when
    many coroutines make that first command at once, discovery replaces nodes whose
    connections others are still handshaking on, and they fail with ConnectionError or
    AttributeError. Discovering once, under a lock, before any command avoids that."""

    _ready = False
    _discovery: asyncio.Lock | None = None

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if not self._ready:
            self._discovery = self._discovery or asyncio.Lock()
            async with self._discovery:
                if not self._ready:
                    await self.initialize()
                    self._ready = True
        return await super().execute_command(*args, **kwargs)


class FairBlockingConnectionPool(redis.asyncio.BlockingConnectionPool):
    """redis-py 8.1's asyncio BlockingConnectionPool lets a task that has just released a
    connection take it straight back: it re-enters the pool's condition without yielding and
    finds the connection free, while the waiter its release notified has not run yet. Under
    more coroutines than connections in tight loops, waiters then starve past the pool
    timeout and fail with "No connection available." although the server answers at once.
    A turn from an asyncio.Semaphore, which is FIFO (while anyone waits, a newcomer queues
    behind them), is taken before the pool is asked, so connections go round in turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Binds to the running loop on first contention, not here: the pool may be built
        # outside any loop.
        self._turns = asyncio.Semaphore(self.max_connections)
        # Connections handed out on a turn: only their release gives a turn back, once.
        self._on_turn: set[AbstractConnection] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        try:
            async with asyncio.timeout(self.timeout):
                await self._turns.acquire()
        except TimeoutError as exc:
            # What redis-py raises for a pool timeout, so RetryPolicy treats both alike.
            raise RedisConnectionError("No connection available.") from exc
        try:
            connection: AbstractConnection = await super().get_connection(  # type: ignore[no-untyped-call]
                *args, **kwargs
            )
        except BaseException:
            # Failed or cancelled: no connection holds this turn (redis-py released any
            # connection it had already taken, and that one was not on a turn yet).
            self._turns.release()
            raise
        self._on_turn.add(connection)
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            # Even if the release fails (a connection from before a reset) or is cancelled:
            # the turn must not be lost. Given back after the connection, so the waiter it
            # wakes finds that connection free.
            if connection in self._on_turn:
                self._on_turn.discard(connection)
                self._turns.release()


AsyncRedisClient = redis.asyncio.Redis | AsyncRedisCluster
AsyncScriptRunner = Callable[[Script, Sequence[str], Sequence[Any]], Awaitable[Any]]
AsyncDocumentReader = Callable[[Sequence[str]], Awaitable[Any]]


def connect_async(
    url: str,
    *,
    cluster: bool = False,
    socket_timeout: float = 0.5,
    connect_timeout: float = 0.25,
    max_connections: int = 64,
    pool_timeout: float | None = None,
) -> AsyncRedisClient:
    """An asyncio client that, like ``connect``, leaves every retry to RetryPolicy and waits
    up to ``pool_timeout`` (default: the socket timeout) for a free connection rather than
    failing when all are busy."""
    options = client_options(socket_timeout, connect_timeout, max_connections)
    # The asyncio clients need the asyncio Retry class (same meaning: no retries).
    options["retry"] = Retry(NoBackoff(), 0)
    if not cluster:
        wait = socket_timeout if pool_timeout is None else pool_timeout
        pool = FairBlockingConnectionPool.from_url(url, timeout=wait, **options)
        return redis.asyncio.Redis.from_pool(pool)
    try:
        return _FirstCallSafeCluster.from_url(url, **options)
    except (RedisError, RedisClusterException) as exc:
        raise StateUnavailable(f"Redis Cluster could not be reached: {exc}") from exc


def async_script_runner(client: AsyncRedisClient) -> AsyncScriptRunner:
    if isinstance(client, redis.asyncio.Redis):
        return AsyncWire(client).script

    async def on_cluster(script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            flat_keys = flatten(keys)
            return await client.evalsha(script.sha, len(flat_keys), *flat_keys, *flatten(args))
        except NoScriptError:
            # See store.script_runner: EVAL on the owning node after a failover.
            flat_keys = flatten(keys)
            return await client.eval(script.source, len(flat_keys), *flat_keys, *flatten(args))

    return on_cluster


def async_document_reader(client: AsyncRedisClient) -> AsyncDocumentReader:
    """See store.document_reader."""
    if isinstance(client, redis.asyncio.Redis):
        call = AsyncWire(client).call
        return lambda keys: call(mget(keys))
    return lambda keys: client.mget(flatten(keys))


class AsyncRedisConversationRepository:
    """RedisConversationRepository for asyncio."""

    def __init__(
        self,
        client: AsyncRedisClient,
        timeouts: Timeouts,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        self._retry = AsyncRetryPolicy(retry or RetryPolicy())
        self._keys = keys or KeySchema()
        self._calls = ConversationCalls(timeouts)
        self._client = client
        self._script = async_script_runner(client)
        self._read = async_document_reader(client)

    async def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        if self._calls.reads_plainly(message_id, touch):
            recalled = self._calls.recalled(phone.digits, now)
            if recalled is not None:
                return recalled
            documents = self._keys.documents(phone)
            values = await self._retry.call(lambda: self._read(documents))
            return self._calls.read(values, now, remember=phone.digits)
        keys = self._keys.conversation(phone)
        args = self._calls.load_args(now, message_id, touch)
        reply = await self._retry.call(lambda: self._script(LOAD, keys, args))
        return self._calls.loaded(reply, now, remember=phone.digits)

    async def save(
        self, phone: PhoneNumber, write: ConversationWrite, now: datetime
    ) -> WriteResult:
        keys = self._keys.conversation(phone)
        args = self._calls.save_args(write, now)
        try:
            reply = await self._retry.call(lambda: self._script(SAVE, keys, args))
        except BaseException:
            self._calls.recent.forget(phone.digits)  # the outcome is unknown
            raise
        return self._calls.saved(reply, phone.digits, args)

    async def delete(self, phone: PhoneNumber) -> None:
        keys = self._keys.for_user(phone).conversation
        try:
            await self._retry.call(lambda: self._client.delete(*keys))
        finally:
            self._calls.recent.forget(phone.digits)


class AsyncRedisTokenRepository:
    """RedisTokenRepository for asyncio."""

    def __init__(
        self,
        client: AsyncRedisClient,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        self._client = client
        self._retry = AsyncRetryPolicy(retry or RetryPolicy())
        self._keys = keys or KeySchema()

    async def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None:
        key = self._keys.for_user(phone).token
        await self._retry.call(lambda: self._client.set(key, sealed, px=px(ttl)))

    async def get(self, phone: PhoneNumber) -> bytes | None:
        key = self._keys.for_user(phone).token
        value = await self._retry.call(lambda: self._client.get(key))
        return value.encode() if isinstance(value, str) else value

    async def delete(self, phone: PhoneNumber) -> bool:
        key = self._keys.for_user(phone).token
        return bool(await self._retry.call(lambda: self._client.delete(key)))
