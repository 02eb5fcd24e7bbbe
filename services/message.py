"""One inbound WhatsApp message as a unit of work: ``with state.message(...) as msg``.

Entering holds the user (no other message of theirs runs until the block ends, in any
process or host) and loads the conversation; leaving commits every change, the message id and
the token in one atomic step, or, after an exception, stores nothing and frees the user.
Effects (calls to Credex) run at most once per intent: an offer's own id, or the message.
The rules are in services.flows; ``Message`` carries them out through a blocking driver and
``AsyncMessage`` through an asyncio one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, overload

from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.effects import Effect, InDoubt
from vimbiso_state.domain.errors import EffectInDoubt, InvalidInput, LeaseLost, StateError
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.json_values import check_json
from vimbiso_state.domain.ports import Begun, EffectRecord, EffectStatus, Holder, TokenChange
from vimbiso_state.services.drivers import AsyncDriver, Driver
from vimbiso_state.services.flows import Flow, Flows, check_message_id, complete_form, new_id
from vimbiso_state.services.telemetry import Watch

T = TypeVar("T")
log = logging.getLogger(__name__)


class _MessageState:
    """What a message holds between entering and leaving; no I/O."""

    def __init__(self, flows: Flows, phone: str, message_id: str, text: str | None) -> None:
        self._flows = flows
        self._number = flows.phone(phone)
        self.message_id = check_message_id(message_id)
        if text is not None and not isinstance(text, str):
            raise InvalidInput("the message text must be text (or None)")
        self._text = text
        self._lease = new_id()
        self._begun = Begun(None)
        self._conversation: Conversation | None = None
        self._token_change: TokenChange | None = None
        self._in_doubt: list[InDoubt] = []
        self._forms = 0  # form_start calls so far: each names a form of its own
        self._open = False
        self.duplicate = False
        self._watch: Watch | None = None  # from entering to leaving
        self._holder: tuple[str, object] | None = None  # while the block runs
        self._now: datetime | None = None
        self._epoch = 0  # the effect records' epoch once an effect of this message started

    @property
    def phone(self) -> str:
        """The user's canonical E.164 digits."""
        return self._number.digits

    @property
    def conversation(self) -> Conversation:
        """The user's conversation, resumed as ``start`` resumes it; change it freely."""
        if self._conversation is None:
            raise InvalidInput("a duplicate delivery has no conversation: check msg.duplicate")
        return self._conversation

    @property
    def now(self) -> datetime:
        """When the block began, by the store's clock: the clock of ``InDoubt.started_at`` and
        of every deadline, whatever this host's clock says."""
        if self._now is None:
            raise InvalidInput("a message's time is known once its block is entered")
        return self._now

    @property
    def in_doubt(self) -> tuple[InDoubt, ...]:
        """The user's effects whose outcome is unknown (started, never recorded), whichever
        message started them: check it first, settle each (``settle``), tell the member."""
        return tuple(self._in_doubt)

    def idempotency_key(self, name: str, key: str | None = None) -> str:
        """A key that is the same for every attempt of one intent (``key``, default this
        message), for APIs that accept one."""
        effect = self._effect(name, key)
        text = f"{self._number.digits}\0{effect.key}\0{effect.name}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def token(self) -> str | None:
        """The member's auth token as this message sees it (read with the conversation).

        Using it keeps it: the commit stores it live ``token_ttl`` from now (never past the
        JWT's ``exp``), so that an active member is not logged out mid-offer.
        """
        if self._token_change is not None:
            return self._flows.unseal(self._number, self._token_change.sealed)
        token, expired = self._flows.open_token(self._number, self._begun.token)
        if expired and self._watch is not None:
            self._watch.token_expired()
        if token is None:
            return None
        if self._open:
            self._token_change = self._flows.slid(self._number, token)
        return token.value

    def save_token(self, value: str) -> None:
        """Store the member's token with this message's commit."""
        self._token_change = self._flows.seal(self._number, value)

    def revoke_token(self) -> None:
        """Delete the member's token with this message's commit."""
        self._token_change = TokenChange(None, self._flows.timeouts.token)

    # Forms, by the rules of the one-call form_start/form_fill/form_complete; what they
    # change is stored with this message's commit, like any change to the conversation.
    def form_start(self, name: str, required: Sequence[str]) -> Form:
        """Begin (or replace) the user's form; it lives for ``form_ttl`` after its last answer.
        Its ``id`` is the same on every delivery of this message, new for any other."""
        self._forms += 1
        seed = f"{self._number.digits}\0{self.message_id}\0{name}\0{self._forms}"
        form_id = hashlib.sha256(seed.encode()).hexdigest()[:16]
        now = self._flows.clock.now()
        return self._flows.start_form(self.conversation, name, required, now, form_id)

    def form_fill(self, /, **values: object) -> Form:
        """Add answers to the form; a bad one raises FormValidationError and adds none of them
        (NoActiveForm when there is no form)."""
        return self._flows.fill_form(self.conversation, values, self._flows.clock.now())

    def form_complete(self) -> dict[str, str]:
        """Every value of the form, which is then closed; FormIncomplete names what is missing."""
        return complete_form(self.conversation)

    # The steps the drivers carry out
    def _begin(self) -> Flow[Begun]:
        return self._flows.begin(self._number, self.message_id, self._lease)

    def _opened(self, begun: Begun) -> None:
        self._begun = begun
        self._now = self._flows.clock.now()
        self._in_doubt = list(begun.in_doubt)
        if begun.duplicate:
            self.duplicate = True
            return
        assert begun.stored is not None
        self._conversation = self._flows.open(self._number, begun.stored, self._text, True)
        self._open = True
        self._holder = self._flows.hold(self._number)

    def _leaving(self) -> None:
        """The block's code has ended: calls it made for this user no longer wait for it."""
        if self._holder is not None:
            self._flows.let_go(self._holder)
            self._holder = None

    def _commit(self) -> Flow[Conversation]:
        self._open = False
        assert self._begun.stored is not None
        return self._flows.commit(
            self._number,
            self._holding(),
            self.message_id,
            self.conversation,
            self._begun.stored,
            self._token_change,
        )

    def _holding(self) -> Holder:
        return Holder(self._lease, self._begun.fence, self._epoch or self._begun.effects)

    def _started(self, record: EffectRecord) -> bool:
        """Whether ``run`` is to be called; the records it was started in are then the ones
        the commit names (an effect may have created them)."""
        if record.status is not EffectStatus.RUN:
            return False
        self._epoch = record.epoch or self._epoch
        return True

    def _effect(self, name: str, key: str | None) -> Effect:
        return Effect.of(name, self.message_id if key is None else key)

    def _effect_start(self, effect: Effect) -> Flow[EffectRecord]:
        if not self._open:
            raise InvalidInput("effects run inside the message's `with` block, not after it")
        return self._flows.effect_start(self._number, self._holding(), effect)

    def _ran(self, effect: Effect, result: object) -> Flow[EffectRecord]:
        """Record what ``run`` returned; a result that is not JSON leaves it in doubt."""
        return self._flows.effect_finish(self._number, effect, _json(effect, result))

    def _settle(self, effect: Effect, result: object) -> Flow[EffectRecord]:
        return self._flows.effect_finish(self._number, effect, _json(effect, result), True)

    def _doubted(self, effect: Effect) -> None:
        """``run`` raised, or its result could not be recorded: in doubt from now on."""
        self._in_doubt.append(InDoubt(effect.name, effect.key, self._flows.clock.now()))

    def _settled(self, effect: Effect, record: EffectRecord) -> Any:
        self._epoch = record.epoch or self._epoch  # a settle may have created the records
        self._in_doubt = [d for d in self._in_doubt if (d.name, d.key) != effect]
        return _recorded(record, effect)


