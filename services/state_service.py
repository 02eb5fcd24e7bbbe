"""StateService: what bot code calls once per inbound message."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from vimbiso_state.domain.clock import Clock
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.errors import ConfigurationError
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.health import StoreHealth
from vimbiso_state.domain.ports import (
    ConversationRepository,
    ExpiryRepository,
    HealthProbe,
    MessageRepository,
    TokenCipher,
    TokenRepository,
)
from vimbiso_state.domain.profile import AccountSelection
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services.drivers import Driver
from vimbiso_state.services.expirations import Expirations
from vimbiso_state.services.flows import Flow, Flows
from vimbiso_state.services.message import Message
from vimbiso_state.services.telemetry import Telemetry

T = TypeVar("T")


class StateService:
    """Loads, moves on and stores one user's conversation; every write is one unit of work
    on the user (held, changed once, committed all or nothing).

    The rules live in services.flows; this class carries out their I/O on blocking backends.
    """

    def __init__(
        self,
        conversations: ConversationRepository,
        tokens: TokenRepository,
        clock: Clock,
        timeouts: Timeouts,
        cipher: TokenCipher | None,
        max_retries: int = 8,
        messages: MessageRepository | None = None,
        phone_region: str | None = None,
        account_selection: AccountSelection = AccountSelection.SINGLE,
        telemetry: Telemetry | None = None,
        health: HealthProbe | None = None,
        expiry: ExpiryRepository | None = None,
    ) -> None:
        # ``max_retries`` is accepted for 0.2's callers: writes no longer retry (they wait
        # for the user's lease instead).
        self._conversations = conversations
        self._health = health
        # The backends implement both ports on one object; a separate one may be given.
        messages = messages or cast(MessageRepository, conversations)
        # Metrics, spans and logs of every operation (no-ops without OpenTelemetry's SDK).
        repositories = {
            "conversations": conversations,
            "messages": messages,
            "tokens": tokens,
            "expiry": expiry or cast(ExpiryRepository, conversations),
        }
        self._driver = Driver(repositories, telemetry or Telemetry())
        self._flows = Flows(
            clock, timeouts, cipher, phone_region, AccountSelection(account_selection)
        )

    def __repr__(self) -> str:
        return f"StateService({type(self._conversations).__name__})"

    def health(self) -> StoreHealth:
        """Facts about the store (backend; on Redis its version, memory policy and use,
        latency), or StateUnavailable within 2 s when it cannot serve."""
        if self._health is None:
            raise ConfigurationError(
                "this service was built without a health probe: build it with Container"
            )
        return self._health.health()

    def expirations(self, limit: int = 100, lease: float = 60.0) -> Expirations:
        """Forms and sessions whose deadline passed, each handed to one consumer at a time::

            with state.expirations(limit=100) as batch:
                for event in batch:     # phone, kind, name, answers, expired_at,
                    ...                 # window_closes_at: tell the member
                                        # leaving the block acknowledges every event

        After an exception (or a consumer that died) the batch's events come back once
        ``lease`` seconds have passed: at least once, never to two consumers at a time.
        """
        return Expirations(self._driver, self._flows.expirations(limit, lease), self._flows)

    def message(self, phone: str, message_id: str, text: str | None = None) -> Message:
        """One inbound WhatsApp message as a unit of work::

            with state.message(phone, message_id, text) as msg:
                if msg.duplicate:          # committed before: do nothing
                    return
                conv = msg.conversation    # resumed as start() does; change it freely
                offer = msg.effect("create_credex", lambda: credex.create(...))

        No other message of this user runs until the block ends (UserBusy after
        ``lease_wait``). Leaving the block commits every change, the message id and the token
        in one step; an exception stores nothing and frees the user. Effects run at most once
        per intent (``key=``, default the message id): EffectInDoubt, for every later message,
        while an earlier attempt's outcome is unknown; ``msg.in_doubt`` lists them.
        """
        return Message(self._driver, self._flows, phone, message_id, text)

    # Conversation
    def start(self, phone: str, message: str | None = None) -> Conversation:
        """Initial contact or resume, in one round trip when nothing has expired.

        After session expiry the user is back at the menu with critical data kept and
        ``conv.notices`` saying so. A greeting (hi, mhoro, salibonani...) restarts at the menu.
        """
        return self._run(self._flows.start(phone, message), "start")

    def restart(self, phone: str) -> Conversation:
        """Back to the menu with a fresh session, keeping critical data and a live form."""
        return self._run(self._flows.restart(phone), "restart")

    def navigate(self, phone: str, option: str) -> Conversation:
        """Enter a menu option; it is remembered so that ``back`` returns here."""
        return self._run(self._flows.navigate(phone, option), "navigate")

    def back(self, phone: str) -> Conversation:
        """Return to the previous menu choice (the menu itself at the top)."""
        return self._run(self._flows.back(phone), "back")

    def update(self, phone: str, change: Callable[[Conversation], object]) -> Conversation:
        """Apply ``change`` (which mutates the conversation) once, atomically.

        The user is held while ``change`` runs (a message of theirs waits, and this call
        waits for one in flight: UserBusy after ``lease_wait``). An exception in ``change``
        stores nothing and propagates. ConcurrencyConflict: a reset took the user meanwhile.
        """
        return self._run(self._flows.update(phone, change), "update")

    def handle_once(
        self, phone: str, message_id: str, change: Callable[[Conversation], object]
    ) -> Conversation | None:
        """Like ``update``, once per WhatsApp message id; None for a duplicate delivery.

        The id is remembered (for ``dedupe_ttl``) in the same atomic step as the change, so a
        delivery that fails midway can be retried and a duplicate is never applied.
        """
        return self._run(self._flows.handle_once(phone, message_id, change), "handle_once")

    def set_profile(
        self,
        phone: str,
        member: Mapping[str, Any],
        accounts: Sequence[Mapping[str, Any]],
        *,
        selection: AccountSelection | str | None = None,
    ) -> Conversation:
        """Store the member and accounts (plain dicts from Credex) exactly, as critical data.

        The current account is kept while it is still listed; otherwise ``selection``
        (default: the ``default_account`` setting) decides which one, if any, is current.
        """
        return self._run(self._flows.set_profile(phone, member, accounts, selection), "set_profile")

    def reset(self, phone: str, *, keep_context: Sequence[str] = ()) -> None:
        """Forget this user: profile, conversation, form and token, in one step. Handled
        message ids and effect records stay, so a redelivered message is still a duplicate
        and an effect is still not run twice. A message in flight loses its lease (it
        stores nothing: LeaseLost).

        ``keep_context`` names keys of ``conv.context`` to carry over to the fresh
        conversation (the bot keeps ``mock_testing``): then the reset is one unit of work
        that waits for a message in flight instead, and stores the fresh conversation with
        the kept keys in the same step.
        """
        self._run(self._flows.reset(phone, keep_context), "reset")

    # Forms
    def form_start(self, phone: str, name: str, required: Sequence[str]) -> Form:
        """Begin (or replace) the user's form; it lives for ``form_ttl`` after its last answer."""
        return self._run(self._flows.form_start(phone, name, required), "form_start")

    def form_fill(self, phone: str, /, **values: object) -> Form:
        """Store some answers; a bad one raises FormValidationError and stores none of them."""
        return self._run(self._flows.form_fill(phone, values), "form_fill")

    def form_complete(self, phone: str) -> dict[str, str]:
        """Every value of the form, which is then closed; FormIncomplete names what is missing."""
        return self._run(self._flows.form_complete(phone), "form_complete")

    # Tokens
    def save_token(self, phone: str, value: str) -> None:
        """Store the member's auth token, encrypted and bound to this phone, for ``token_ttl``
        (a JWT: never past its ``exp``)."""
        self._run(self._flows.save_token(phone, value), "save_token")

    def token(self, phone: str) -> str | None:
        """The member's token, or None when there is none or it has expired."""
        return self._run(self._flows.token(phone), "token")

    def revoke_token(self, phone: str) -> bool:
        """Delete the token; True when there was one."""
        return self._run(self._flows.revoke_token(phone), "revoke_token")

    def _run(self, flow: Flow[T], operation: str) -> T:
        return self._driver.run(flow, operation)
