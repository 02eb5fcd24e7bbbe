"""The repository ports: the few operations the service needs from a storage backend.

Every write is one unit of work on one user: ``begin`` holds the user under a lease and
reads what is stored, ``commit`` writes every change at once while that lease still holds
(or ``release`` gives it back), and effects are recorded on their own as they happen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple, Protocol

from vimbiso_state.domain.conversation import CriticalData, Session
from vimbiso_state.domain.effects import Effect, InDoubt
from vimbiso_state.domain.expirations import Expiration, ExpiryKind
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.health import StoreHealth
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.token import Token


# The values passed between the service and a backend on every message are NamedTuples:
# immutable like frozen dataclasses, and built in half the time.
class StoredConversation(NamedTuple):
    """What a backend holds for one user; any part may be missing (expired or evicted)."""

    critical: CriticalData | None
    session: Session | None
    form: Form | None
    # The version of the last commit (its fence); 0 when there is no critical data.
    version: int
    # A part could not be decoded (corrupt, or from an unknown schema) and was dropped.
    damaged: bool = False
    # The records that guard this user's effects are gone while the critical data says they
    # existed (evicted by allkeys-lru): what could trigger an effect again must go too.
    guards_lost: bool = False
    # Fields a newer release added that this one does not know, per part ("critical",
    # "session", "form"), as stored JSON: a write puts them back, so that a worker of the
    # previous release, during a rolling deploy, never drops what a newer one stored.
    extras: Mapping[str, Mapping[str, bytes]] = MappingProxyType({})
    # Each part's stored JSON, as read: a write leaves a part it did not change as it is.
    documents: Mapping[str, bytes] = MappingProxyType({})


class ConversationWrite(NamedTuple):
    """Every part of one conversation as a commit writes it, all or nothing."""

    critical: CriticalData
    session: Session
    form: Form | None
    extras: Mapping[str, Mapping[str, bytes]] = MappingProxyType({})
    # The JSON each part was read as (only for parts this write carries on, not replaced).
    documents: Mapping[str, bytes] = MappingProxyType({})


class TokenChange(NamedTuple):
    """The auth token as a commit leaves it: a new sealed token, or none (``sealed`` None)."""

    sealed: bytes | None
    ttl: timedelta


class Begun(NamedTuple):
    """What beginning a unit of work found: the id handled before, the user held by another
    lease, or the stored conversation, now held by the caller's lease."""

    stored: StoredConversation | None
    token: bytes | None = None  # the sealed token, read with the conversation
    duplicate: bool = False
    busy_for: timedelta = timedelta(0)  # how long the other lease may still hold the user
    # The holder's fence: a number above every version this user ever had. The commit
    # writes it as the new version and records its id with it, so that only this holder's
    # retry is told "applied".
    fence: int = 0
    # The epoch of the user's effect records as begun (0: none): an effect or commit that
    # finds another epoch knows the records were lost meanwhile.
    effects: int = 0
    # The user's effects whose outcome is unknown, for every message to see (duplicates too).
    in_doubt: tuple[InDoubt, ...] = ()


class Holder(NamedTuple):
    """Who holds the user: a unit of work's lease and the fence its begin was given."""

    lease: str
    fence: int
    effects: int = 0  # Begun.effects


class WriteStatus(Enum):
    APPLIED = "applied"
    LEASE_LOST = "lease_lost"  # the lease lapsed or was taken away: nothing was written


class WriteResult(NamedTuple):
    status: WriteStatus
    version: int  # the version written (the holder's fence) when applied


class EffectStatus(Enum):
    RUN = "run"  # not started before: it is now marked started, run it
    DONE = "done"  # it completed (or was settled): here is its recorded result
    IN_DOUBT = "in_doubt"  # started before; its outcome is unknown until settled
    LEASE_LOST = "lease_lost"  # this unit of work no longer holds the user
    RECORDS_LOST = "records_lost"  # the user's effect records were evicted since begin


class EffectRecord(NamedTuple):
    status: EffectStatus
    result: bytes | None = None  # the recorded JSON, when DONE
    # After a start that answered RUN, a finish or a settle: the epoch of the user's effect
    # records now (0: the backend does not say), so that the commit names the records this
    # unit of work may just have created.
    epoch: int = 0


