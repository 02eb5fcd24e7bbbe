"""AsyncStateService: the StateService contract as coroutines, for async bot backends."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from vimbiso_state.domain.clock import Clock, RefreshedClock
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.errors import ConfigurationError
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.health import StoreHealth
from vimbiso_state.domain.ports import (
    AsyncConversationRepository,
    AsyncExpiryRepository,
    AsyncHealthProbe,
    AsyncMessageRepository,
    AsyncTokenRepository,
    TokenCipher,
)
from vimbiso_state.domain.profile import AccountSelection
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services.drivers import AsyncDriver
from vimbiso_state.services.expirations import AsyncExpirations
from vimbiso_state.services.flows import Flow, Flows
from vimbiso_state.services.message import AsyncMessage
from vimbiso_state.services.telemetry import Telemetry

T = TypeVar("T")


class AsyncStateService:
    """Every StateService method as a coroutine with the same name, arguments and semantics.

    The rules are services.flows, shared with StateService; only the I/O is awaited here.
    """

    def __init__(
        self,
        conversations: AsyncConversationRepository,
        tokens: AsyncTokenRepository,
        clock: Clock,
        timeouts: Timeouts,
        cipher: TokenCipher | None,
        max_retries: int = 8,
        messages: AsyncMessageRepository | None = None,
        phone_region: str | None = None,
        account_selection: AccountSelection = AccountSelection.SINGLE,
        telemetry: Telemetry | None = None,
        health: AsyncHealthProbe | None = None,
        expiry: AsyncExpiryRepository | None = None,
    ) -> None:
        self._conversations = conversations
        self._health = health
        # The backends implement both ports on one object; a separate one may be given.
        messages = messages or cast(AsyncMessageRepository, conversations)
        # The server's clock is read here, awaited, not inside now() on the event loop.
        refresh = clock.refresh if isinstance(clock, RefreshedClock) else None
        repositories = {
            "conversations": conversations,
            "messages": messages,
            "tokens": tokens,
            "expiry": expiry or cast(AsyncExpiryRepository, conversations),
        }
        self._driver = AsyncDriver(repositories, telemetry or Telemetry(), refresh)
        self._flows = Flows(
            clock, timeouts, cipher, phone_region, AccountSelection(account_selection)
        )

    def __repr__(self) -> str:
        return f"AsyncStateService({type(self._conversations).__name__})"

    async def health(self) -> StoreHealth:
        """See StateService.health: facts, or StateUnavailable within 2 s."""
        if self._health is None:
            raise ConfigurationError(
                "this service was built without a health probe: build it with Container"
            )
        return await self._health.health()

    def expirations(self, limit: int = 100, lease: float = 60.0) -> AsyncExpirations:
        """See StateService.expirations: ``async with state.expirations() as batch``."""
        flow = self._flows.expirations(limit, lease)
        return AsyncExpirations(self._driver, flow, self._flows)

    def message(self, phone: str, message_id: str, text: str | None = None) -> AsyncMessage:
        """See StateService.message: ``async with state.message(...) as msg``, and
        ``await msg.effect(...)``."""
        return AsyncMessage(self._driver, self._flows, phone, message_id, text)

    async def start(self, phone: str, message: str | None = None) -> Conversation:
        """See StateService.start."""
        return await self._run(self._flows.start(phone, message), "start")

    async def restart(self, phone: str) -> Conversation:
        return await self._run(self._flows.restart(phone), "restart")

    async def navigate(self, phone: str, option: str) -> Conversation:
        return await self._run(self._flows.navigate(phone, option), "navigate")

    async def back(self, phone: str) -> Conversation:
        return await self._run(self._flows.back(phone), "back")

    async def update(self, phone: str, change: Callable[[Conversation], object]) -> Conversation:
        """See StateService.update: ``change`` is a plain function, run once."""
        return await self._run(self._flows.update(phone, change), "update")

    async def handle_once(
        self, phone: str, message_id: str, change: Callable[[Conversation], object]
    ) -> Conversation | None:
        return await self._run(self._flows.handle_once(phone, message_id, change), "handle_once")

    async def set_profile(
        self,
        phone: str,
        member: Mapping[str, Any],
        accounts: Sequence[Mapping[str, Any]],
        *,
        selection: AccountSelection | str | None = None,
    ) -> Conversation:
        return await self._run(
            self._flows.set_profile(phone, member, accounts, selection), "set_profile"
        )

    async def reset(self, phone: str, *, keep_context: Sequence[str] = ()) -> None:
        """See StateService.reset."""
        await self._run(self._flows.reset(phone, keep_context), "reset")

    async def form_start(self, phone: str, name: str, required: Sequence[str]) -> Form:
        return await self._run(self._flows.form_start(phone, name, required), "form_start")

    async def form_fill(self, phone: str, /, **values: object) -> Form:
        return await self._run(self._flows.form_fill(phone, values), "form_fill")

    async def form_complete(self, phone: str) -> dict[str, str]:
        return await self._run(self._flows.form_complete(phone), "form_complete")

    async def save_token(self, phone: str, value: str) -> None:
        await self._run(self._flows.save_token(phone, value), "save_token")

    async def token(self, phone: str) -> str | None:
        return await self._run(self._flows.token(phone), "token")

    async def revoke_token(self, phone: str) -> bool:
        return await self._run(self._flows.revoke_token(phone), "revoke_token")

    async def _run(self, flow: Flow[T], operation: str) -> T:
        return await self._driver.run(flow, operation)
