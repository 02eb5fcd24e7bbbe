"""The in-memory backend for asyncio: the same store, so sync and async callers share it."""

from __future__ import annotations

from datetime import datetime, timedelta

from vimbiso_state.adapters.memory.store import MemoryConversationRepository, MemoryTokenRepository
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import ConversationWrite, StoredConversation, WriteResult


class AsyncMemoryConversationRepository:
    """Awaitable facade; each call holds the store's lock for microseconds, never across I/O."""

    def __init__(self, store: MemoryConversationRepository) -> None:
        self._store = store

    async def load(
        self, phone: PhoneNumber, now: datetime, message_id: str | None = None, touch: bool = True
    ) -> StoredConversation:
        return self._store.load(phone, now, message_id, touch)

    async def save(
        self, phone: PhoneNumber, write: ConversationWrite, now: datetime
    ) -> WriteResult:
        return self._store.save(phone, write, now)

    async def delete(self, phone: PhoneNumber) -> None:
        self._store.delete(phone)


class AsyncMemoryTokenRepository:
    def __init__(self, store: MemoryTokenRepository) -> None:
        self._store = store

    async def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None:
        self._store.put(phone, sealed, ttl)

    async def get(self, phone: PhoneNumber) -> bytes | None:
        return self._store.get(phone)

    async def delete(self, phone: PhoneNumber) -> bool:
        return self._store.delete(phone)