def _json(effect: Effect, value: object) -> bytes:
    check_json(value, f"the result of effect {effect.name!r} (it ran: it stays in doubt)")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _recorded(record: EffectRecord, effect: Effect) -> Any:
    """The result recorded for the effect, or the error that says why there is none."""
    if record.status is EffectStatus.DONE:
        assert record.result is not None
        try:
            return json.loads(record.result)
        except ValueError:  # not what this library wrote: its outcome is unknown
            raise EffectInDoubt(effect.name, effect.key) from None
    if record.status is EffectStatus.IN_DOUBT:
        raise EffectInDoubt(effect.name, effect.key)
    if record.status is EffectStatus.RECORDS_LOST:
        raise LeaseLost(
            "the server evicted this user's effect records while the message ran: it did not "
            "run; nothing was stored, and the redelivery starts over"
        )
    raise LeaseLost("this message's lease lapsed before the effect started: it did not run")


class Message(_MessageState):
    """One WhatsApp message on a StateService; use it as a context manager."""

    def __init__(
        self, driver: Driver, flows: Flows, phone: str, message_id: str, text: str | None
    ) -> None:
        super().__init__(flows, phone, message_id, text)
        self._driver = driver

    def __enter__(self) -> Message:
        self._watch = watch = self._driver.telemetry.watch("message", self._number)
        try:
            self._opened(self._driver.drive(self._begin(), watch))
        except BaseException as error:
            watch.failed(error)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._leaving()
        watch = self._watch
        assert watch is not None
        if not self._open:
            watch.done()  # a duplicate: nothing to commit
            return
        if error is None:
            with watch:
                self._driver.drive(self._commit(), watch)
            return
        self._open = False
        try:
            self._driver.drive(self._flows.release(self._number, self._lease), watch)
        except StateError as failure:
            # The caller's own error matters more; the lease lapses on its own.
            log.warning("could not free the user after a failed message: %s", failure)
        finally:
            watch.rolled_back(error)

    def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T:
        """``run()`` at most once for the intent ``key`` (default: this message) and ``name``.
        Its result (JSON) is recorded: any later message of the user that reaches the same
        effect gets it back, and ``run`` is not called again. While an earlier attempt's
        outcome is unknown (it died, or ``run`` raised), EffectInDoubt, until ``settle``."""
        effect = self._effect(name, key)
        telemetry = self._driver.telemetry
        with telemetry.watch("effect", self._number, self._watch) as watch:
            record = self._driver.drive(self._effect_start(effect), watch)
            if not self._started(record):
                return _recorded(record, effect)  # type: ignore[no-any-return]
            try:
                with watch.entered():  # the bot's own spans (the Credex call) nest in it
                    result = run()
                self._driver.drive(self._ran(effect, result), watch)
            except BaseException:
                self._doubted(effect)
                raise
            return result

    def settle(self, name: str, result: object, *, key: str | None = None) -> Any:
        """Record what an effect in doubt turned out to be (after asking the other system), so
        that it is never run again; returns the result that stands (one recorded before, if
        the effect had completed after all, is kept)."""
        effect = self._effect(name, key)
        record = self._driver.run(self._settle(effect, result), "settle")
        return self._settled(effect, record)


