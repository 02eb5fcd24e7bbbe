"""The in-memory backend for asyncio: the same store, so sync and async callers share it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from vimbiso_state.adapters.memory.store import MemoryConversationRepository, MemoryTokenRepository
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.expirations import Expiration
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    ConversationWrite,
    EffectRecord,
    Holder,
    StoredConversation,
    TokenChange,
    WriteResult,
)

# How often a waiting unit of work looks again: the store's own wait would block the loop.
_POLL = 0.005


class AsyncMemoryConversationRepository:
    """Awaitable facade; each call holds the store's lock for microseconds, never across I/O."""

    def __init__(self, store: MemoryConversationRepository) -> None:
        self._store = store

    async def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        return self._store.load(phone, now)

    async def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None,
        lease: str,
        wait: timedelta,
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
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        return self._store.commit(phone, holder, message_id, write, token, now)

    async def release(self, phone: PhoneNumber, lease: str) -> None:
        self._store.release(phone, lease)

    async def forget(self, phone: PhoneNumber) -> None:
        self._store.forget(phone)

    async def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        return self._store.effect_start(phone, holder, effect, now)

    async def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        return self._store.effect_finish(phone, effect, result, now, settle)

    async def claim(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[tuple[Claim, Expiration]]:
        return self._store.claim(now, limit, lease)

    async def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        self._store.ack(claims, now)


class AsyncMemoryTokenRepository:
    def __init__(self, store: MemoryTokenRepository) -> None:
        self._store = store

    async def get(self, phone: PhoneNumber) -> bytes | None:
        return self._store.get(phone)
