"""The in-memory backend: for unit tests and for running with nothing installed."""

from vimbiso_state.adapters.memory.aio import (
    AsyncMemoryConversationRepository,
    AsyncMemoryTokenRepository,
)
from vimbiso_state.adapters.memory.store import MemoryConversationRepository, MemoryTokenRepository

__all__ = [
    "AsyncMemoryConversationRepository",
    "AsyncMemoryTokenRepository",
    "MemoryConversationRepository",
    "MemoryTokenRepository",
]