class MessageRepository(Protocol):
    """The unit of work: begin (hold the user and load), effects, then commit or release.
    Implemented by the same backends as ConversationRepository."""

    def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None,
        lease: str,
        wait: timedelta,
    ) -> Begun:
        """Hold the user under ``lease`` and load the conversation and token; or find
        ``message_id`` handled before, or the user held by another lease. With ``wait``,
        first wait up to that long for the other lease to end (in the same round trip)."""
        ...

    def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        """While ``holder`` still holds the user: write the conversation (unless None) and
        the token, record ``message_id`` (or, without one, the lease) as handled with the
        holder's fence, and free the user, in one step. Else LEASE_LOST, nothing written;
        but a retry of a commit this holder already applied is APPLIED."""
        ...

    def release(self, phone: PhoneNumber, lease: str) -> None:
        """Free the user if ``lease`` still holds it; nothing else changes."""
        ...

    def forget(self, phone: PhoneNumber) -> None:
        """Delete the conversation and the token and free the user, in one step; handled ids
        and effect records stay."""
        ...

    def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        """Mark the effect started, unless it was started before (by any unit of work of
        this user)."""
        ...

    def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        """Record the effect's result whether or not a lease holds (it happened). With
        ``settle``, a result recorded before is kept, and returned, instead."""
        ...


class ConversationRepository(Protocol):
    """Reads conversations under the key schema (writes are units of work)."""

    def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        """Read every part in one step; critical data and a session still alive (last seen
        no longer than their timeout ago) are moved to ``now`` in the same step: the sliding
        refresh. An expired part is returned as it is, for the domain to expire."""
        ...


class ConversationReader(Protocol):
    """Read-only access for operators' tools (``vimbiso-state inspect``); both backends have it."""

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part as stored: no deadline slides, nothing is written."""
        ...


class TokenRepository(Protocol):
    """Reads sealed (encrypted) tokens; never sees a token in plain text. (A token is
    written by a commit.)"""

    def get(self, phone: PhoneNumber) -> bytes | None: ...


class TokenCipher(Protocol):
    """Encrypts a token bound to its owner; ``open`` rejects a token sealed for someone else."""

    def seal(
        self, phone: PhoneNumber, value: str, issued_at: datetime, expires_at: datetime
    ) -> bytes: ...

    def open(self, phone: PhoneNumber, sealed: bytes) -> Token: ...


class AsyncConversationRepository(Protocol):
    """ConversationRepository for asyncio: the same operations and guarantees, awaited."""

    async def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation: ...


class AsyncMessageRepository(Protocol):
    """MessageRepository for asyncio."""

    async def begin(
        self,
        phone: PhoneNumber,
        now: datetime,
        message_id: str | None,
        lease: str,
        wait: timedelta,
    ) -> Begun: ...

    async def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult: ...

    async def release(self, phone: PhoneNumber, lease: str) -> None: ...

    async def forget(self, phone: PhoneNumber) -> None: ...

    async def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord: ...

    async def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord: ...


class AsyncTokenRepository(Protocol):
    """TokenRepository for asyncio."""

    async def get(self, phone: PhoneNumber) -> bytes | None: ...


class Claim(NamedTuple):
    """An index entry a consumer claimed: the user and kind, the mark its claim left on the
    entry (so that only this claim acknowledges it), and the entry's score before it (µs)."""

    digits: str
    kind: ExpiryKind
    mark: int
    previous: int


class ExpiryRepository(Protocol):
    """The index of deadlines, and what its due entries mean for each conversation."""

    def claim(self, now: datetime, limit: int, lease: timedelta) -> list[tuple[Claim, Expiration]]:
        """Up to ``limit`` events due at ``now``, oldest first, each hidden from other
        consumers for ``lease``. On the way, an entry whose deadline moved is put back at the
        new deadline, one with nothing pending is dropped, and so are entries older than
        dedupe_ttl."""
        ...

    def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        """The events were delivered: drop the entries still marked by these claims, and the
        expired forms they told of."""
        ...


class AsyncExpiryRepository(Protocol):
    """ExpiryRepository for asyncio."""

    async def claim(
        self, now: datetime, limit: int, lease: timedelta
    ) -> list[tuple[Claim, Expiration]]: ...

    async def ack(self, claims: Sequence[Claim], now: datetime) -> None: ...


class HealthProbe(Protocol):
    """Tells whether the store can serve, with facts about it (``state.health()``)."""

    def health(self) -> StoreHealth:
        """Facts about the live store, or StateUnavailable within HEALTH_DEADLINE when it
        cannot serve (down, hung, refusing writes, full, a read-only replica)."""
        ...


class AsyncHealthProbe(Protocol):
    """HealthProbe for asyncio."""

    async def health(self) -> StoreHealth: ...
