"""A read-only view of one user's stored conversation, for operators (``vimbiso-state inspect``).

Unlike ``StateService.start``, nothing here slides a deadline or writes: looking at a user
does not keep their session alive. The token is described, never revealed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.errors import TokenError
from vimbiso_state.domain.lifecycle import resume
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    ConversationReader,
    StoredConversation,
    TokenCipher,
    TokenRepository,
)
from vimbiso_state.domain.timeouts import Timeouts


@dataclass(frozen=True, slots=True)
class TokenView:
    """What can be said about a stored token without showing it."""

    stored: bool
    length: int | None = None  # characters of the plain token, when it could be opened
    expires_at: datetime | None = None
    problem: str = ""  # why it is unusable or could not be checked


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One user's state as stored at ``now``, and what their next message would find."""

    phone: PhoneNumber
    now: datetime
    stored: StoredConversation
    # The conversation the next message would resume (notices say what would happen); not
    # written anywhere.
    conversation: Conversation
    token: TokenView
    session_deadline: datetime | None
    critical_deadline: datetime | None

    @property
    def empty(self) -> bool:
        s = self.stored
        return s.critical is None and s.session is None and s.form is None and not self.token.stored


class Inspector:
    """Reads conversations and tokens through the repositories, changing nothing."""

    def __init__(
        self,
        conversations: ConversationReader,
        tokens: TokenRepository,
        clock: Clock,
        timeouts: Timeouts,
        cipher: TokenCipher | None,
    ) -> None:
        self._conversations = conversations
        self._tokens = tokens
        self._clock = clock
        self._timeouts = timeouts
        self._cipher = cipher

    def peek(self, phone: str) -> Snapshot:
        number = PhoneNumber.parse(phone)
        now = self._clock.now()
        stored = self._conversations.peek(number)
        conversation, _ = resume(number.digits, stored, now, self._timeouts)
        critical, session = stored.critical, stored.session
        return Snapshot(
            phone=number,
            now=now,
            stored=stored,
            conversation=conversation,
            token=self._token(number),
            session_deadline=session.last_seen_at + self._timeouts.session if session else None,
            critical_deadline=critical.last_seen_at + self._timeouts.state if critical else None,
        )

    def _token(self, number: PhoneNumber) -> TokenView:
        sealed = self._tokens.get(number)
        if sealed is None:
            return TokenView(stored=False)
        if self._cipher is None:
            return TokenView(stored=True, problem="cannot check: no STATE_TOKEN_KEYS configured")
        try:
            token = self._cipher.open(number, sealed)
        except TokenError as exc:
            return TokenView(stored=True, problem=str(exc))
        problem = "expired" if token.is_expired(self._clock.now()) else ""
        return TokenView(
            stored=True, length=len(token.value), expires_at=token.expires_at, problem=problem
        )
