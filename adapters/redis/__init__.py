"""The Redis backend: the key schema, TTLs and one-round-trip scripts."""

from adapters.redis.connection import RetryPolicy, connect
from adapters.redis.keys import KeySchema
from adapters.redis.store import RedisConversationRepository, RedisTokenRepository

__all__ = [
    "KeySchema",
    "RedisConversationRepository",
    "RedisTokenRepository",
    "RetryPolicy",
    "connect",
]
