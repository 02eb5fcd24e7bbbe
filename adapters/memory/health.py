"""health() for the in-memory backend: a store in this process can always serve."""

from __future__ import annotations

from vimbiso_state.adapters.memory.store import MemoryConversationRepository
from vimbiso_state.domain.health import StoreHealth


class MemoryHealthProbe:
    """Facts about this process's store: how many users it holds."""

    def __init__(self, store: MemoryConversationRepository) -> None:
        self._store = store

    def health(self) -> StoreHealth:
        # Users whose every part expired count until a call for them collects them, as
        # Redis counts keys until their TTL is enforced. len() of a dict needs no lock.
        return StoreHealth(backend="memory", users=len(self._store._users))


class AsyncMemoryHealthProbe:
    """MemoryHealthProbe for asyncio (the same store as the sync service's)."""

    def __init__(self, store: MemoryConversationRepository) -> None:
        self._probe = MemoryHealthProbe(store)

    async def health(self) -> StoreHealth:
        return self._probe.health()
