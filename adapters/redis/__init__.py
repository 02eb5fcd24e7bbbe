"""The Redis backend: the key schema, TTLs and one-round-trip scripts."""

from vimbiso_state.adapters.redis.connection import (
    RedisClient,
    RetryPolicy,
    connect,
    connect_cluster,
)
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.store import RedisConversationRepository, RedisTokenRepository

__all__ = [
    "KeySchema",
    "RedisClient",
    "RedisConversationRepository",
    "RedisTokenRepository",
    "RetryPolicy",
    "connect",
    "connect_cluster",
]
