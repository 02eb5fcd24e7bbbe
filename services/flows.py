"""What every StateService operation does, written once for the sync and the async service.

Each operation is a generator that yields the I/O it needs (a Request) and receives the
answer; it never touches a backend itself. StateService and AsyncStateService only differ
in how they carry out a request, so the rules (validation, expiry, compare-and-set, bounded
retries, handle-once) cannot drift apart between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar, cast

from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import Conversation, Notice, check_step, is_greeting
from vimbiso_state.domain.errors import (
    CalledInsideOwnMessage,
    ConcurrencyConflict,
    ConfigurationError,
    InvalidInput,
    LeaseLost,
    NoActiveForm,
    StateError,
    UserBusy,
)
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.json_values import check_text
from vimbiso_state.domain.lifecycle import resume
from vimbiso_state.domain.phone import PhoneNumber, check_region
from vimbiso_state.domain.ports import (
    Begun,
    ConversationWrite,
    EffectRecord,
    StoredConversation,
    TokenChange,
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
    """Back off before retrying a write: after a conflict, or while the user is busy."""

    seconds: float
    after: WriteStatus = WriteStatus.CONFLICT  # what the write met (the drivers count it)


class Begin(NamedTuple):
    phone: PhoneNumber
    now: datetime
    message_id: str
    lease: str
    wait: timedelta


class Commit(NamedTuple):
    phone: PhoneNumber
    lease: str
    write: ConversationWrite
    token: TokenChange | None
    now: datetime


class Release(NamedTuple):
    phone: PhoneNumber
    lease: str


class EffectStart(NamedTuple):
    phone: PhoneNumber
    lease: str
    message_id: str
    name: str
    now: datetime


class EffectFinish(NamedTuple):
    phone: PhoneNumber
    message_id: str
    name: str
    result: bytes
    now: datetime


class Noticed(NamedTuple):
    """No I/O: what an operation found, for the drivers' telemetry: what a stored outcome
    meant for the user (a part expired, or was lost; yielded after the write was applied, so
    that an attempt that lost a conflict is not counted), or a duplicate delivery."""

    phone: PhoneNumber
    notices: tuple[Notice, ...] = ()
    token_expired: bool = False
    duplicate: bool = False


# The notices an operator counts: expiries and lost state (welcome and restarted are not).
OBSERVED = frozenset({Notice.SESSION_EXPIRED, Notice.FORM_EXPIRED, Notice.STATE_LOST})


Request = (
    Load
    | Save
    | Forget
    | PutToken
    | GetToken
    | DropToken
    | Pause
    | Begin
    | Commit
    | Release
    | EffectStart
    | EffectFinish
    | Noticed
)
Flow = Generator[Request, Any, T]
Change = Callable[[Conversation, datetime], T]


def check_message_id(message_id: object) -> str:
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_MESSAGE_ID:
        raise InvalidInput(f"message_id must be 1 to {MAX_MESSAGE_ID} characters of text")
    check_text(message_id, "message_id")
    return message_id


class Duplicate(Exception):
    """The WhatsApp message id was handled before."""


class Steps(Generic[T]):
    """Drives one flow: iterate for the requests it yields, and hand each one's outcome back.

    The one shape of both services' drivers::

        steps = Steps(flow)
        for request in steps:
            try:
                steps.answer(perform(request))   # awaited in the async service
            except Exception as error:
                steps.fail(error)
        return steps.result

    A backend's exception is raised inside the flow, at the request that failed, so that
    nothing a backend raises (StopIteration included: Python turns it into RuntimeError there)
    can pass for the flow's end, in either service.
    """

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self._answer: object = None
        self._error: Exception | None = None
        self.result: T

    def __iter__(self) -> Iterator[Request]:
        while True:
            try:
                if self._error is None:
                    request = self._flow.send(self._answer)
                else:
                    error, self._error = self._error, None
                    request = self._flow.throw(error)
            except StopIteration as finished:
                self.result = finished.value
                return
            self._answer = None
            yield request

    def answer(self, value: object) -> None:
        self._answer = value

    def fail(self, error: Exception) -> None:
        self._error = error


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
        elapsed: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.timeouts = timeouts
        self.cipher = cipher
        self.max_retries = max_retries
        # How long a caller has waited for another message is real time, whatever the Clock
        # says (a test's clock stands still while threads wait).
        self._elapsed = elapsed
        self.phone_region = check_region(phone_region)
        self.account_selection = account_selection
        # (user, thread or task) for each open message block: the one caller whose wait for
        # the user could only end when it gives up, since it is waiting for itself.
        self._holders: set[tuple[str, object]] = set()

    def hold(self, number: PhoneNumber) -> tuple[str, object]:
        """Note that the running thread (or asyncio task) holds the user, until ``let_go``."""
        holder = (number.digits, _running())
        self._holders.add(holder)
        return holder

    def let_go(self, holder: tuple[str, object]) -> None:
        self._holders.discard(holder)

    def _check_not_held_here(self, number: PhoneNumber) -> None:
        """Before waiting for a busy user: refuse at once when the waiter is the holder."""
        if (number.digits, _running()) in self._holders:
            raise CalledInsideOwnMessage(_BUSY_WITH_ITSELF)

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
        return self._once(number, check_message_id(message_id), change)

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
            yield Noticed(number, duplicate=True)
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

    def reset(self, phone: str, keep_context: Sequence[str] = ()) -> Flow[None]:
        number = self.phone(phone)
        kept = _context_names(keep_context)  # bad names fail before any I/O
        if not kept:
            return _single(Forget(number), None)
        return self._reset_keeping(number, kept)

    def _reset_keeping(self, number: PhoneNumber, names: tuple[str, ...]) -> Flow[None]:
        """Forget the user, then write the named context keys onto the fresh conversation.

        Two steps, not one: the write goes through the one write path (versions never
        repeat, a message in flight still loses its lease). A crash between them loses only
        the kept keys, never more than a plain reset would.
        """
        now = self.clock.now()
        stored = cast(StoredConversation, (yield Load(number, now, touch=False)))
        # The context as the user would find it now: an expired session has none to keep.
        current, _ = resume(number.digits, stored, now, self.timeouts, self.account_selection)
        kept = {name: current.context[name] for name in names if name in current.context}
        yield Forget(number)
        if kept:
            yield from self._apply(number, lambda c, now: c.context.update(kept), _none_of)

    # Forms
    def form_start(self, phone: str, name: str, required: Sequence[str]) -> Flow[Form]:
        number = self.phone(phone)
        # Validated before any I/O; its field list is what every attempt starts with.
        fields = Form.start(name, required, self.clock.now(), self.timeouts.form).required

        return self._result(number, lambda c, now: self.start_form(c, name, fields, now))

    def form_fill(self, phone: str, values: Mapping[str, object]) -> Flow[Form]:
        return self._result(self.phone(phone), lambda c, now: self.fill_form(c, values, now))

    def form_complete(self, phone: str) -> Flow[dict[str, str]]:
        return self._result(self.phone(phone), lambda c, now: complete_form(c))

    # What a form operation does to a conversation: the one-call operations above and a
    # message's msg.form_start/fill/complete apply the same rules through these.
    def start_form(
        self, conversation: Conversation, name: str, required: Sequence[str], now: datetime
    ) -> Form:
        conversation.form = Form.start(name, required, now, self.timeouts.form)
        return conversation.form

    def fill_form(
        self, conversation: Conversation, values: Mapping[str, object], now: datetime
    ) -> Form:
        form = _active_form(conversation)
        form.fill(values, now, self.timeouts.form)  # a bad answer stores none of them
        return form

    # Tokens
    def save_token(self, phone: str, value: str) -> Flow[None]:
        number = self.phone(phone)
        _check_token(value)
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
        value, expired = self.read_token(number, cast(bytes | None, (yield GetToken(number))))
        if expired:
            yield Noticed(number, token_expired=True)
        return value

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
        """Load, apply ``change``, compare-and-set; retry on conflict, at most max_retries.

        While a message holds the user, the write waits for it (up to ``lease_wait``, then
        UserBusy): it would otherwise slip between that message's load and its commit.
        """
        op_id = new_id()  # the same id on every attempt: applied at most once
        patience: float | None = None
        attempt = 0
        while attempt <= self.max_retries:
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
            write = _write_of(conversation, stored, op_id, message_id, now)
            outcome = cast(WriteResult, (yield Save(number, write, now)))
            if outcome.status is WriteStatus.APPLIED:
                if outcome.version == 0:  # applied by an attempt whose reply was lost
                    reread = cast(StoredConversation, (yield Load(number, now, touch=False)))
                    conversation.version = reread.version
                else:
                    conversation.version = outcome.version
                if conversation.notices:
                    yield from _noticed(number, conversation)
                return pick(conversation, result)
            if outcome.status is WriteStatus.DUPLICATE:
                raise Duplicate
            if outcome.status is WriteStatus.BUSY:
                self._check_not_held_here(number)
                patience = patience or self._elapsed() + self.timeouts.lease_wait.total_seconds()
                if self._elapsed() >= patience:
                    raise UserBusy(_busy(self.timeouts.lease_wait))
                yield Pause(min(0.05, outcome.busy_for.total_seconds()) or 0.001, WriteStatus.BUSY)
                continue
            # Jittered backoff so that colliding writers do not collide again in lockstep.
            yield Pause(random.uniform(0, 0.002 * 2 ** min(attempt, 5)))
            attempt += 1
        raise ConcurrencyConflict(
            f"the conversation kept changing; gave up after {self.max_retries + 1} attempts"
        )

    # A WhatsApp message as one unit of work (services.message drives these)
    def message_begin(self, number: PhoneNumber, message_id: str, lease: str) -> Flow[Begun]:
        """Hold the user and load; wait for the user's previous message if it holds them.

        Returns the stored conversation (``stored`` set), or a duplicate; raises UserBusy when
        the previous message did not end within ``lease_wait``.
        """
        patience = self._elapsed() + self.timeouts.lease_wait.total_seconds()
        wait = timedelta(0)
        while True:
            now = self.clock.now()
            # Failed, the lease may be held by now (the state could not be read, or the
            # reply was lost).
            begin = Begin(number, now, message_id, lease, wait)
            begun = cast(Begun, (yield from _or_give_back(begin, number, lease)))
            if begun.duplicate or begun.stored is not None:
                return begun
            self._check_not_held_here(number)
            left = timedelta(seconds=patience - self._elapsed())
            if left <= timedelta(0):
                raise UserBusy(_busy(self.timeouts.lease_wait))
            # The next attempt first waits for the holder to end (woken when it does), at
            # most until its lease lapses or this message's patience runs out.
            wait = min(left, begun.busy_for + LEASE_SLACK)

    def message_open(
        self, number: PhoneNumber, stored: StoredConversation, text: str | None
    ) -> Conversation:
        """The conversation a begun message works on, resumed as ``start`` resumes it."""
        now = self.clock.now()
        conversation, _ = resume(number.digits, stored, now, self.timeouts, self.account_selection)
        if text is not None and is_greeting(text):
            conversation.greet(now)
        return conversation

    def message_commit(
        self,
        number: PhoneNumber,
        lease: str,
        message_id: str,
        conversation: Conversation,
        stored: StoredConversation,
        token: TokenChange | None,
    ) -> Flow[Conversation]:
        """Commit the message: every change against what ``begin`` loaded (``stored``)."""
        now = self.clock.now()
        write = _write_of(conversation, stored, new_id(), message_id, now)
        # Failed (refused by a full server, or unanswered), it has stored nothing, or it
        # applied and freed the user already, and giving back then finds the lease gone.
        commit = Commit(number, lease, write, token, now)
        outcome = cast(WriteResult, (yield from _or_give_back(commit, number, lease)))
        if outcome.status is WriteStatus.LEASE_LOST:
            raise LeaseLost(
                "this message's lease lapsed (its handler ran longer than lease_ttl) or the "
                "user was reset meanwhile: nothing it changed was stored"
            )
        if outcome.status is not WriteStatus.APPLIED:  # pragma: no cover - the lease excludes it
            raise ConcurrencyConflict(f"the message's commit was refused: {outcome.status}")
        if outcome.version == 0:
            reread = cast(StoredConversation, (yield Load(number, now, touch=False)))
            conversation.version = reread.version
        else:
            conversation.version = outcome.version
        if conversation.notices:
            yield from _noticed(number, conversation)
        return conversation

    def message_release(self, number: PhoneNumber, lease: str) -> Flow[None]:
        return _single(Release(number, lease), None)

    def effect_start(
        self, number: PhoneNumber, lease: str, message_id: str, name: str
    ) -> Flow[EffectRecord]:
        check_step("effect name", name)
        return _answer(EffectStart(number, lease, message_id, name, self.clock.now()), _record)

    def effect_finish(
        self, number: PhoneNumber, message_id: str, name: str, result: bytes
    ) -> Flow[None]:
        return _single(EffectFinish(number, message_id, name, result, self.clock.now()), None)

    def seal(self, number: PhoneNumber, value: str) -> TokenChange:
        """A token as a message's commit will store it (none, if it has already expired)."""
        _check_token(value)
        cipher = self._cipher()
        now = self.clock.now()
        expires_at = token_deadline(value, now, self.timeouts.token)
        if expires_at <= now:
            return TokenChange(None, self.timeouts.token)
        return TokenChange(cipher.seal(number, value, now, expires_at), expires_at - now)

    def unseal(self, number: PhoneNumber, sealed: bytes | None) -> str | None:
        """The token's value, or None when there is none or it has expired."""
        return self.read_token(number, sealed)[0]

    def read_token(self, number: PhoneNumber, sealed: bytes | None) -> tuple[str | None, bool]:
        """The token's value (as ``unseal``), and whether a stored token was past its deadline."""
        if sealed is None:
            return None, False
        token = self._cipher().open(number, sealed)
        if token.is_expired(self.clock.now()):
            return None, True
        return token.value, False

    def _cipher(self) -> TokenCipher:
        if self.cipher is None:
            raise ConfigurationError(
                "tokens are encrypted at rest: set STATE_TOKEN_KEYS (config token_keys) to a "
                "Fernet key, e.g. from `vimbiso-state keygen`"
            )
        return self.cipher


