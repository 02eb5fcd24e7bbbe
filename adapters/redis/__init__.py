"""The Redis backend: the key schema, TTLs and one-round-trip scripts."""

from adapters.redis.connection import RedisClient, RetryPolicy, connect, connect_cluster
from adapters.redis.keys import KeySchema
from adapters.redis.store import RedisConversationRepository, RedisTokenRepository

__all__ = [
    "KeySchema",
    "RedisClient",
    "RedisConversationRepository",
    "RedisTokenRepository",
    "RetryPolicy",
    "connect",
    "connect_cluster",
]
