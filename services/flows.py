"""What every StateService operation does, written once for the sync and the async service.

Each operation is a generator that yields the I/O it needs (a Request) and receives the
answer; it never touches a backend itself. StateService and AsyncStateService only differ
in how they carry out a request, so the rules (validation, expiry, the unit of work every
write goes through, handle-once, effects) cannot drift apart between them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, NamedTuple, TypeVar, cast

from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import Conversation, Notice, check_step, is_greeting
from vimbiso_state.domain.effects import Effect
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
from vimbiso_state.domain.expirations import Expiration
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.json_values import check_text
from vimbiso_state.domain.lifecycle import resume
from vimbiso_state.domain.phone import PhoneNumber, check_region
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    ConversationWrite,
    EffectRecord,
    Holder,
    StoredConversation,
    TokenChange,
    TokenCipher,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.profile import AccountSelection, Profile, account_selection
from vimbiso_state.domain.timeouts import Timeouts, token_step
from vimbiso_state.domain.token import Token, token_deadline

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)
MAX_MESSAGE_ID = 256
MAX_EXPIRATIONS = 1000
MAX_TOKEN = 8192


# Requests are NamedTuples: immutable like frozen dataclasses, and built in half the time
# (several of them are made for every message).
class Load(NamedTuple):
    """Read the conversation, sliding the deadlines of what is still alive."""

    phone: PhoneNumber
    now: datetime


class Begin(NamedTuple):
    """Hold the user and read (the first step of every write): see MessageRepository.begin."""

    phone: PhoneNumber
    now: datetime
    message_id: str | None
    lease: str
    wait: timedelta


class Commit(NamedTuple):
    phone: PhoneNumber
    holder: Holder
    message_id: str | None
    write: ConversationWrite | None
    token: TokenChange | None
    now: datetime


class Release(NamedTuple):
    phone: PhoneNumber
    lease: str


class Forget(NamedTuple):
    """Delete the conversation and the token, and free the user, in one step."""

    phone: PhoneNumber


class GetToken(NamedTuple):
    phone: PhoneNumber


class EffectStart(NamedTuple):
    phone: PhoneNumber
    holder: Holder
    effect: Effect
    now: datetime


class EffectFinish(NamedTuple):
    phone: PhoneNumber
    effect: Effect
    result: bytes
    now: datetime
    settle: bool


class ClaimDue(NamedTuple):
    """Claim the events due at ``now`` for ``lease`` (ExpiryRepository.claim)."""

    now: datetime
    limit: int
    lease: timedelta


class AckClaims(NamedTuple):
    claims: tuple[Claim, ...]
    now: datetime


class Noticed(NamedTuple):
    """No I/O: what an operation found, for the drivers' telemetry: what a stored outcome
    meant for the user (a part expired, or was lost; yielded after the commit, so that a
    unit of work that stored nothing is not counted), or a duplicate delivery."""

    phone: PhoneNumber
    notices: tuple[Notice, ...] = ()
    token_expired: bool = False
    duplicate: bool = False


# The notices an operator counts: expiries and lost state (welcome and restarted are not).
OBSERVED = frozenset({Notice.SESSION_EXPIRED, Notice.FORM_EXPIRED, Notice.STATE_LOST})


Request = (
    Load
    | Begin
    | Commit
    | Release
    | Forget
    | GetToken
    | EffectStart
    | EffectFinish
    | ClaimDue
    | AckClaims
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
        phone_region: str | None = None,
        account_selection: AccountSelection = AccountSelection.SINGLE,
        elapsed: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.timeouts = timeouts
        self.cipher = cipher
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
        return (yield from self._unit(number, _nothing, _conversation_of))

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
                yield from self._unit(
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
        """Forget the user but the named context keys, in one step once the user is held:
        it waits for a unit of work in flight (a plain reset takes the user from it)."""
        lease = new_id()
        begun = yield from self.begin(number, None, lease)
        assert begun.stored is not None
        # The context as the user would find it now: an expired session has none to keep.
        context = self.open(number, begun.stored, None).context
        kept = {name: context[name] for name in names if name in context}
        if not kept:
            yield from _or_give_back(Forget(number), number, lease)  # frees the user too
            return
        fresh = Conversation.new(number.digits, self.clock.now())
        fresh.session.context.update(kept)
        revoke = TokenChange(None, self.timeouts.token)
        holder = Holder(lease, begun.fence, begun.effects)
        yield from self.commit(
            number, holder, None, fresh, begun.stored, revoke, ConcurrencyConflict
        )

    # Forms
    def form_start(self, phone: str, name: str, required: Sequence[str]) -> Flow[Form]:
        number = self.phone(phone)
        # Validated before any I/O; its field list is what the unit of work starts with.
        fields = Form.start(name, required, self.clock.now(), self.timeouts.form).required

        return self._result(number, lambda c, now: self.start_form(c, name, fields, now))

    def form_fill(self, phone: str, values: Mapping[str, object]) -> Flow[Form]:
        return self._result(self.phone(phone), lambda c, now: self.fill_form(c, values, now))

    def form_complete(self, phone: str) -> Flow[dict[str, str]]:
        return self._result(self.phone(phone), lambda c, now: complete_form(c))

    # What a form operation does to a conversation: the one-call operations above and a
    # message's msg.form_start/fill/complete apply the same rules through these.
    def start_form(
        self,
        conversation: Conversation,
        name: str,
        required: Sequence[str],
        now: datetime,
        form_id: str | None = None,
    ) -> Form:
        conversation.form = Form.start(name, required, now, self.timeouts.form, form_id)
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
        sealed = self.seal(number, value)  # a bad token fails before any I/O
        return self._saved(number, sealed)

    def _saved(self, number: PhoneNumber, sealed: TokenChange) -> Flow[None]:
        yield from self._token_unit(number, sealed)

    def token(self, phone: str) -> Flow[str | None]:
        return self._token(self.phone(phone))

    def _token(self, number: PhoneNumber) -> Flow[str | None]:
        value, expired = self.read_token(number, cast(bytes | None, (yield GetToken(number))))
        if expired:
            yield Noticed(number, token_expired=True)
        return value

    def revoke_token(self, phone: str) -> Flow[bool]:
        number = self.phone(phone)
        return self._token_unit(number, TokenChange(None, self.timeouts.token))

    # The one write path: hold the user, change, commit (or give the user back)
    def _conversation(self, number: PhoneNumber, change: Change[object]) -> Flow[Conversation]:
        return self._unit(number, change, _conversation_of)

    def _result(self, number: PhoneNumber, change: Change[T]) -> Flow[T]:
        return self._unit(number, change, _result_of)

    def _unit(
        self,
        number: PhoneNumber,
        change: Change[T],
        pick: Callable[[Conversation, T], R],
        message_id: str | None = None,
        token: TokenChange | None = None,
    ) -> Flow[R]:
        """One write: hold the user (waiting up to ``lease_wait`` for a message that holds
        them), apply ``change`` once, and commit; an exception in ``change`` stores nothing.
        With ``message_id``, a duplicate raises Duplicate before ``change`` runs."""
        lease = new_id()
        begun = yield from self.begin(number, message_id, lease)
        if begun.duplicate:
            raise Duplicate
        assert begun.stored is not None
        conversation = self.open(number, begun.stored, None, inbound=message_id is not None)
        try:
            result = change(conversation, self.clock.now())
        except BaseException:
            yield from _give_back(number, lease)
            raise
        holder = Holder(lease, begun.fence, begun.effects)
        yield from self.commit(
            number, holder, message_id, conversation, begun.stored, token, ConcurrencyConflict
        )
        return pick(conversation, result)

    def _token_unit(self, number: PhoneNumber, token: TokenChange) -> Flow[bool]:
        """A unit of work that changes the token alone; True when a token was there."""
        lease = new_id()
        begun = yield from self.begin(number, None, lease)
        holder = Holder(lease, begun.fence, begun.effects)
        commit = Commit(number, holder, None, None, token, self.clock.now())
        outcome = cast(WriteResult, (yield from _or_give_back(commit, number, lease)))
        if outcome.status is WriteStatus.LEASE_LOST:
            raise ConcurrencyConflict(_TAKEN)
        return begun.token is not None

    # A unit of work's steps, for one-call writes and for a WhatsApp message alike
    # (services.message drives them for ``state.message``)
    def begin(self, number: PhoneNumber, message_id: str | None, lease: str) -> Flow[Begun]:
        """Hold the user and read; wait for the user's previous unit of work if it holds them.

        Returns the stored conversation (``stored`` set), or a duplicate; raises UserBusy when
        the previous one did not end within ``lease_wait``.
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
            # most until its lease lapses or this caller's patience runs out.
            wait = min(left, begun.busy_for + LEASE_SLACK)

    def open(
        self,
        number: PhoneNumber,
        stored: StoredConversation,
        text: str | None,
        inbound: bool = False,
    ) -> Conversation:
        """The conversation a unit of work changes, resumed as ``start`` resumes it; a
        message's greeting restarts it at the menu. An ``inbound`` message (one with a
        WhatsApp message id) reopens the member's customer-service window."""
        now = self.clock.now()
        conversation, _ = resume(number.digits, stored, now, self.timeouts, self.account_selection)
        if inbound:
            conversation.critical.inbound_at = now
        if text is not None and is_greeting(text):
            conversation.greet(now)
        return conversation

    def commit(
        self,
        number: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        conversation: Conversation,
        stored: StoredConversation,
        token: TokenChange | None,
        lost: type[StateError] = LeaseLost,
    ) -> Flow[Conversation]:
        """Commit every change against what ``begin`` loaded (``stored``); ``lost`` is raised
        when the lease no longer held (nothing was stored)."""
        now = self.clock.now()
        write = _write_of(conversation, stored, now)
        # Failed (refused by a full server, or unanswered), it has stored nothing, or it
        # applied and freed the user already, and giving back then finds the lease gone.
        commit = Commit(number, holder, message_id, write, token, now)
        outcome = cast(WriteResult, (yield from _or_give_back(commit, number, holder.lease)))
        if outcome.status is WriteStatus.LEASE_LOST:
            raise lost(_LEASE_LOST if lost is LeaseLost else _TAKEN)
        conversation.version = outcome.version
        if conversation.notices:
            yield from _noticed(number, conversation)
        return conversation

    def release(self, number: PhoneNumber, lease: str) -> Flow[None]:
        return _single(Release(number, lease), None)

    def effect_start(
        self, number: PhoneNumber, holder: Holder, effect: Effect
    ) -> Flow[EffectRecord]:
        return _answer(EffectStart(number, holder, effect, self.clock.now()), _record)

    def effect_finish(
        self, number: PhoneNumber, effect: Effect, result: bytes, settle: bool = False
    ) -> Flow[EffectRecord]:
        request = EffectFinish(number, effect, result, self.clock.now(), settle)
        return _answer(request, _record)

    # Expiry events
    def expirations(self, limit: int, lease: float) -> Flow[list[tuple[Claim, Expiration]]]:
        """Claim up to ``limit`` due events for ``lease`` seconds."""
        if type(limit) is not int or not 0 < limit <= MAX_EXPIRATIONS:
            raise InvalidInput(f"limit is a whole number from 1 to {MAX_EXPIRATIONS}")
        if not isinstance(lease, int | float) or not 0 < lease <= 3600:
            raise InvalidInput("lease is a number of seconds, more than 0 and at most 3600")
        return self._expirations(limit, timedelta(seconds=lease))

    def _expirations(self, limit: int, lease: timedelta) -> Flow[list[tuple[Claim, Expiration]]]:
        now = self.clock.now()
        return cast(list[tuple[Claim, Expiration]], (yield ClaimDue(now, limit, lease)))

    def acknowledge(self, claims: Sequence[Claim]) -> Flow[None]:
        """The events of these claims were delivered."""
        return _single(AckClaims(tuple(claims), self.clock.now()), None)

    def seal(self, number: PhoneNumber, value: str) -> TokenChange:
        """A token as a commit will store it (none, if it has already expired)."""
        _check_token(value)
        cipher = self._cipher()
        now = self.clock.now()
        # A JWT expires at its own exp when that comes before token_ttl.
        expires_at = token_deadline(value, now, self.timeouts.token)
        if expires_at <= now:
            return TokenChange(None, self.timeouts.token)
        return TokenChange(cipher.seal(number, value, now, expires_at), expires_at - now)

    def unseal(self, number: PhoneNumber, sealed: bytes | None) -> str | None:
        """The token's value, or None when there is none or it has expired."""
        return self.read_token(number, sealed)[0]

    def read_token(self, number: PhoneNumber, sealed: bytes | None) -> tuple[str | None, bool]:
        """The token's value (as ``unseal``), and whether a stored token was past its deadline."""
        token, expired = self.open_token(number, sealed)
        return (None if token is None else token.value), expired

    def open_token(self, number: PhoneNumber, sealed: bytes | None) -> tuple[Token | None, bool]:
        """The live token (None when there is none or it has expired), and whether a stored
        token was past its deadline."""
        if sealed is None:
            return None, False
        token = self._cipher().open(number, sealed)
        if token.is_expired(self.clock.now()):
            return None, True
        return token, False

    def slid(self, number: PhoneNumber, token: Token) -> TokenChange | None:
        """The token a message that used it stores: live ``token_ttl`` from now, never past
        its JWT's ``exp``; None while its deadline would move by less than a step."""
        now = self.clock.now()
        deadline = token_deadline(token.value, now, self.timeouts.token)
        if deadline - token.expires_at < token_step(self.timeouts.token):
            return None
        sealed = self._cipher().seal(number, token.value, token.issued_at, deadline)
        return TokenChange(sealed, deadline - now)

    def _cipher(self) -> TokenCipher:
        if self.cipher is None:
            raise ConfigurationError(
                "tokens are encrypted at rest: set STATE_TOKEN_KEYS (config token_keys) to a "
                "Fernet key, e.g. from `vimbiso-state keygen`"
            )
        return self.cipher


