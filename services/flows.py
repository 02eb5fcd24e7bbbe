"""What every StateService operation does, written once for the sync and the async service.

Each operation is a generator that yields the I/O it needs (a Request) and receives the
answer; it never touches a backend itself. StateService and AsyncStateService only differ
in how they carry out a request, so the rules (validation, expiry, compare-and-set, bounded
retries, handle-once) cannot drift apart between them.
"""

from __future__ import annotations

import itertools
import random
import secrets
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar, cast

from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import Conversation, check_step, is_greeting
from vimbiso_state.domain.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    InvalidInput,
    NoActiveForm,
)
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.json_values import check_text
from vimbiso_state.domain.lifecycle import resume
from vimbiso_state.domain.phone import PhoneNumber, check_region
from vimbiso_state.domain.ports import (
    ConversationWrite,
    StoredConversation,
    TokenCipher,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.profile import AccountSelection, Profile, account_selection
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.domain.token import token_deadline

T = TypeVar("T")
R = TypeVar("R")
MAX_MESSAGE_ID = 256
MAX_TOKEN = 8192


# Requests are NamedTuples: immutable like frozen dataclasses, and built in half the time
# (two of them are made for every message).
class Load(NamedTuple):
    phone: PhoneNumber
    now: datetime
    message_id: str | None = None
    touch: bool = True  # slide deadlines; a load followed by a save need not


class Save(NamedTuple):
    phone: PhoneNumber
    write: ConversationWrite
    now: datetime


class Forget(NamedTuple):
    """Delete the conversation and the token."""

    phone: PhoneNumber


class PutToken(NamedTuple):
    phone: PhoneNumber
    sealed: bytes
    ttl: timedelta


class GetToken(NamedTuple):
    phone: PhoneNumber


class DropToken(NamedTuple):
    phone: PhoneNumber


class Pause(NamedTuple):
    """Back off before retrying a conflicting write."""

    seconds: float


Request = Load | Save | Forget | PutToken | GetToken | DropToken | Pause
Flow = Generator[Request, Any, T]
Change = Callable[[Conversation, datetime], T]


class Duplicate(Exception):
    """The WhatsApp message id was handled before."""


class Flows:
    """The rules of every operation, as I/O-free generators."""

    def __init__(
        self,
        clock: Clock,
        timeouts: Timeouts,
        cipher: TokenCipher | None,
        max_retries: int,
        phone_region: str | None = None,
        account_selection: AccountSelection = AccountSelection.SINGLE,
    ) -> None:
        self.clock = clock
        self.timeouts = timeouts
        self.cipher = cipher
        self.max_retries = max_retries
        self.phone_region = check_region(phone_region)
        self.account_selection = account_selection

    def phone(self, text: str) -> PhoneNumber:
        """The caller's phone as canonical digits, national numbers read in phone_region."""
        return PhoneNumber.parse(text, self.phone_region)

    # Conversation
    def start(self, phone: str, message: str | None) -> Flow[Conversation]:
        number = self.phone(phone)
        if message is not None and is_greeting(message):
            return self.restart(number.digits)
        return self._start(number)

    def _start(self, number: PhoneNumber) -> Flow[Conversation]:
        now = self.clock.now()
        stored = cast(StoredConversation, (yield Load(number, now)))
        conversation, changed = resume(
            number.digits, stored, now, self.timeouts, self.account_selection
        )
        if not changed:
            return conversation
        # First contact or an expiry: store the outcome so that concurrent deliveries agree.
        return (yield from self._apply(number, _nothing, _conversation_of, first=stored))

    def restart(self, phone: str) -> Flow[Conversation]:
        return self._conversation(self.phone(phone), lambda c, now: c.greet(now))

    def navigate(self, phone: str, option: str) -> Flow[Conversation]:
        number = self.phone(phone)
        check_step("option", option)
        return self._conversation(number, lambda c, now: c.navigate(option))

    def back(self, phone: str) -> Flow[Conversation]:
        return self._conversation(self.phone(phone), lambda c, now: c.back())

    def update(self, phone: str, change: Callable[[Conversation], object]) -> Flow[Conversation]:
        return self._conversation(self.phone(phone), lambda c, now: change(c))

    def handle_once(
        self, phone: str, message_id: str, change: Callable[[Conversation], object]
    ) -> Flow[Conversation | None]:
        number = self.phone(phone)
        if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID:
            raise InvalidInput(f"message_id must be 1 to {MAX_MESSAGE_ID} characters of text")
        check_text(message_id, "message_id")
        return self._once(number, message_id, change)

    def _once(
        self, number: PhoneNumber, message_id: str, change: Callable[[Conversation], object]
    ) -> Flow[Conversation | None]:
        try:
            return (
                yield from self._apply(
                    number, lambda c, now: change(c), _conversation_of, message_id
                )
            )
        except Duplicate:
            return None

    def set_profile(
        self,
        phone: str,
        member: Mapping[str, Any],
        accounts: Sequence[Mapping[str, Any]],
        selection: AccountSelection | str | None = None,
    ) -> Flow[Conversation]:
        number = self.phone(phone)
        # Bad input fails before any I/O.
        profile = Profile.from_credex(member, accounts)
        rule = self.account_selection if selection is None else account_selection(selection)
        return self._conversation(number, lambda c, now: c.use_profile(profile, selection=rule))

    def reset(self, phone: str) -> Flow[None]:
        number = self.phone(phone)
        return _single(Forget(number), None)

    # Forms
    def form_start(self, phone: str, name: str, required: Sequence[str]) -> Flow[Form]:
        number = self.phone(phone)
        # Validated before any I/O; its field list is what every attempt starts with.
        fields = Form.start(name, required, self.clock.now(), self.timeouts.form).required

        def begin(conversation: Conversation, now: datetime) -> Form:
            conversation.form = Form.start(name, fields, now, self.timeouts.form)
            return conversation.form

        return self._result(number, begin)

    def form_fill(self, phone: str, values: Mapping[str, object]) -> Flow[Form]:
        def fill(conversation: Conversation, now: datetime) -> Form:
            form = _active_form(conversation)
            form.fill(values, now, self.timeouts.form)
            return form

        return self._result(self.phone(phone), fill)

    def form_complete(self, phone: str) -> Flow[dict[str, str]]:
        def complete(conversation: Conversation, now: datetime) -> dict[str, str]:
            values = _active_form(conversation).result()
            conversation.form = None
            return values

        return self._result(self.phone(phone), complete)

    # Tokens
    def save_token(self, phone: str, value: str) -> Flow[None]:
        number = self.phone(phone)
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN:
            raise InvalidInput(f"a token is 1 to {MAX_TOKEN} characters of text")
        check_text(value, "the token")  # the message never shows the token itself
        cipher = self._cipher()
        now = self.clock.now()
        # A JWT expires at its own exp when that comes before token_ttl.
        expires_at = token_deadline(value, now, self.timeouts.token)
        if expires_at <= now:
            # Already expired: it replaces the stored token with none.
            return _answer(DropToken(number), _none)
        sealed = cipher.seal(number, value, now, expires_at)
        return _single(PutToken(number, sealed, expires_at - now), None)

    def token(self, phone: str) -> Flow[str | None]:
        return self._token(self.phone(phone))

    def _token(self, number: PhoneNumber) -> Flow[str | None]:
        sealed = cast(bytes | None, (yield GetToken(number)))
        if sealed is None:
            return None
        token = self._cipher().open(number, sealed)
        return None if token.is_expired(self.clock.now()) else token.value

    def revoke_token(self, phone: str) -> Flow[bool]:
        return _answer(DropToken(self.phone(phone)), bool)

    # The one write path
    def _conversation(self, number: PhoneNumber, change: Change[object]) -> Flow[Conversation]:
        return self._apply(number, change, _conversation_of)

    def _result(self, number: PhoneNumber, change: Change[T]) -> Flow[T]:
        return self._apply(number, change, _result_of)

    def _apply(
        self,
        number: PhoneNumber,
        change: Change[T],
        pick: Callable[[Conversation, T], R],
        message_id: str | None = None,
        first: StoredConversation | None = None,
    ) -> Flow[R]:
        """Load, apply ``change``, compare-and-set; retry on conflict, at most max_retries."""
        op_id = _next_op_id()  # the same id on every attempt: applied at most once
        for attempt in range(self.max_retries + 1):
            now = self.clock.now()
            stored = first or cast(
                StoredConversation, (yield Load(number, now, message_id, touch=False))
            )
            first = None
            if stored.message_seen:
                raise Duplicate
            conversation, _ = resume(
                number.digits, stored, now, self.timeouts, self.account_selection
            )
            result = change(conversation, now)  # an exception here stores nothing
            conversation.session.last_seen_at = now
            conversation.critical.last_seen_at = now
            # The critical data records the deadline of the form written with it, so that a
            # form whose key has been collected still expires with a notice (see resume()).
            form = conversation.form
            conversation.critical.form_expires_at = form.expires_at if form else None
            write = ConversationWrite(
                expected_version=stored.version,
                op_id=op_id,
                critical=conversation.critical,
                session=conversation.session,
                form=conversation.form,
                message_id=message_id,
            )
            outcome = cast(WriteResult, (yield Save(number, write, now)))
            if outcome.status is WriteStatus.APPLIED:
                conversation.version = outcome.version
                return pick(conversation, result)
            if outcome.status is WriteStatus.DUPLICATE:
                raise Duplicate
            # Jittered backoff so that colliding writers do not collide again in lockstep.
            yield Pause(random.uniform(0, 0.002 * 2 ** min(attempt, 5)))
        raise ConcurrencyConflict(
            f"the conversation kept changing; gave up after {self.max_retries + 1} attempts"
        )

    def _cipher(self) -> TokenCipher:
        if self.cipher is None:
            raise ConfigurationError(
                "tokens are encrypted at rest: set STATE_TOKEN_KEYS (config token_keys) to a "
                "Fernet key, e.g. from `vimbiso-state keygen`"
            )
        return self.cipher


# Operation ids: a random prefix per process and a counter, unique across every process and
# restart without asking the OS for randomness on each write.
_OP_PREFIX = secrets.token_hex(6)
_op_counter = itertools.count()


def _next_op_id() -> str:
    return f"{_OP_PREFIX}{next(_op_counter):x}"


def _nothing(conversation: Conversation, now: datetime) -> None:
    return None


def _none(answer: object) -> None:
    return None


def _conversation_of(conversation: Conversation, result: object) -> Conversation:
    return conversation


def _result_of(conversation: Conversation, result: T) -> T:
    return result


def _single(request: Request, value: T) -> Flow[T]:
    yield request
    return value


def _answer(request: Request, kind: Callable[[Any], T]) -> Flow[T]:
    return kind((yield request))


def _active_form(conversation: Conversation) -> Form:
    if conversation.form is None:
        raise NoActiveForm("there is no form in progress (never started, completed or expired)")
    return conversation.form
