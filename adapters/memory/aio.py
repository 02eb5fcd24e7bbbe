"""The in-memory backend for asyncio: the same store, so sync and async callers share it."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from vimbiso_state.adapters.memory.store import MemoryConversationRepository, MemoryTokenRepository
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    ConversationWrite,
    EffectRecord,
    StoredConversation,
    TokenChange,
    WriteResult,
)

# How often a waiting message looks again: the store's own wait would block the event loop.
_POLL = 0.005


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

    async def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str, lease: str, wait: timedelta
    ) -> Begun:
        until = time.monotonic() + wait.total_seconds()
        while True:
            begun = self._store.begin(phone, now, message_id, lease, timedelta(0))
            if begun.stored is not None or begun.duplicate or time.monotonic() >= until:
                return begun
            await asyncio.sleep(_POLL)

    async def commit(
        self,
        phone: PhoneNumber,
        lease: str,
        write: ConversationWrite,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        return self._store.commit(phone, lease, write, token, now)

    async def release(self, phone: PhoneNumber, lease: str) -> None:
        self._store.release(phone, lease)

    async def effect_start(
        self, phone: PhoneNumber, lease: str, message_id: str, name: str, now: datetime
    ) -> EffectRecord:
        return self._store.effect_start(phone, lease, message_id, name, now)

    async def effect_finish(
        self, phone: PhoneNumber, message_id: str, name: str, result: bytes, now: datetime
    ) -> None:
        self._store.effect_finish(phone, message_id, name, result, now)


class AsyncMemoryTokenRepository:
    def __init__(self, store: MemoryTokenRepository) -> None:
        self._store = store

    async def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None:
        self._store.put(phone, sealed, ttl)

    async def get(self, phone: PhoneNumber) -> bytes | None:
        return self._store.get(phone)

    async def delete(self, phone: PhoneNumber) -> bool:
        return self._store.delete(phone)
