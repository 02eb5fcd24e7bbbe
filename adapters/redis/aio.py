"""The Redis backend for asyncio: redis.asyncio clients, the same layout, scripts and rules.

Only the I/O differs from store.py; the calls and the meaning of replies come from
protocol.py, and the retry decisions from RetryPolicy.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
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
from vimbiso_state.adapters.redis.partitions import PartitionGroups
from vimbiso_state.adapters.redis.protocol import ConversationCalls, ExpiryCalls, legacy_digest
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


class _AsyncRedisRepository:
    def __init__(
        self,
        client: AsyncRedisClient,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
    ) -> None:
        self._client = client
        self._retry = AsyncRetryPolicy(retry or RetryPolicy())
        self._keys = keys or KeySchema(cluster=isinstance(client, AsyncRedisCluster))

    async def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            await discovered(self._client)
            return await operation()

        return await self._retry.call(attempt)


class AsyncRedisConversationRepository(_AsyncRedisRepository):
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
        super().__init__(client, retry, keys)
        self._calls = ConversationCalls(timeouts)
        self._expiry = ExpiryCalls(timeouts)
        self._partitions = PartitionGroups(self._keys.cluster)
        self._waits = waits or client
        self._wait_slice = wait_slice

    async def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        keys, args = self._keys.for_user(phone).load, self._calls.load_args(now, True)
        reply = await self._run(lambda: LOAD.call_async(self._client, keys, args))
        return self._calls.loaded(reply, now)

    async def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None,
        lease: str,
        wait: timedelta,
    ) -> Begun:
        """See RedisConversationRepository.begin."""
        user = self._keys.for_user(phone)
        waited = wait > timedelta(0)
        seconds = round(min(wait.total_seconds(), self._wait_slice), 3) or 0.001
        if isinstance(self._client, AsyncRedisCluster):
            args = self._calls.begin_args(now, message_id, lease, waited, read_here=True)

            async def on_cluster() -> Any:
                if waited:
                    # The waits client is a second cluster client, and _run discovered only
                    # the first: first waits made at once would race its discovery.
                    await discovered(self._waits)
                    await self._waits.blpop([user.wake], timeout=seconds)
                return await BEGIN.call_async(self._client, user.begin, args)

            return self._calls.began(await self._run(on_cluster), None, now)
        args = self._calls.begin_args(now, message_id, lease, waited)

        async def attempt(by_source: bool) -> list[Any]:
            pipe = (self._waits if waited else self._client).pipeline(transaction=False)
            if waited:
                pipe.blpop([user.wake], timeout=seconds)
            BEGIN.queue(pipe, user.begin, args, by_source)
            pipe.mget(user.parts)
            replies: list[Any] = await pipe.execute()
            return replies[-2:]

        async def one_round_trip() -> list[Any]:
            try:
                return await attempt(by_source=False)
            except NoScriptError:
                return await attempt(by_source=True)

        reply, values = await self._run(one_round_trip)
        return self._calls.began(reply, values, now)

    async def commit(
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
        reply = await self._run(lambda: COMMIT.call_async(self._client, keys, args))
        return self._calls.committed(reply)

    async def release(self, phone: PhoneNumber, lease: str) -> None:
        keys = self._keys.for_user(phone).release
        await self._run(lambda: RELEASE.call_async(self._client, keys, [lease]))

    async def forget(self, phone: PhoneNumber) -> None:
        keys = self._keys.for_user(phone).forget
        await self._run(lambda: FORGET.call_async(self._client, keys, []))

    async def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        keys = self._keys.for_user(phone).effect(legacy_digest(effect.key))
        args = self._calls.effect_start_args(holder, effect, now)
        reply = await self._run(lambda: EFFECT.call_async(self._client, keys, args))
        return self._calls.effect_record(reply)

    async def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        keys = self._keys.for_user(phone).effect(None)
        args = self._calls.effect_finish_args(effect, result, now, settle)
        reply = await self._run(lambda: EFFECT.call_async(self._client, keys, args))
        return self._calls.effect_record(reply)

    # Expiry events
    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        """See RedisConversationRepository.claim."""
        reply = await self._each_server(self._expiry.claim_args(now, limit, lease))
        return ExpiryCalls.claims(reply, now, lease)

    async def _each_server(self, args: list[Any]) -> list[Any]:
        """See RedisConversationRepository._each_server."""
        await discovered(self._client)
        limit, taken = int(args[2]), list[Any]()
        for node, keys in self._partitions.in_turn(self._client):

            async def attempt(node: Any = node, keys: list[str] = keys) -> list[Any]:
                try:
                    reply: list[Any] = await CLAIM.on_node_async(
                        self._client, node, keys[:1], [*args, *keys[1:]]
                    )
                except Exception:
                    self._partitions.forget()
                    raise
                return reply

            taken += await self._run(attempt)
            args[2] = limit - len(taken) // 2
            if args[2] <= 0:
                break
        return taken

    async def check(self, claims: Sequence[Claim], now: datetime) -> list[Expiration | None]:
        replies = await self._each(claims, lambda claim: self._expiry.check_args(claim, now))
        pairs = zip(claims, replies, strict=True)
        return [ExpiryCalls.checked(claim, reply) for claim, reply in pairs]

    async def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        await self._each(claims, lambda claim: self._expiry.ack_args(claim, now))

    async def _each(self, claims: Sequence[Claim], args: Callable[[Claim], list[Any]]) -> list[Any]:
        """See RedisConversationRepository._each."""
        keys = [self._keys.for_user(PhoneNumber(c.digits)).expiry_entry for c in claims]
        if isinstance(self._client, AsyncRedisCluster):
            return [
                await self._run(lambda k=k, c=c: EXPIRY.call_async(self._client, k, args(c)))
                for k, c in zip(keys, claims, strict=True)
            ]

        async def attempt(by_source: bool) -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for k, c in zip(keys, claims, strict=True):
                EXPIRY.queue(pipe, k, args(c), by_source)
            replies: list[Any] = await pipe.execute()
            return replies

        async def one_round_trip() -> list[Any]:
            try:
                return await attempt(by_source=False)
            except NoScriptError:
                return await attempt(by_source=True)

        return await self._run(one_round_trip) if claims else []


class AsyncRedisTokenRepository(_AsyncRedisRepository):
    """RedisTokenRepository for asyncio."""

    async def get(self, phone: PhoneNumber) -> bytes | None:
        key = self._keys.for_user(phone).token

        async def get() -> Any:
            try:
                return await self._client.get(key)
            except ResponseError as exc:
                if not is_wrong_type(exc):
                    raise
                await self._client.delete(key)  # not a token: damaged (see store.py)
                return None

        value = await self._run(get)
        return value.encode() if isinstance(value, str) else value