class AsyncMessage(_MessageState):
    """One WhatsApp message on an AsyncStateService; use it with ``async with``."""

    def __init__(
        self, driver: AsyncDriver, flows: Flows, phone: str, message_id: str, text: str | None
    ) -> None:
        super().__init__(flows, phone, message_id, text)
        self._driver = driver

    async def __aenter__(self) -> AsyncMessage:
        self._watch = watch = self._driver.telemetry.watch("message", self._number)
        try:
            self._opened(await self._driver.drive(self._begin(), watch))
        except BaseException as error:
            watch.failed(error)
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._leaving()
        watch = self._watch
        assert watch is not None
        if not self._open:
            watch.done()  # a duplicate: nothing to commit
            return
        if error is None:
            with watch:
                await self._driver.drive(self._commit(), watch)
            return
        self._open = False
        try:
            await self._driver.drive(self._flows.release(self._number, self._lease), watch)
        except StateError as failure:
            log.warning("could not free the user after a failed message: %s", failure)
        finally:
            watch.rolled_back(error)

    # Two signatures, so that a type checker gives ``await msg.effect(name, coroutine_fn)``
    # the coroutine's result type (``Callable[[], T | Awaitable[T]]`` made it Never).
    @overload
    async def effect(
        self, name: str, run: Callable[[], Awaitable[T]], *, key: str | None = None
    ) -> T: ...

    @overload
    async def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T: ...

    async def effect(self, name: str, run: Callable[[], Any], *, key: str | None = None) -> Any:
        """See Message.effect; ``run`` may be a plain function or a coroutine function."""
        effect = self._effect(name, key)
        telemetry = self._driver.telemetry
        with telemetry.watch("effect", self._number, self._watch) as watch:
            record = await self._driver.drive(self._effect_start(effect), watch)
            if not self._started(record):
                return _recorded(record, effect)
            try:
                with watch.entered():
                    result = run()
                    if inspect.isawaitable(result):
                        result = await result
                await self._driver.drive(self._ran(effect, result), watch)
            except BaseException:
                self._doubted(effect)
                raise
            return result

    async def settle(self, name: str, result: object, *, key: str | None = None) -> Any:
        """See Message.settle."""
        effect = self._effect(name, key)
        record = await self._driver.run(self._settle(effect, result), "settle")
        return self._settled(effect, record)
