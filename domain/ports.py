"""The repository ports: the few operations the service needs from a storage backend."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import NamedTuple, Protocol

from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.token import Token


# The values passed between the service and a backend on every message are NamedTuples:
# immutable like frozen dataclasses, and built in half the time.
class StoredConversation(NamedTuple):
    """What a backend holds for one user; any part may be missing (expired or evicted)."""

    critical: CriticalData | None
    session: Session | None
    form: Form | None
    version: int
    message_seen: bool = False
    # A part could not be decoded (corrupt, or from an unknown schema) and was dropped.
    damaged: bool = False


class ConversationWrite(NamedTuple):
    """A versioned, all-or-nothing write of every part of one conversation.

    ``op_id`` makes the write idempotent: a retry after a lost reply is recognised as
    already applied. ``message_id``, when given, is remembered as handled in the same step.
    """

    expected_version: int
    op_id: str
    critical: CriticalData
    session: Session
    form: Form | None
    message_id: str | None = None


class WriteStatus(Enum):
    APPLIED = "applied"
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"


class WriteResult(NamedTuple):
    status: WriteStatus
    version: int


class ConversationRepository(Protocol):
    """Stores conversations under the key schema; atomic per user."""

    def load(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None = None,
        touch: bool = True,
    ) -> StoredConversation:
        """Read every part in one step.

        With ``touch``, critical data and a session still alive (last seen no longer than
        their timeout ago) are moved to ``now`` in the same step: the sliding refresh. An
        expired part is returned as it is, for the domain to expire. A load followed by a
        save need not touch: the save moves last-seen anyway.
        """
        ...

    def save(self, phone: PhoneNumber, write: ConversationWrite, now: datetime) -> WriteResult:
        """Apply ``write`` if the stored version is still ``expected_version``."""
        ...

    def delete(self, phone: PhoneNumber) -> None:
        """Forget every part of this user's conversation (the token has its own port)."""
        ...


class ConversationReader(Protocol):
    """Read-only access for operators' tools (``vimbiso-state inspect``); both backends have it."""

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part as stored: no deadline slides, nothing is written."""
        ...


class TokenRepository(Protocol):
    """Stores sealed (encrypted) tokens; never sees a token in plain text."""

    def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None: ...

    def get(self, phone: PhoneNumber) -> bytes | None: ...

    def delete(self, phone: PhoneNumber) -> bool: ...


class TokenCipher(Protocol):
    """Encrypts a token bound to its owner; ``open`` rejects a token sealed for someone else."""

    def seal(
        self, phone: PhoneNumber, value: str, issued_at: datetime, expires_at: datetime
    ) -> bytes: ...

    def open(self, phone: PhoneNumber, sealed: bytes) -> Token: ...


class AsyncConversationRepository(Protocol):
    """ConversationRepository for asyncio: the same operations and guarantees, awaited."""

    async def load(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None = None,
        touch: bool = True,
    ) -> StoredConversation: ...

    async def save(
        self, phone: PhoneNumber, write: ConversationWrite, now: datetime
    ) -> WriteResult: ...

    async def delete(self, phone: PhoneNumber) -> None: ...


class AsyncTokenRepository(Protocol):
    """TokenRepository for asyncio."""

    async def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None: ...

    async def get(self, phone: PhoneNumber) -> bytes | None: ...

    async def delete(self, phone: PhoneNumber) -> bool: ...
