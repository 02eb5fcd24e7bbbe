"""The in-memory backend: for unit tests and for running with nothing installed."""

from adapters.memory.aio import AsyncMemoryConversationRepository, AsyncMemoryTokenRepository
from adapters.memory.store import MemoryConversationRepository, MemoryTokenRepository

__all__ = [
    "AsyncMemoryConversationRepository",
    "AsyncMemoryTokenRepository",
    "MemoryConversationRepository",
    "MemoryTokenRepository",
]