def new_id() -> str:
    """An operation or lease id: random, so that it never repeats in any process, a forked
    child included (a prefix drawn at import would be the same in every child of a
    preloading server)."""
    return secrets.token_hex(10)


# How long past the holder's lease a waiting message looks again (the lease lapses then).
LEASE_SLACK = timedelta(milliseconds=50)


def _running() -> object:
    """The asyncio task running this code, or else its thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return threading.get_ident()
    return asyncio.current_task()


_BUSY_WITH_ITSELF = (
    "called inside this user's own `state.message` block, which holds the user until it ends: "
    "this call would wait for itself. Inside the block change msg.conversation, and use "
    "msg.form_start, msg.form_fill, msg.form_complete, msg.save_token and msg.revoke_token; "
    "the block stores them all when it ends"
)


def _busy(wait: timedelta) -> str:
    return (
        f"another message of this user is still being handled (waited {wait.total_seconds():g}"
        " s); answer the webhook with a non-2xx status so that WhatsApp delivers it again"
    )


def _write_of(
    conversation: Conversation,
    stored: StoredConversation,
    op_id: str,
    message_id: str | None,
    now: datetime,
) -> ConversationWrite:
    conversation.session.last_seen_at = now
    conversation.critical.last_seen_at = now
    # The critical data records the deadline of the form written with it, so that a form
    # whose key has been collected still expires with a notice (see resume()).
    form = conversation.form
    conversation.critical.form_expires_at = form.expires_at if form else None
    # Fields a newer release stored go back with the parts they came in (not with a part the
    # rules replaced, such as an expired session).
    kept = {"critical": stored.critical, "session": stored.session, "form": stored.form}
    now_held = {"critical": conversation.critical, "session": conversation.session, "form": form}
    extras = {
        part: fields for part, fields in stored.extras.items() if kept[part] is now_held[part]
    }
    documents = {
        part: data for part, data in stored.documents.items() if kept[part] is now_held[part]
    }
    return ConversationWrite(
        expected_version=stored.version,
        op_id=op_id,
        critical=conversation.critical,
        session=conversation.session,
        form=form,
        message_id=message_id,
        extras=extras,
        documents=documents,
    )


def _noticed(number: PhoneNumber, conversation: Conversation) -> Flow[None]:
    observed = tuple(notice for notice in conversation.notices if notice in OBSERVED)
    if observed:
        yield Noticed(number, observed)


def _record(value: object) -> EffectRecord:
    return cast(EffectRecord, value)


def _check_token(value: object) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN:
        raise InvalidInput(f"a token is 1 to {MAX_TOKEN} characters of text")
    check_text(value, "the token")  # the message never shows the token itself


def _nothing(conversation: Conversation, now: datetime) -> None:
    return None


def _none(answer: object) -> None:
    return None


def _conversation_of(conversation: Conversation, result: object) -> Conversation:
    return conversation


def _result_of(conversation: Conversation, result: T) -> T:
    return result


def _or_give_back(request: Request, number: PhoneNumber, lease: str) -> Flow[object]:
    """``request``'s answer; when it fails, the lease is given back (if this message holds
    it) before the error goes on, rather than keeping the user waiting until it lapses."""
    try:
        return (yield request)
    except StateError:
        with contextlib.suppress(StateError):
            yield Release(number, lease)
        raise


def _single(request: Request, value: T) -> Flow[T]:
    yield request
    return value


def _answer(request: Request, kind: Callable[[Any], T]) -> Flow[T]:
    return kind((yield request))


def _none_of(conversation: Conversation, result: object) -> None:
    return None


def _context_names(names: object) -> tuple[str, ...]:
    # A str is a sequence of one-letter names: refused, not read as a list of letters.
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise InvalidInput(
            "keep_context is a list of context key names, like ['mock_testing'], "
            f"not {type(names).__name__}"
        )
    return tuple(names)


def complete_form(conversation: Conversation) -> dict[str, str]:
    """Every value of the conversation's form, which is then closed (FormIncomplete names
    what is missing, and the form stays)."""
    values = _active_form(conversation).result()
    conversation.form = None
    return values


def _active_form(conversation: Conversation) -> Form:
    if conversation.form is None:
        raise NoActiveForm("there is no form in progress (never started, completed or expired)")
    return conversation.form
