"""The composition root: the one place that knows which backends exist."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dependency_injector import containers, providers

from vimbiso_state.adapters.clock import SystemClock
from vimbiso_state.adapters.memory import (
    AsyncMemoryConversationRepository,
    AsyncMemoryTokenRepository,
    MemoryConversationRepository,
    MemoryTokenRepository,
)
from vimbiso_state.adapters.memory.health import AsyncMemoryHealthProbe, MemoryHealthProbe
from vimbiso_state.adapters.redis import (
    RedisClient,
    RedisConversationRepository,
    RedisTokenRepository,
    RetryPolicy,
    connect,
    connect_cluster,
)
from vimbiso_state.adapters.redis.aio import (
    AsyncRedisClient,
    AsyncRedisConversationRepository,
    AsyncRedisTokenRepository,
    close_async,
    connect_async,
)
from vimbiso_state.adapters.redis.clock import ServerClock, async_server_time, server_time
from vimbiso_state.adapters.redis.connection import close
from vimbiso_state.adapters.redis.health import AsyncRedisHealthProbe, RedisHealthProbe
from vimbiso_state.adapters.token_cipher import FernetTokenCipher
from vimbiso_state.domain.errors import ConfigurationError
from vimbiso_state.domain.ports import TokenCipher
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings, masked
from vimbiso_state.services.state_service import StateService
from vimbiso_state.services.telemetry import Telemetry


def _cipher(settings: Settings) -> TokenCipher | None:
    """The token cipher, or None on a shared store without a key (operators' tools can still
    say whether a token is there)."""
    if settings.token_keys:
        return FernetTokenCipher(settings.token_keys)
    # A process-local store may use a key that dies with the process; a shared store may not.
    return FernetTokenCipher.ephemeral() if settings.backend == "memory" else None


def _service_cipher(settings: Settings, cipher: TokenCipher | None) -> TokenCipher:
    """The cipher a service needs: a shared store without a key is refused when the service
    is built (at the bot's start-up), not at the first member who logs in."""
    if cipher is None:
        raise ConfigurationError(
            f"the {settings.backend} backend stores auth tokens encrypted: set STATE_TOKEN_KEYS "
            "(config token_keys) to a Fernet key, e.g. from `vimbiso-state keygen`"
        )
    return cipher


class OpenClients:
    """The Redis clients a container has built, so that closing it closes them all."""

    def __init__(self) -> None:
        self.sync: list[RedisClient] = []
        self.asyncio: list[AsyncRedisClient] = []

    def close(self) -> None:
        for client in self.sync:
            close(client)
        self.sync.clear()

    async def aclose(self) -> None:
        for client in self.asyncio:
            await close_async(client)
        self.asyncio.clear()
        self.close()


def _redis_client(
    settings: Settings, opened: OpenClients, retry: RetryPolicy, waits: bool = False
) -> RedisClient:
    """The client of the configured backend: one server, or a cluster found from any node
    (read with the retries of every other call).

    With ``waits``, the client a message blocks on while it waits for the user's previous
    message: its socket timeout outlasts the longest wait, and only waits use it.
    """
    socket_timeout = _wait_timeout(settings) if waits else settings.socket_timeout
    client: RedisClient
    if settings.backend == "redis-cluster":
        client = connect_cluster(
            settings.redis_url,
            socket_timeout=socket_timeout,
            connect_timeout=settings.connect_timeout,
            retry=retry,
        )
    else:
        client = connect(
            settings.redis_url,
            socket_timeout=socket_timeout,
            connect_timeout=settings.connect_timeout,
        )
    opened.sync.append(client)
    return client


def _async_redis_client(
    settings: Settings, opened: OpenClients, waits: bool = False
) -> AsyncRedisClient:
    client = connect_async(
        settings.redis_url,
        cluster=settings.backend == "redis-cluster",
        socket_timeout=_wait_timeout(settings) if waits else settings.socket_timeout,
        connect_timeout=settings.connect_timeout,
    )
    opened.asyncio.append(client)
    return client


def _wait_timeout(settings: Settings) -> float:
    return settings.lease_wait + settings.socket_timeout


# health() answers within HEALTH_DEADLINE whatever the configured timeouts: its own clients
# give up sooner, so that a failed attempt (a connection the server reset) can be retried.
HEALTH_SOCKET_TIMEOUT = 0.5
HEALTH_CONNECT_TIMEOUT = 0.25


def _health_client_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        socket_timeout=min(settings.socket_timeout, HEALTH_SOCKET_TIMEOUT),
        connect_timeout=min(settings.connect_timeout, HEALTH_CONNECT_TIMEOUT),
    )


def _health_attempt_bound(settings: Settings) -> float:
    """The longest one attempt of health() may wait: a connect, then one unanswered call."""
    health = _health_client_settings(settings)
    return health.connect_timeout + health.socket_timeout


