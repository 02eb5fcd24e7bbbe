"""The repository ports: the few operations the service needs from a storage backend."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import Enum
from types import MappingProxyType
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
    # Fields a newer release added that this one does not know, per part ("critical",
    # "session", "form"), as stored JSON: a write puts them back, so that a worker of the
    # previous release, during a rolling deploy, never drops what a newer one stored.
    extras: Mapping[str, Mapping[str, bytes]] = MappingProxyType({})
    # Each part's stored JSON, as read: a write leaves a part it did not change as it is.
    documents: Mapping[str, bytes] = MappingProxyType({})


class ConversationWrite(NamedTuple):
    """A versioned, all-or-nothing write of every part of one conversation.

    Applied only while the stored version is ``expected_version``. The backend then gives it
    the next version, and a conversation created (again) a version above any it had before, so
    no version repeats for a user, not even after a reset, and a writer that loaded before a
    reset cannot pass the check. ``op_id`` makes the write idempotent: a retry after a lost
    reply is recognised as already applied. ``message_id``, when given, is remembered as
    handled in the same step.
    """

    expected_version: int
    op_id: str
    critical: CriticalData
    session: Session
    form: Form | None
    message_id: str | None = None
    extras: Mapping[str, Mapping[str, bytes]] = MappingProxyType({})
    # The JSON each part was read as (only for parts this write carries on, not replaced).
    documents: Mapping[str, bytes] = MappingProxyType({})


class TokenChange(NamedTuple):
    """The auth token as a message leaves it: a new sealed token, or none (``sealed`` None)."""

    sealed: bytes | None
    ttl: timedelta


class WriteStatus(Enum):
    APPLIED = "applied"
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"
    BUSY = "busy"  # another message of this user holds it (one-call writes wait)
    LEASE_LOST = "lease_lost"  # a message's commit: its lease lapsed or was taken away


class WriteResult(NamedTuple):
    status: WriteStatus
    # The version written; 0 when an earlier attempt of the same write applied it (a retry
    # after a lost reply), whose version is not known here.
    version: int
    # BUSY: how long the message holding the user may still hold it.
    busy_for: timedelta = timedelta(0)


class Begun(NamedTuple):
    """What beginning a message found: a duplicate, a user busy with another message, or the
    stored conversation, now held by the caller's lease (with the sealed token, if any)."""

    stored: StoredConversation | None
    token: bytes | None = None
    duplicate: bool = False
    busy_for: timedelta = timedelta(0)


class EffectStatus(Enum):
    RUN = "run"  # not started before: it is now marked started, run it
    DONE = "done"  # an earlier delivery completed it: here is its recorded result
    IN_DOUBT = "in_doubt"  # an earlier delivery started it; its outcome is unknown
    LEASE_LOST = "lease_lost"


class EffectRecord(NamedTuple):
    status: EffectStatus
    result: bytes | None = None  # the JSON result, when DONE


class MessageRepository(Protocol):
    """One WhatsApp message as a unit of work: begin (hold the user and load), effects,
    then commit or release. Implemented by the same backends as ConversationRepository."""

    def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str,
        lease: str,
        wait: timedelta,
    ) -> Begun:
        """Hold the user under ``lease`` and load the conversation, sliding it like a touching
        load; or find the message handled before, or the user held by another lease. With
        ``wait``, first wait up to that long for the other lease to end (one round trip)."""
        ...

    def commit(
        self,
        phone: PhoneNumber,
        lease: str,
        write: ConversationWrite,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        """Write every part, the message id and the token, and free the user, in one step;
        only while ``lease`` still holds the user (else LEASE_LOST, nothing written)."""
        ...

    def release(self, phone: PhoneNumber, lease: str) -> None:
        """Free the user if ``lease`` still holds it; nothing else changes."""
        ...

    def effect_start(
        self, phone: PhoneNumber, lease: str, message_id: str, name: str, now: datetime
    ) -> EffectRecord:
        """Mark the effect started for this message, unless it was started before."""
        ...

    def effect_finish(
        self, phone: PhoneNumber, message_id: str, name: str, result: bytes, now: datetime
    ) -> None:
        """Record the effect's result (whether or not the lease still holds: it happened)."""
        ...


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


class AsyncMessageRepository(Protocol):
    """MessageRepository for asyncio."""

    async def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str, lease: str, wait: timedelta
    ) -> Begun: ...

    async def commit(
        self,
        phone: PhoneNumber,
        lease: str,
        write: ConversationWrite,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult: ...

    async def release(self, phone: PhoneNumber, lease: str) -> None: ...

    async def effect_start(
        self, phone: PhoneNumber, lease: str, message_id: str, name: str, now: datetime
    ) -> EffectRecord: ...

    async def effect_finish(
        self, phone: PhoneNumber, message_id: str, name: str, result: bytes, now: datetime
    ) -> None: ...


class AsyncTokenRepository(Protocol):
    """TokenRepository for asyncio."""

    async def put(self, phone: PhoneNumber, sealed: bytes, ttl: timedelta) -> None: ...

    async def get(self, phone: PhoneNumber) -> bytes | None: ...

    async def delete(self, phone: PhoneNumber) -> bool: ...
