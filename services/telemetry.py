"""What the services record about each operation: metrics, a span, and log lines.

The drivers hand the requests a flow yields that say something (WATCHED: a pause after a
conflict or while the user is busy, a Noticed event, a message's begin, an effect), with
their answers, to a Watch (``saw``), and tell it how the operation ended (``done`` or
``failed``); the message classes do the same for a message and its effects. The rules in
services.flows stay free of I/O: what only they know (an expiry, lost state, a duplicate,
why they pause) they yield. Attribute sets are made once per kind of operation, never per
call, and without a tracer provider no span is started: a plain load or save costs the
watch nothing.

Logs go to per-module loggers below ``vimbiso_state``; the library installs no handler. A
phone number is masked (``+26377*****67``), a token never appears, and a span carries a
keyed hash of the number (``enduser.pseudo.id``), never the number itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from types import TracebackType

from vimbiso_state.adapters.otel import (
    DUPLICATE,
    DUPLICATES,
    EFFECT_NAME,
    EFFECT_OUTCOME,
    EFFECTS,
    ERROR_TYPE,
    EXPIRATION_DELAY,
    EXPIRATIONS,
    EXPIRIES,
    EXPIRY_DELIVERY,
    EXPIRY_KIND,
    LEASE_WAIT,
    LEASE_WAITED,
    MESSAGE_OUTCOME,
    MESSAGES,
    NO_SPAN,
    NOTICES,
    OPERATION,
    OPERATION_DURATION,
    PROVIDERS,
    PSEUDO_ID,
    STATE_LOST,
    UNAVAILABLE,
    USER_BUSY,
    WRITES_LOST,
    Attributes,
    Span,
    attach,
    context_of,
    detach,
    look,
    set_error,
    start_span,
)
from vimbiso_state.domain.conversation import Notice
from vimbiso_state.domain.errors import (
    ConcurrencyConflict,
    LeaseLost,
    StateUnavailable,
    UserBusy,
)
from vimbiso_state.domain.expirations import Expiration, ExpiryKind
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    EffectRecord,
    EffectStatus,
)
from vimbiso_state.services.flows import (
    Begin,
    EffectFinish,
    EffectStart,
    Noticed,
    Request,
)

log = logging.getLogger(__name__)

# A wait for the user's previous message this long (seconds) is worth an INFO line.
SLOW_WAIT = 1.0
# The requests whose answers say something the flows' results do not: the drivers hand
# only these (and the Noticed events) to Watch.saw; the common commit pays nothing for it.
WATCHED = frozenset({Begin, EffectStart, EffectFinish})


def masked(digits: str) -> str:
    """A phone number fit for a log line: ``+26377*****67`` (at least four digits hidden)."""
    shown = max(1, min(5, len(digits) - 6))
    return f"+{digits[:shown]}{'*' * (len(digits) - shown - 2)}{digits[-2:]}"


class Operation:
    """One kind of operation (``update``, ``message``...) and its attribute sets, made once."""

    __slots__ = ("_failures", "attributes", "name", "span_name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.span_name = f"vimbiso_state.{name}"
        self.attributes: Attributes = {OPERATION: name}
        self._failures: dict[str, Attributes] = {}

    def failure(self, error_type: str) -> Attributes:
        """The attributes of this operation failing with ``error_type`` (a class name)."""
        attributes = self._failures.get(error_type)
        if attributes is None:
            attributes = {OPERATION: self.name, ERROR_TYPE: error_type}
            self._failures[error_type] = attributes
        return attributes


OPERATIONS = {
    name: Operation(name)
    for name in (
        "start",
        "restart",
        "navigate",
        "back",
        "update",
        "handle_once",
        "set_profile",
        "reset",
        "form_start",
        "form_fill",
        "form_complete",
        "save_token",
        "token",
        "revoke_token",
        "message",
        "effect",
        "settle",
        "expirations",
    )
}
_MESSAGE = OPERATIONS["message"]
_SETTLE = OPERATIONS["settle"]

_COMMITTED: Attributes = {MESSAGE_OUTCOME: "committed"}
_DUPLICATE: Attributes = {MESSAGE_OUTCOME: "duplicate"}
_EXPIRED: dict[Notice | str, Attributes] = {
    Notice.SESSION_EXPIRED: {EXPIRY_KIND: "session"},
    Notice.FORM_EXPIRED: {EXPIRY_KIND: "form"},
    "token": {EXPIRY_KIND: "token"},
}
_EFFECT_OUTCOMES = {
    EffectStatus.RUN: "run",
    EffectStatus.DONE: "replayed",
    EffectStatus.IN_DOUBT: "in_doubt",
    EffectStatus.LEASE_LOST: "lease_lost",
    EffectStatus.RECORDS_LOST: "records_lost",
}


# An expiry event handed out this long after its deadline counts as late.
LATE = 60.0
_EXPIRED_KIND: dict[ExpiryKind, Attributes] = {
    kind: {EXPIRY_KIND: kind.value} for kind in ExpiryKind
}


def _delivery_of(event: Expiration, delay: float) -> str:
    if event.redelivered:
        return "redelivered"
    return "late" if delay > LATE else "on_time"


@lru_cache(maxsize=16)
def _delivery(kind: ExpiryKind, delivery: str) -> Attributes:
    return {EXPIRY_KIND: kind.value, EXPIRY_DELIVERY: delivery}


@lru_cache(maxsize=512)
def _message_ending(outcome: str, error_type: str) -> Attributes:
    return {MESSAGE_OUTCOME: outcome, ERROR_TYPE: error_type}


@lru_cache(maxsize=512)
def _effect(name: str, outcome: str) -> Attributes:
    # Effect names are identifiers the bot's code chooses (create_credex): few of them.
    return {EFFECT_NAME: name, EFFECT_OUTCOME: outcome}


class Telemetry:
    """Watches the services' operations. ``salt`` keys the phone pseudonym that spans carry
    (set it per deployment, and keep it secret, so that nobody can hash every number to find
    a user); ``slow_wait`` is the wait for a user's previous message that is logged at INFO."""

    def __init__(self, salt: str = "", slow_wait: float = SLOW_WAIT) -> None:
        # Without a salt, a fixed prefix: still no number in the traces, but a guessable one.
        self._key = b"vimbiso_state:" + salt.encode()
        self.slow_wait = slow_wait
        self.pseudonym = lru_cache(maxsize=4096)(self._pseudonym)

    def __repr__(self) -> str:
        return "Telemetry()"  # never the salt

    def _pseudonym(self, digits: str) -> str:
        """A stable stand-in for the number: its keyed SHA-256, truncated to 16 hex digits."""
        return hmac.new(self._key, digits.encode(), hashlib.sha256).hexdigest()[:16]

    def delivered(self, events: Sequence[Expiration], now: datetime) -> None:
        """Expiry events handed to a consumer: counted by kind and delivery, their delay."""
        if not PROVIDERS.metering:
            return
        for event in events:
            delay = (now - event.expired_at).total_seconds()
            EXPIRATION_DELAY.record(delay, _EXPIRED_KIND[event.kind])
            EXPIRATIONS.add(1, _delivery(event.kind, _delivery_of(event, delay)))

    def watch(
        self, operation: str, number: PhoneNumber | None = None, parent: Watch | None = None
    ) -> Watch:
        """Start watching one operation (a span begins, a timer starts)."""
        return Watch(self, OPERATIONS[operation], number, parent)


