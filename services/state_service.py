"""StateService: what bot code calls once per inbound message."""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from domain.clock import Clock
from domain.conversation import Conversation, check_step, is_greeting
from domain.errors import ConcurrencyConflict, ConfigurationError, InvalidInput, NoActiveForm
from domain.form import Form
from domain.lifecycle import resume
from domain.phone import PhoneNumber
from domain.ports import (
    ConversationRepository,
    ConversationWrite,
    StoredConversation,
    TokenCipher,
    TokenRepository,
    WriteStatus,
)
from domain.timeouts import Timeouts

log = logging.getLogger("vimbiso_state")

T = TypeVar("T")
MAX_MESSAGE_ID = 256
MAX_TOKEN = 8192


class StateService:
    """Loads, moves on and stores one user's conversation; every write is atomic and versioned."""

    def __init__(
        self,
        conversations: ConversationRepository,
        tokens: TokenRepository,
        clock: Clock,
        timeouts: Timeouts,
        cipher: TokenCipher | None,
        max_retries: int = 8,
    ) -> None:
        self._conversations = conversations
        self._tokens = tokens
        self._clock = clock
        self._timeouts = timeouts
        self._cipher = cipher
        self._max_retries = max_retries

    # Conversation
    def start(self, phone: str, message: str | None = None) -> Conversation:
        """Initial contact or resume, in one round trip when nothing has expired.

        After session expiry the user is back at the menu with critical data kept and
        ``conv.notices`` saying so. A greeting (hi, mhoro, salibonani...) restarts at the menu.
        """
        number = PhoneNumber.parse(phone)
        if message is not None and is_greeting(message):
            return self.restart(number.digits)
        now = self._clock.now()
        stored = self._conversations.load(number, now)
        conversation, changed = resume(number.digits, stored, now, self._timeouts)
        if not changed:
            return conversation
        # First contact or an expiry: store the outcome so that concurrent deliveries agree.
        return self._apply(number, lambda c, now: None, first=stored)[0]

    def restart(self, phone: str) -> Conversation:
        """Back to the menu with a fresh session, keeping critical data and a live form."""
        number = PhoneNumber.parse(phone)
        return self._apply(number, lambda c, now: c.greet(now))[0]

    def navigate(self, phone: str, option: str) -> Conversation:
        """Enter a menu option; it is remembered so that ``back`` returns here."""
        number = PhoneNumber.parse(phone)
        check_step("option", option)
        return self._apply(number, lambda c, now: c.navigate(option))[0]

    def back(self, phone: str) -> Conversation:
        number = PhoneNumber.parse(phone)
        return self._apply(number, lambda c, now: c.back())[0]

    def update(self, phone: str, change: Callable[[Conversation], object]) -> Conversation:
        """Apply ``change`` (which mutates the conversation) atomically.

        On a concurrent write the latest state is loaded and ``change`` runs again, so it must
        only depend on the conversation it is given. An exception in ``change`` stores nothing
        and propagates. Past ``max_retries`` conflicts, ConcurrencyConflict is raised.
        """
        number = PhoneNumber.parse(phone)
        return self._apply(number, lambda c, now: change(c))[0]

    def handle_once(
        self, phone: str, message_id: str, change: Callable[[Conversation], object]
    ) -> Conversation | None:
        """Like ``update``, once per WhatsApp message id; None for a duplicate delivery.

        The id is remembered (for ``dedupe_ttl``) in the same atomic step as the change, so a
        delivery that fails midway can be retried and a duplicate is never applied.
        """
        number = PhoneNumber.parse(phone)
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID:
            raise InvalidInput(f"message_id must be 1 to {MAX_MESSAGE_ID} characters of text")
        try:
            return self._apply(number, lambda c, now: change(c), message_id=message_id)[0]
        except _Duplicate:
            return None

    def set_profile(
        self, phone: str, member: Mapping[str, Any], accounts: Sequence[Mapping[str, Any]]
    ) -> Conversation:
        """Store the member and accounts (plain dicts from Credex) as critical data."""
        number = PhoneNumber.parse(phone)
        Conversation.new(number.digits, self._clock.now()).set_profile(member, accounts)
        return self._apply(number, lambda c, now: c.set_profile(member, accounts))[0]

    def reset(self, phone: str) -> None:
        """Forget everything about this user: conversation, form, handled ids and token."""
        number = PhoneNumber.parse(phone)
        self._conversations.delete(number)
        self._tokens.delete(number)

    # Forms
    def form_start(self, phone: str, name: str, required: Sequence[str]) -> Form:
        """Begin (or replace) the user's form; it lives for ``form_ttl`` after its last answer."""
        number = PhoneNumber.parse(phone)
        Form.start(name, required, self._clock.now(), self._timeouts.form)  # validate early

        def begin(conversation: Conversation, now: datetime) -> Form:
            conversation.form = Form.start(name, required, now, self._timeouts.form)
            return conversation.form

        return self._apply(number, begin)[1]

    def form_fill(self, phone: str, /, **values: object) -> Form:
        """Store some answers; a bad one raises FormValidationError and stores none of them."""
        number = PhoneNumber.parse(phone)

        def fill(conversation: Conversation, now: datetime) -> Form:
            form = _active_form(conversation)
            form.fill(values, now, self._timeouts.form)
            return form

        return self._apply(number, fill)[1]

    def form_complete(self, phone: str) -> dict[str, str]:
        """Every value of the form, which is then closed; FormIncomplete names what is missing."""
        number = PhoneNumber.parse(phone)

        def complete(conversation: Conversation, now: datetime) -> dict[str, str]:
            values = _active_form(conversation).result()
            conversation.form = None
            return values

        return self._apply(number, complete)[1]

    # Tokens
    def save_token(self, phone: str, value: str) -> None:
        """Store the member's auth token, encrypted and bound to this phone, for ``token_ttl``."""
        number = PhoneNumber.parse(phone)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN:
            raise InvalidInput(f"a token is 1 to {MAX_TOKEN} characters of text")
        now = self._clock.now()
        sealed = self._require_cipher().seal(number, value, now, now + self._timeouts.token)
        self._tokens.put(number, sealed, self._timeouts.token)

    def token(self, phone: str) -> str | None:
        """The member's token, or None when there is none or it has expired."""
        number = PhoneNumber.parse(phone)
        sealed = self._tokens.get(number)
        if sealed is None:
            return None
        token = self._require_cipher().open(number, sealed)
        return None if token.is_expired(self._clock.now()) else token.value

    def revoke_token(self, phone: str) -> bool:
        """Delete the token; True when there was one."""
        return self._tokens.delete(PhoneNumber.parse(phone))

    # The one write path
    def _apply(
        self,
        phone: PhoneNumber,
        change: Callable[[Conversation, datetime], T],
        message_id: str | None = None,
        first: StoredConversation | None = None,
    ) -> tuple[Conversation, T]:
        op_id = secrets.token_hex(8)  # the same id on every attempt: applied at most once
        for attempt in range(self._max_retries + 1):
            now = self._clock.now()
            stored = first or self._conversations.load(phone, now, message_id)
            first = None
            if stored.message_seen:
                raise _Duplicate
            conversation, _ = resume(phone.digits, stored, now, self._timeouts)
            result = change(conversation, now)
            conversation.session.last_seen_at = now
            conversation.critical.last_seen_at = now
            write = ConversationWrite(
                expected_version=stored.version,
                op_id=op_id,
                critical=conversation.critical,
                session=conversation.session,
                form=conversation.form,
                message_id=message_id,
            )
            outcome = self._conversations.save(phone, write, now)
            if outcome.status is WriteStatus.APPLIED:
                conversation.version = outcome.version
                return conversation, result
            if outcome.status is WriteStatus.DUPLICATE:
                raise _Duplicate
            # Jittered backoff so that colliding writers do not collide again in lockstep.
            time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 5)))
        log.warning("update gave up after %d conflicts", self._max_retries + 1)
        raise ConcurrencyConflict(
            f"the conversation kept changing; gave up after {self._max_retries + 1} attempts"
        )

    def _require_cipher(self) -> TokenCipher:
        if self._cipher is None:
            raise ConfigurationError(
                "tokens are encrypted at rest: set STATE_TOKEN_KEYS (config token_keys) to a "
                "Fernet key, e.g. from `vimbiso-state keygen`"
            )
        return self._cipher


class _Duplicate(Exception):
    """Internal: the message id was already handled."""


def _active_form(conversation: Conversation) -> Form:
    if conversation.form is None:
        raise NoActiveForm("there is no form in progress (never started, completed or expired)")
    return conversation.form
