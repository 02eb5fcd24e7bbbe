"""One inbound WhatsApp message as a unit of work: ``with state.message(...) as msg``.

Entering holds the user (no other message of theirs runs until the block ends, in any
process or host) and loads the conversation; leaving commits every change, the message id and
the token in one atomic step, or, after an exception, stores nothing and frees the user.
Effects (calls to Credex) run at most once per message id. The rules are in services.flows;
``Message`` carries them out on a blocking service and ``AsyncMessage`` on an asyncio one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.errors import EffectInDoubt, InvalidInput, LeaseLost, StateError
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.json_values import check_json
from vimbiso_state.domain.ports import (
    Begun,
    EffectRecord,
    EffectStatus,
    StoredConversation,
    TokenChange,
)
from vimbiso_state.services.flows import Flow, Flows, check_message_id, complete_form, new_id
from vimbiso_state.services.telemetry import Telemetry, Watch

if TYPE_CHECKING:
    from vimbiso_state.services.async_state_service import AsyncStateService
    from vimbiso_state.services.state_service import StateService

T = TypeVar("T")
log = logging.getLogger(__name__)


class _MessageState:
    """What a message holds between entering and leaving; no I/O."""

    def __init__(
        self, flows: Flows, telemetry: Telemetry, phone: str, message_id: str, text: str | None
    ) -> None:
        self._flows = flows
        self._telemetry = telemetry
        self._number = flows.phone(phone)
        self.message_id = check_message_id(message_id)
        if text is not None and not isinstance(text, str):
            raise InvalidInput("the message text must be text (or None)")
        self._text = text
        self._lease = new_id()
        self._conversation: Conversation | None = None
        self._stored: StoredConversation | None = None
        self._sealed: bytes | None = None
        self._token_change: TokenChange | None = None
        self._open = False
        self.duplicate = False
        self._watch: Watch | None = None  # from entering to leaving
        self._holder: tuple[str, object] | None = None  # while the block runs

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

    def idempotency_key(self, name: str) -> str:
        """A key that is the same for every delivery of this message, for APIs that accept
        one (an idempotency key on a Credex call)."""
        text = f"{self._number.digits}\0{self.message_id}\0{name}"
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def token(self) -> str | None:
        """The member's auth token as this message sees it (read with the conversation)."""
        if self._token_change is not None:
            return self._flows.unseal(self._number, self._token_change.sealed)
        value, expired = self._flows.read_token(self._number, self._sealed)
        if expired and self._watch is not None:
            self._watch.token_expired()
        return value

    def save_token(self, value: str) -> None:
        """Store the member's token with this message's commit."""
        self._token_change = self._flows.seal(self._number, value)

    def revoke_token(self) -> None:
        """Delete the member's token with this message's commit."""
        self._token_change = TokenChange(None, self._flows.timeouts.token)

    # Forms, by the rules of the one-call form_start/form_fill/form_complete; what they
    # change is stored with this message's commit, like any change to the conversation.
    def form_start(self, name: str, required: Sequence[str]) -> Form:
        """Begin (or replace) the user's form; it lives for ``form_ttl`` after its last answer."""
        return self._flows.start_form(self.conversation, name, required, self._flows.clock.now())

    def form_fill(self, /, **values: object) -> Form:
        """Add answers to the form; a bad one raises FormValidationError and adds none of them
        (NoActiveForm when there is no form)."""
        return self._flows.fill_form(self.conversation, values, self._flows.clock.now())

    def form_complete(self) -> dict[str, str]:
        """Every value of the form, which is then closed; FormIncomplete names what is missing."""
        return complete_form(self.conversation)

    def _watching(self) -> Watch:
        self._watch = self._telemetry.watch("message", self._number)
        return self._watch

    def _watching_effect(self) -> Watch:
        return self._telemetry.watch("effect", self._number, self._watch)

    def _opened(self, begun: Begun) -> None:
        if begun.duplicate:
            self.duplicate = True
            return
        assert begun.stored is not None
        self._stored = begun.stored
        self._conversation = self._flows.message_open(self._number, begun.stored, self._text)
        self._sealed = begun.token
        self._open = True
        self._holder = self._flows.hold(self._number)

    def _leaving(self) -> None:
        """The block's code has ended: calls it made for this user no longer wait for it."""
        if self._holder is not None:
            self._flows.let_go(self._holder)
            self._holder = None

    def _commit(self) -> Flow[Conversation]:
        self._open = False
        assert self._stored is not None
        return self._flows.message_commit(
            self._number,
            self._lease,
            self.message_id,
            self.conversation,
            self._stored,
            self._token_change,
        )

    def _effect_start(self, name: str) -> Flow[EffectRecord]:
        if not self._open:
            raise InvalidInput("effects run inside the message's `with` block, not after it")
        return self._flows.effect_start(self._number, self._lease, self.message_id, name)

    def _effect_finish(self, name: str, result: object) -> Flow[None]:
        return self._flows.effect_finish(self._number, self.message_id, name, _json(result, name))