class _Configuration(providers.Configuration):
    """The configuration provider; what it returns hides token keys and passwords in a repr."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return masked(super().__call__(*args, **kwargs))


# Every object the container builds is built once per container, even when threads ask for it
# at the same moment (a gthread worker's first requests): one service, one pool of clients.
Once = providers.ThreadSafeSingleton


class Container(containers.DeclarativeContainer):
    """Wires a StateService from configuration (``backend``: memory, redis or redis-cluster)."""

    # No backend and no URL unless given: Settings.from_mapping then picks redis when a URL
    # is given, memory (with a warning) when neither is.
    config = _Configuration(default={**Settings().as_dict(), "backend": None, "redis_url": None})

    settings = Once(Settings.from_mapping, config)
    timeouts = providers.Callable(lambda s: s.timeouts, settings)

    # redis: a redis.Redis; redis-cluster: a redis.cluster.RedisCluster (reads the slot map
    # when first built). The same repositories run on both: every call names one user's keys,
    # which share one hash slot. The asyncio clients are their redis.asyncio counterparts.
    opened = Once(OpenClients)
    redis_retry = Once(lambda s: RetryPolicy(s.redis_retries), settings)
    redis_client = Once(_redis_client, settings, opened, redis_retry)
    redis_wait_client = Once(_redis_client, settings, opened, redis_retry, waits=True)
    async_redis_client = Once(_async_redis_client, settings, opened)
    async_redis_wait_client = Once(_async_redis_client, settings, opened, waits=True)
    _wait_slice = providers.Callable(lambda s: s.lease_wait, settings)

    # The same repositories serve one Redis and a cluster; only the client differs.
    _storage = providers.Callable(
        lambda s: "memory" if s.backend == "memory" else "redis", settings
    )

    # One clock for every host: on Redis, the server's (read once a minute); in memory, this
    # machine's (one process).
    host_clock = Once(SystemClock)
    clock = providers.Selector(
        _storage,
        memory=host_clock,
        redis=Once(
            ServerClock,
            providers.Callable(server_time, redis_client.provider, redis_retry),
            aread=providers.Callable(async_server_time, async_redis_client.provider, redis_retry),
        ),
    )

    # Clients of their own for health(), with short timeouts, and a cluster's found anew.
    _health_settings = Once(_health_client_settings, settings)
    health_client = Once(
        _redis_client, _health_settings, opened, providers.Object(RetryPolicy(retries=0))
    )
    async_health_client = Once(_async_redis_client, _health_settings, opened)
    _health_attempt = providers.Callable(_health_attempt_bound, settings)
    _backend = providers.Callable(lambda s: s.backend, settings)

    memory_tokens = Once(MemoryTokenRepository, clock)
    memory_conversations = Once(MemoryConversationRepository, clock, timeouts, memory_tokens)

    conversations = providers.Selector(
        _storage,
        memory=memory_conversations,
        redis=Once(
            RedisConversationRepository,
            redis_client,
            timeouts,
            redis_retry,
            waits=redis_wait_client,
            wait_slice=_wait_slice,
        ),
    )
    tokens = providers.Selector(
        _storage,
        memory=memory_tokens,
        redis=Once(RedisTokenRepository, redis_client, redis_retry),
    )

    # asyncio: the memory backend shares its store with the sync service of this container.
    async_conversations = providers.Selector(
        _storage,
        memory=Once(AsyncMemoryConversationRepository, memory_conversations),
        redis=Once(
            AsyncRedisConversationRepository,
            async_redis_client,
            timeouts,
            redis_retry,
            waits=async_redis_wait_client,
            wait_slice=_wait_slice,
        ),
    )
    async_tokens = providers.Selector(
        _storage,
        memory=Once(AsyncMemoryTokenRepository, memory_tokens),
        redis=Once(AsyncRedisTokenRepository, async_redis_client, redis_retry),
    )
    # What state.health() asks: the container chooses it as it chooses the repositories.
    health = providers.Selector(
        _storage,
        memory=Once(MemoryHealthProbe, memory_conversations),
        redis=Once(RedisHealthProbe, health_client.provider, _backend, _health_attempt),
    )
    async_health = providers.Selector(
        _storage,
        memory=Once(AsyncMemoryHealthProbe, memory_conversations),
        redis=Once(AsyncRedisHealthProbe, async_health_client.provider, _backend, _health_attempt),
    )
    cipher = Once(_cipher, settings)
    _required_cipher = providers.Callable(_service_cipher, settings, cipher)

    _max_retries = providers.Callable(lambda s: s.max_retries, settings)
    _phone_region = providers.Callable(lambda s: s.phone_region, settings)
    _account_selection = providers.Callable(lambda s: s.account_selection, settings)
    # Metrics, spans and logs; both services of a container share it.
    telemetry = Once(lambda s: Telemetry(s.telemetry_salt), settings)
    state_service = Once(
        StateService,
        conversations=conversations,
        tokens=tokens,
        clock=clock,
        timeouts=timeouts,
        cipher=_required_cipher,
        max_retries=_max_retries,
        phone_region=_phone_region,
        account_selection=_account_selection,
        telemetry=telemetry,
        health=health,
    )
    async_state_service = Once(
        AsyncStateService,
        conversations=async_conversations,
        tokens=async_tokens,
        clock=clock,
        timeouts=timeouts,
        cipher=_required_cipher,
        max_retries=_max_retries,
        phone_region=_phone_region,
        account_selection=_account_selection,
        telemetry=telemetry,
        health=async_health,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Container:
        """A container configured from STATE_BACKEND, REDIS_STATE_URL and the STATE_* TTLs."""
        return cls.from_settings(Settings.from_env(environ))

    # At the bot's shutdown: ``container.close()`` closes the Redis connections it opened,
    # ``await container.aclose()`` the asyncio ones too. Nothing to do on the memory backend.
    close = providers.Callable(OpenClients.close, opened)
    aclose = providers.Coroutine(OpenClients.aclose, opened)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Container:
        container = cls()
        container.config.from_dict({**settings.as_dict(), **overrides})
        return container