def new_id() -> str:
    """A lease id: random, so that it never repeats in any process, a forked child included
    (a prefix drawn at import would be the same in every child of a preloading server)."""
    return secrets.token_hex(10)


# How long past the holder's lease a waiting caller looks again (the lease lapses then).
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
_LEASE_LOST = (
    "this message's lease lapsed (its handler ran longer than lease_ttl) or the user was reset "
    "meanwhile: nothing it changed was stored"
)
_TAKEN = (
    "the user was reset (or their hold lost in a failover) while this write ran: nothing it "
    "changed was stored"
)


def _busy(wait: timedelta) -> str:
    return (
        f"another message of this user is still being handled (waited {wait.total_seconds():g}"
        " s); answer the webhook with a non-2xx status so that WhatsApp delivers it again"
    )


def _write_of(
    conversation: Conversation, stored: StoredConversation, now: datetime
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
        critical=conversation.critical,
        session=conversation.session,
        form=form,
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


def _conversation_of(conversation: Conversation, result: object) -> Conversation:
    return conversation


def _result_of(conversation: Conversation, result: T) -> T:
    return result


def _or_give_back(request: Request, number: PhoneNumber, lease: str) -> Flow[object]:
    """``request``'s answer; when it fails, the lease is given back (if this caller holds
    it) before the error goes on, rather than keeping the user waiting until it lapses."""
    try:
        return (yield request)
    except StateError:
        yield from _give_back(number, lease)
        raise


def _give_back(number: PhoneNumber, lease: str) -> Flow[None]:
    """Free the user after a failure; the caller's own error matters more than this one's
    (the lease lapses on its own)."""
    try:
        yield Release(number, lease)
    except StateError as failure:
        log.warning("could not free the user after a failed write: %s", failure)


def _single(request: Request, value: T) -> Flow[T]:
    yield request
    return value


def _answer(request: Request, kind: Callable[[Any], T]) -> Flow[T]:
    return kind((yield request))


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