class Watch:
    """One operation as it happens: its span, its timer, and what its answers showed."""

    __slots__ = (
        "_ended",
        "_operation",
        "_started",
        "_telemetry",
        "_token_expired",
        "_waiting_since",
        "context",
        "duplicate",
        "number",
        "span",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        operation: Operation,
        number: PhoneNumber | None,
        parent: Watch | None,
    ) -> None:
        self._telemetry = telemetry
        self._operation = operation
        self.number = number
        self._started = started = time.monotonic()
        if started >= PROVIDERS.next_look:
            look(started)
        # Without a tracer provider (the common case of a bot without an SDK) no span at all.
        if PROVIDERS.tracing:
            self.span: Span = start_span(
                operation.span_name,
                operation.attributes,
                None if parent is None else parent.span,
            )
            self.context = context_of(self.span)
        else:
            self.span = NO_SPAN
            self.context = None
        self._waiting_since = 0.0
        self._token_expired = False
        self._ended = False
        self.duplicate = False

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """The operation ends: ``done``, or ``failed`` with the error that ended it."""
        if error is None:
            self.done()
        else:
            self.failed(error)

    @contextmanager
    def entered(self) -> Iterator[None]:
        """This operation's span is current within (the backend's own spans nest in it)."""
        token = self.enter()
        try:
            yield
        finally:
            self.leave(token)

    def enter(self) -> object | None:
        """Make this operation's span current while its I/O runs; a token for ``leave``."""
        return None if self.context is None else attach(self.context)

    def leave(self, token: object | None) -> None:
        if token is not None:
            detach(token)

    # What the flows show
    def saw(self, request: Request, answer: object) -> None:
        """A request of a kind in WATCHED and the backend's answer to it, or a Noticed event
        (the drivers hand over only those)."""
        if isinstance(request, Noticed):
            self._noticed(request)
        elif isinstance(request, Begin):
            assert isinstance(answer, Begun)
            if answer.duplicate:
                self._duplicated()
            elif answer.stored is None:  # the user is held by their previous message
                self._busy()
                return
            if self._waiting_since:
                self._waited()
        elif isinstance(request, EffectStart):
            assert isinstance(answer, EffectRecord)
            self._effect(request.effect.name, _EFFECT_OUTCOMES[answer.status])
        elif isinstance(request, EffectFinish) and request.settle:
            self._effect(request.effect.name, "settled")

    def token_expired(self) -> None:
        """A message read its member's token past the token's deadline (counted once)."""
        if not self._token_expired:
            self._token_expired = True
            EXPIRIES.add(1, _EXPIRED["token"])

    def _duplicated(self) -> None:
        if not self.duplicate:
            self.duplicate = True
            DUPLICATES.add(1, self._operation.attributes)

    def _busy(self) -> None:
        if not self._waiting_since:
            self._waiting_since = time.monotonic()

    def _waited(self) -> None:
        waited = time.monotonic() - self._waiting_since
        self._waiting_since = 0.0
        LEASE_WAIT.record(waited, self._operation.attributes)
        if self.span.is_recording():
            self.span.set_attribute(LEASE_WAITED, waited)
        if waited >= self._telemetry.slow_wait:
            log.info(
                "%s for %s waited %.1f s for the user's previous message",
                self._operation.name,
                self._shown(),
                waited,
            )

    def _effect(self, name: str, outcome: str) -> None:
        EFFECTS.add(1, _effect(name, outcome))
        if self.span.is_recording():
            self.span.set_attribute(EFFECT_NAME, name)
            self.span.set_attribute(EFFECT_OUTCOME, outcome)
        if outcome == "in_doubt":
            log.warning(
                "effect %s of a message for %s is in doubt: an earlier delivery started it and "
                "its outcome is unknown (EffectInDoubt)",
                name,
                self._shown(),
            )

    def _noticed(self, event: Noticed) -> None:
        if event.duplicate:
            self._duplicated()
        for notice in event.notices:
            if notice is Notice.STATE_LOST:
                STATE_LOST.add(1)
                log.warning(
                    "state of %s was lost before its deadline (evicted by the server's "
                    "maxmemory-policy, or damaged): the user starts over and is told",
                    self._shown(),
                )
            else:
                EXPIRIES.add(1, _EXPIRED[notice])
        if event.token_expired:
            EXPIRIES.add(1, _EXPIRED["token"])
        if (event.notices or event.token_expired) and self.span.is_recording():
            shown = [str(notice) for notice in event.notices]
            self.span.set_attribute(
                NOTICES, [*shown, "token_expired"] if event.token_expired else shown
            )

    # How it ended
    def done(self) -> None:
        """The operation succeeded (a duplicate delivery included)."""
        if self._ended:
            return
        if self._waiting_since:  # a one-call write that waited, then applied
            self._waited()
        self._ended = True
        elapsed = time.monotonic() - self._started
        if PROVIDERS.metering:
            OPERATION_DURATION.record(elapsed, self._operation.attributes)
            if self._operation is _MESSAGE:
                MESSAGES.add(1, _DUPLICATE if self.duplicate else _COMMITTED)
        if self._operation is _MESSAGE:
            outcome = "duplicate" if self.duplicate else "committed"
        else:
            outcome = "duplicate" if self.duplicate else "ok"
        self._finish(elapsed, outcome)

    def failed(self, error: BaseException) -> None:
        """The operation raised ``error`` (its own failure, not the caller's code)."""
        if self._ended:
            return
        if self._waiting_since:  # UserBusy after a wait: the wait counts too
            self._waited()
        self._ended = True
        elapsed = time.monotonic() - self._started
        kind = type(error).__name__
        operation = self._operation
        OPERATION_DURATION.record(elapsed, operation.failure(kind))
        if isinstance(error, UserBusy):
            USER_BUSY.add(1, operation.attributes)
        elif isinstance(error, StateUnavailable):
            UNAVAILABLE.add(1, operation.attributes)
            log.warning("%s for %s: Redis is unavailable: %s", operation.name, self._shown(), error)
        elif isinstance(error, ConcurrencyConflict):
            WRITES_LOST.add(1, operation.attributes)
            log.warning("%s for %s: %s", operation.name, self._shown(), error)
        elif isinstance(error, LeaseLost):
            log.warning("%s for %s: %s", operation.name, self._shown(), error)
        if operation is _MESSAGE:
            MESSAGES.add(1, _message_ending("failed", kind))
        set_error(self.span, kind)
        self._finish(elapsed, "failed", kind)

    def rolled_back(self, error: BaseException) -> None:
        """A message whose handler raised ``error``: nothing was stored."""
        if self._ended:
            return
        self._ended = True
        elapsed = time.monotonic() - self._started
        kind = type(error).__name__
        OPERATION_DURATION.record(elapsed, self._operation.failure(kind))
        MESSAGES.add(1, _message_ending("rolled_back", kind))
        set_error(self.span, kind)
        self._finish(elapsed, "rolled_back", kind)

    def _finish(self, elapsed: float, outcome: str, error_type: str = "") -> None:
        span = self.span
        if span is NO_SPAN:
            pass
        elif span.is_recording():
            if self.number is not None:
                span.set_attribute(PSEUDO_ID, self._telemetry.pseudonym(self.number.digits))
            if self.duplicate:
                span.set_attribute(DUPLICATE, True)
            if self._operation is _MESSAGE:
                span.set_attribute(MESSAGE_OUTCOME, outcome)
            span.end()
        else:
            span.end()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s for %s: %s%s in %.1f ms",
                self._operation.name,
                self._shown(),
                outcome,
                f" ({error_type})" if error_type else "",
                elapsed * 1000,
            )

    def _shown(self) -> str:
        return "an unknown user" if self.number is None else masked(self.number.digits)
