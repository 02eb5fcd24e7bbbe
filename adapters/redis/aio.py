"""The Redis backend for asyncio: redis.asyncio clients, and repositories that await what
round_trips.py asks (store.py sends the same requests blocking; the retry decisions come from
RetryPolicy).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from vimbiso_state.adapters.redis.connection import (
    AsyncRetryPolicy,
    RetryPolicy,
    client_options,
    is_wrong_type,
)
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.round_trips import (
    ConversationRoundTrips,
    OnNode,
    Pipeline,
    ReadToken,
    RoundTrips,
    Script,
    Servers,
    queue,
    read_token,
)
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.errors import StateUnavailable
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

AsyncRedisClient = redis.asyncio.Redis | AsyncRedisCluster
log = logging.getLogger(__name__)


class _Discovery:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.done = False


_discoveries: weakref.WeakKeyDictionary[AsyncRedisCluster, _Discovery] = weakref.WeakKeyDictionary()


async def discovered(client: AsyncRedisClient) -> None:
    """Make sure an asyncio cluster client has read the cluster's slot map, once.

    The stock client reads it on its first command; when many coroutines made that first
    command at once, each discovery replaced the nodes whose connections the others were
    still handshaking on, and they failed with ConnectionError or AttributeError (seen on
    redis-py 8.1.0, not on 8.2.0). One ``initialize()`` under a lock, before any command,
    avoids it on every release and costs nothing after the first.
    """
    if not isinstance(client, AsyncRedisCluster):
        return
    discovery = _discoveries.setdefault(client, _Discovery())
    if discovery.done:
        return
    async with discovery.lock:
        if not discovery.done:
            await client.initialize()
            discovery.done = True


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
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, timeout=wait, **options)
        return redis.asyncio.Redis(connection_pool=pool)
    try:
        return AsyncRedisCluster.from_url(url, **options)
    except (RedisError, RedisClusterException) as exc:
        raise StateUnavailable(f"Redis Cluster could not be reached: {exc}") from exc


async def close_async(client: AsyncRedisClient) -> None:
    """Close the client and its connections (see connection.close); never raises.

    redis-py waits up to the connect timeout for each socket to close and then raises
    TimeoutError, after closing the rest. A socket that will not close in time (a loaded
    machine, a peer that stopped reading) is given up on: shutting down must not fail.
    """
    try:
        if isinstance(client, redis.asyncio.Redis):
            await client.connection_pool.disconnect()
        else:
            await client.aclose()
    except (RedisError, RedisClusterException, OSError) as exc:
        log.debug("gave up closing a Redis connection: %s", exc)


T = TypeVar("T")


class AsyncSender:
    """Sender (store.py) for asyncio: the same requests, awaited; an asyncio cluster client
    reads its slot map before its first command (``discovered``)."""

    def __init__(
        self, client: AsyncRedisClient, retry: RetryPolicy, waits: AsyncRedisClient
    ) -> None:
        self._client = client
        self._retry = AsyncRetryPolicy(retry)
        self._waits = waits
        self._send: dict[type[Any], Callable[[Any], Awaitable[Any]]] = {
            Script: self._script,
            Pipeline: self._pipeline,
            Servers: self._servers,
            OnNode: self._on_node,
            ReadToken: self._read_token,
        }

    async def run(self, round_trips: RoundTrips[T]) -> T:
        """Send each request ``round_trips`` yields, and return what it returns."""
        reply = None
        while True:
            try:
                request = round_trips.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            reply = await self._retry.call(partial(self._attempt, request))

    async def _attempt(self, request: Any) -> Any:
        await discovered(self._client)
        return await self._send[type(request)](request)

    async def _script(self, call: Script) -> Any:
        if call.wait is not None:
            # The waits client is a second client: first waits made at once on a cluster
            # would race its discovery.
            await discovered(self._waits)
            await self._waits.blpop([call.wait.key], timeout=call.wait.seconds)
        return await call.script.call_async(self._client, call.keys, call.args)

    async def _pipeline(self, pipeline: Pipeline) -> list[Any]:
        client = self._client if pipeline.wait is None else self._waits

        async def send(by_source: bool) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            queue(pipe, pipeline, by_source)
            replies: list[Any] = await pipe.execute()
            return replies

        try:
            return await send(by_source=False)
        except NoScriptError:
            return await send(by_source=True)

    async def _servers(self, servers: Servers) -> list[tuple[Any, list[str]]]:
        groups = servers.groups
        return (
            groups.in_turn(self._client) if servers.in_turn else groups.groups(self._client)
        )  # after discovered(), in _attempt

    async def _on_node(self, call: OnNode) -> Any:
        try:
            return await call.script.on_node_async(self._client, call.node, call.keys, call.args)
        except Exception:
            call.failed()
            raise

    async def _read_token(self, read: ReadToken) -> Any:
        try:
            return await self._client.get(read.key)
        except ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            await self._client.delete(read.key)  # not a token: damaged (see store.py)
            return None


class AsyncRedisConversationRepository(AsyncSender):
    """RedisConversationRepository for asyncio."""

    def __init__(
        self,
        client: AsyncRedisClient,
        timeouts: Timeouts,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
        waits: AsyncRedisClient | None = None,
        wait_slice: float = 0.2,
    ) -> None:
        super().__init__(client, retry or RetryPolicy(), waits or client)
        cluster = isinstance(client, AsyncRedisCluster)
        self._keys = keys or KeySchema(cluster=cluster)
        self._trips = ConversationRoundTrips(timeouts, self._keys, not cluster, wait_slice)

    async def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        return await self.run(self._trips.load(phone, now))

    # The unit of work
    async def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str | None, lease: str, wait: timedelta
    ) -> Begun:
        return await self.run(self._trips.begin(phone, now, message_id, lease, wait))

    async def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        trips = self._trips.commit(phone, holder, message_id, write, token, now)
        return await self.run(trips)

    async def release(self, phone: PhoneNumber, lease: str) -> None:
        await self.run(self._trips.release(phone, lease))

    async def forget(self, phone: PhoneNumber) -> None:
        await self.run(self._trips.forget(phone))

    async def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        return await self.run(self._trips.effect_start(phone, holder, effect, now))

    async def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        trips = self._trips.effect_finish(phone, effect, result, now, settle)
        return await self.run(trips)

    # Expiry events
    async def claim(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[tuple[Claim, Expiration]]:
        return await self.run(self._trips.claim(now, limit, lease))

    async def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        await self.run(self._trips.ack(claims, now))


class AsyncRedisTokenRepository(AsyncSender):
    """RedisTokenRepository for asyncio."""

    def __init__(
        self,
        client: AsyncRedisClient,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        super().__init__(client, retry or RetryPolicy(), client)
        self._keys = keys or KeySchema(cluster=isinstance(client, AsyncRedisCluster))

    async def get(self, phone: PhoneNumber) -> bytes | None:
        return await self.run(read_token(self._keys, phone))