def _json(value: object, name: str) -> bytes:
    check_json(value, f"the result of effect {name!r}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _recorded(record: EffectRecord, name: str) -> Any:
    """The result an earlier delivery recorded, or the error that says why there is none."""
    if record.status is EffectStatus.DONE:
        assert record.result is not None
        return json.loads(record.result)
    if record.status is EffectStatus.IN_DOUBT:
        raise EffectInDoubt(name)
    raise LeaseLost("this message's lease lapsed before the effect started: it did not run")


class Message(_MessageState):
    """One WhatsApp message on a StateService; use it as a context manager."""

    def __init__(
        self, service: StateService, flows: Flows, phone: str, message_id: str, text: str | None
    ) -> None:
        super().__init__(flows, service._telemetry, phone, message_id, text)
        self._service = service

    def __enter__(self) -> Message:
        watch = self._watching()
        try:
            begin = self._flows.message_begin(self._number, self.message_id, self._lease)
            self._opened(self._service._drive(begin, watch))
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
            try:
                self._service._drive(self._commit(), watch)
            except BaseException as failure:
                watch.failed(failure)
                raise
            watch.done()
            return
        self._open = False
        try:
            self._service._drive(self._flows.message_release(self._number, self._lease), watch)
        except StateError as failure:
            # The caller's own error matters more; the lease lapses on its own.
            log.warning("could not free the user after a failed message: %s", failure)
        finally:
            watch.rolled_back(error)

    def effect(self, name: str, run: Callable[[], T]) -> T:
        """``run()`` at most once for this message id and ``name``; its result (JSON) is
        recorded, and a redelivery gets it back without calling ``run`` again. If an earlier
        delivery started it and its outcome is unknown, EffectInDoubt."""
        watch = self._watching_effect()
        try:
            record = self._service._drive(self._effect_start(name), watch)
            if record.status is not EffectStatus.RUN:
                result: T = _recorded(record, name)
            else:
                token = watch.enter()  # the bot's own spans (the Credex call) nest in it
                try:
                    result = run()  # an exception leaves the effect in doubt
                finally:
                    watch.leave(token)
                self._service._drive(self._effect_finish(name, result), watch)
        except BaseException as error:
            watch.failed(error)
            raise
        watch.done()
        return result

    def settle(self, name: str, result: object) -> None:
        """Record what an effect in doubt turned out to be (after checking with Credex), so
        that it is not run again."""
        self._service._run(self._effect_finish(name, result), "settle")


class AsyncMessage(_MessageState):
    """One WhatsApp message on an AsyncStateService; use it with ``async with``."""

    def __init__(
        self,
        service: AsyncStateService,
        flows: Flows,
        phone: str,
        message_id: str,
        text: str | None,
    ) -> None:
        super().__init__(flows, service._telemetry, phone, message_id, text)
        self._service = service

    async def __aenter__(self) -> AsyncMessage:
        watch = self._watching()
        try:
            begin = self._flows.message_begin(self._number, self.message_id, self._lease)
            self._opened(await self._service._drive(begin, watch))
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
            try:
                await self._service._drive(self._commit(), watch)
            except BaseException as failure:
                watch.failed(failure)
                raise
            watch.done()
            return
        self._open = False
        try:
            release = self._flows.message_release(self._number, self._lease)
            await self._service._drive(release, watch)
        except StateError as failure:
            log.warning("could not free the user after a failed message: %s", failure)
        finally:
            watch.rolled_back(error)

    # Two signatures, so that a type checker gives ``await msg.effect(name, coroutine_fn)``
    # the coroutine's result type (``Callable[[], T | Awaitable[T]]`` made it Never).
    @overload
    async def effect(self, name: str, run: Callable[[], Awaitable[T]]) -> T: ...

    @overload
    async def effect(self, name: str, run: Callable[[], T]) -> T: ...

    async def effect(self, name: str, run: Callable[[], Any]) -> Any:
        """See Message.effect; ``run`` may be a plain function or a coroutine function."""
        watch = self._watching_effect()
        try:
            record = await self._service._drive(self._effect_start(name), watch)
            if record.status is not EffectStatus.RUN:
                result = _recorded(record, name)
            else:
                token = watch.enter()
                try:
                    result = run()
                    if inspect.isawaitable(result):
                        result = await result
                finally:
                    watch.leave(token)
                await self._service._drive(self._effect_finish(name, result), watch)
        except BaseException as error:
            watch.failed(error)
            raise
        watch.done()
        return result

    async def settle(self, name: str, result: object) -> None:
        """See Message.settle."""
        await self._service._run(self._effect_finish(name, result), "settle")
