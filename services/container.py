"""The composition root: the one place that knows which backends exist."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.memory import MemoryConversationRepository, MemoryTokenRepository
from adapters.redis import (
    RedisClient,
    RedisConversationRepository,
    RedisTokenRepository,
    RetryPolicy,
    connect,
    connect_cluster,
)
from adapters.token_cipher import FernetTokenCipher
from domain.ports import TokenCipher
from services.config import Settings
from services.state_service import StateService


def _cipher(settings: Settings) -> TokenCipher | None:
    if settings.token_keys:
        return FernetTokenCipher(settings.token_keys)
    # A process-local store may use a key that dies with the process; a shared store may not,
    # so the Redis backend refuses to handle tokens until a key is configured.
    return FernetTokenCipher.ephemeral() if settings.backend == "memory" else None


def _redis_client(settings: Settings) -> RedisClient:
    """The client of the configured backend: one server, or a cluster found from any node."""
    connect_to = connect_cluster if settings.backend == "redis-cluster" else connect
    return connect_to(
        settings.redis_url,
        socket_timeout=settings.socket_timeout,
        connect_timeout=settings.connect_timeout,
    )


class Container(containers.DeclarativeContainer):
    """Wires a StateService from configuration (``backend``: memory, redis or redis-cluster)."""

    config = providers.Configuration(default=Settings().as_dict())

    settings = providers.Singleton(Settings.from_mapping, config)
    timeouts = providers.Callable(lambda s: s.timeouts, settings)
    clock = providers.Singleton(SystemClock)

    # redis: a redis.Redis; redis-cluster: a redis.cluster.RedisCluster (reads the slot map
    # when first built). The same repositories run on both: every call names one user's keys,
    # which share one hash slot.
    redis_client = providers.Singleton(_redis_client, settings)
    redis_retry = providers.Singleton(lambda s: RetryPolicy(s.redis_retries), settings)

    _backend = providers.Callable(lambda s: s.backend, settings)

    conversations = providers.Selector(
        _backend,
        memory=providers.Singleton(MemoryConversationRepository, clock, timeouts),
        redis=providers.Singleton(RedisConversationRepository, redis_client, timeouts, redis_retry),
        **{
            "redis-cluster": providers.Singleton(
                RedisConversationRepository, redis_client, timeouts, redis_retry
            )
        },
    )
    tokens = providers.Selector(
        _backend,
        memory=providers.Singleton(MemoryTokenRepository, clock),
        redis=providers.Singleton(RedisTokenRepository, redis_client, redis_retry),
        **{"redis-cluster": providers.Singleton(RedisTokenRepository, redis_client, redis_retry)},
    )
    cipher = providers.Singleton(_cipher, settings)

    state_service = providers.Singleton(
        StateService,
        conversations=conversations,
        tokens=tokens,
        clock=clock,
        timeouts=timeouts,
        cipher=cipher,
        max_retries=providers.Callable(lambda s: s.max_retries, settings),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Container:
        """A container configured from STATE_BACKEND, REDIS_STATE_URL and the STATE_* TTLs."""
        return cls.from_settings(Settings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Container:
        container = cls()
        container.config.from_dict({**settings.as_dict(), **overrides})
        return container
