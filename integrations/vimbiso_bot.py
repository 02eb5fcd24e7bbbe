"""The VimbisoPay bot's StateManager interface, on top of one message's unit of work.

The bot (Great-Sun-Group/vimbiso-pay, vimbiso-chatserver) keeps one JSON document per user
under ``channel:{wa_id}`` and rewrites all of it on every ``update_state``: ``channel``,
``mock_testing``, ``auth`` (the Credex JWT), ``dashboard`` (the Credex member and accounts),
``active_account_id``, ``action`` (the last Credex answer) and ``component_data`` (the flow:
``path``, ``component``, ``component_result``, ``awaiting_input``, ``data`` and the
``incoming_message``). ``BotState`` answers the same calls from a ``state.message(...)``:

- ``dashboard`` is the profile (critical data, kept exactly as Credex gave it),
- ``active_account_id`` the current account,
- ``auth.token`` the encrypted token (``token()`` is None once the JWT's ``exp`` has passed),
- ``component_data`` the session's context, with ``path`` mirrored as the option and
  ``component`` as the stage (``vimbiso-state inspect`` shows where the user is),
- every other key the session's context (flow data: it expires with the session).

Nothing is written until the message's ``with`` block ends, and then all of it at once: the
bot's many ``update_state`` calls per message become one atomic commit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Conversation, check_step
from vimbiso_state.domain.errors import InvalidInput, InvalidPhoneNumber
from vimbiso_state.domain.json_values import check_json
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.profile import AccountSelection, Profile

T = TypeVar("T")

CHANNEL = "channel"
AUTH = "auth"
DASHBOARD = "dashboard"
ACTIVE_ACCOUNT = "active_account_id"
COMPONENT_DATA = "component_data"
MOCK_TESTING = "mock_testing"
# Keys with a home of their own; every other top-level key is kept in the context as is.
_PROFILE_KEYS = ("member", "accounts")


class BotMessage(Protocol):
    """What BotState needs from ``state.message(...)``: a Message (sync service)."""

    message_id: str

    @property
    def phone(self) -> str: ...

    @property
    def conversation(self) -> Conversation: ...

    def token(self) -> str | None: ...

    def save_token(self, value: str) -> None: ...

    def revoke_token(self) -> None: ...

    def effect(self, name: str, run: Callable[[], T]) -> T: ...

    def idempotency_key(self, name: str) -> str: ...


class BotState:
    """The bot's ``StateManager`` calls, answered from one message (see the module doc).

    Build one per message, inside ``with state.message(...) as msg`` and after checking
    ``msg.duplicate``; the bot's components use it as they used their StateManager.
    """

    def __init__(self, msg: BotMessage, messaging: Any = None) -> None:
        self._msg = msg
        self._channel_type = "whatsapp"
        # The bot's components send their replies through state_manager.messaging.
        self.messaging: Any = messaging

    @property
    def _conv(self) -> Conversation:
        return self._msg.conversation

    def __repr__(self) -> str:
        return f"BotState({self._msg.phone}, message {self._msg.message_id!r})"

    # Reading
    def get_state_value(self, key: str, default: Any = None) -> Any:
        """The value the bot's document would hold under ``key`` (a copy), or ``default``."""
        if not isinstance(key, str) or not key:
            raise InvalidInput("a state key is a non-empty string")
        value = self._read(key)
        return default if value is None else value

    def _read(self, key: str) -> Any:
        context = self._conv.context
        if key == CHANNEL:
            return {"type": self._channel_type, "identifier": self._msg.phone}
        if key == AUTH:
            auth = copy.deepcopy(context.get(AUTH)) or {}
            token = self._msg.token()
            if token is not None:
                auth["token"] = token
            return auth or None
        if key == DASHBOARD:
            dashboard = copy.deepcopy(context.get(DASHBOARD)) or {}
            profile = self._conv.profile
            if profile is not None:
                dashboard["member"] = copy.deepcopy(profile.member.data)
                dashboard["accounts"] = [copy.deepcopy(a.data) for a in profile.accounts]
            return dashboard or None
        if key == ACTIVE_ACCOUNT:
            return self._conv.critical.current_account_id
        return copy.deepcopy(context.get(key))

    # Writing
    def update_state(self, updates: Mapping[str, Any]) -> None:
        """Replace the given top-level keys, as the bot's update_state does (None deletes).

        Every value is checked before anything changes, so a refused update (InvalidInput)
        leaves this message's state as it was.
        """
        if not isinstance(updates, Mapping):
            raise InvalidInput("state updates are a dict of top-level keys")
        if CHANNEL in updates:
            raise InvalidInput("channel is set by initialize_channel, not update_state")
        for key in updates:
            if not isinstance(key, str) or not key:
                raise InvalidInput("a state key is a non-empty string")
        check_json(dict(updates), "state update")
        # The dashboard first: the bot may select an account of the profile it brings.
        ordered = sorted(updates.items(), key=lambda item: item[0] != DASHBOARD)
        profile = self._conv.profile
        changes: list[Callable[[], None]] = []
        for key, value in ordered:
            if key == DASHBOARD:
                profile, change = self._dashboard(value)
            elif key == ACTIVE_ACCOUNT:
                change = self._active_account(value, profile)
            elif key == AUTH:
                change = self._auth(value)
            elif key == COMPONENT_DATA:
                change = self._component_data(value)
            else:
                change = self._context(key, value)
            changes.append(change)
        for change in changes:
            change()

    def _dashboard(self, value: Any) -> tuple[Profile | None, Callable[[], None]]:
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInput("dashboard is a dict with the Credex member and accounts")
        dashboard = dict(value or {})
        member = dashboard.get("member")
        profile = (
            Profile.from_credex(member, dashboard.get("accounts") or [])
            if member is not None
            else None
        )
        rest = {k: v for k, v in dashboard.items() if k not in _PROFILE_KEYS}

        def change() -> None:
            conv = self._conv
            if profile is None:
                conv.critical.member, conv.critical.accounts = None, []
                conv.critical.current_account_id = None
            else:
                # The bot chooses the account itself (active_account_id): never implicitly.
                conv.use_profile(profile, selection=AccountSelection.NONE)
            self._set_context(DASHBOARD, rest or None)

        return profile, change

    def _active_account(self, value: Any, profile: Profile | None) -> Callable[[], None]:
        known = isinstance(value, str) and profile is not None and profile.account(value)
        if value is not None and not known:
            raise InvalidInput(f"active_account_id {value!r} is not an account of the member")

        def change() -> None:
            self._conv.critical.current_account_id = value

        return change

    def _auth(self, value: Any) -> Callable[[], None]:
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInput("auth is a dict with the member's token")
        auth = dict(value or {})
        token = auth.pop("token", None)
        if token is not None and (not isinstance(token, str) or not token):
            raise InvalidInput("auth.token is the member's JWT, as text")

        def change() -> None:
            # The bot replaces auth whole: an auth without a token logs the member out.
            if token is None:
                self._msg.revoke_token()
            else:
                self._msg.save_token(token)
            self._set_context(AUTH, auth or None)

        return change

    def _component_data(self, value: Any) -> Callable[[], None]:
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInput("component_data is a dict (path, component, data...)")
        data = copy.deepcopy(dict(value)) if value is not None else None
        path = data.get("path") if data else None
        component = data.get("component") if data else None
        # Flow steps are identifiers; an empty one means none (the bot writes "" at times).
        option = check_step("component_data.path", path) if path else None
        stage = check_step("component_data.component", component) if component else None

        def change() -> None:
            self._conv.option = option
            self._conv.stage = stage or DEFAULT_STAGE
            self._set_context(COMPONENT_DATA, data)

        return change

    def _context(self, key: str, value: Any) -> Callable[[], None]:
        copied = copy.deepcopy(value)
        return lambda: self._set_context(key, copied)

    def _set_context(self, key: str, value: Any) -> None:
        if value is None:
            self._conv.context.pop(key, None)
        else:
            self._conv.context[key] = value

    # The flow (component_data)
    def _component(self) -> dict[str, Any]:
        return dict(self.get_state_value(COMPONENT_DATA, {}))

    def get_path(self) -> str | None:
        return self._component().get("path")

    def get_component(self) -> str | None:
        return self._component().get("component")

    def get_component_result(self) -> str | None:
        return self._component().get("component_result")

    def is_awaiting_input(self) -> bool:
        return bool(self._component().get("awaiting_input", False))

    def update_flow_state(
        self,
        path: str,
        component: str,
        data: Mapping[str, Any] | None = None,
        component_result: str | None = None,
        awaiting_input: bool = False,
    ) -> None:
        """Set the whole flow state; the incoming message, if any, is kept."""
        flow: dict[str, Any] = {
            "path": path,
            "component": component,
            "data": dict(data) if data is not None else {},
            "component_result": component_result,
            "awaiting_input": awaiting_input,
        }
        incoming = self._component().get("incoming_message")
        if isinstance(incoming, dict) and "type" in incoming and "text" in incoming:
            flow["incoming_message"] = incoming
        self.update_state({COMPONENT_DATA: flow})

    def _update_flow(self, **changes: Any) -> None:
        current = self._component()
        fields = {
            "path": current.get("path", ""),
            "component": current.get("component", ""),
            "data": current.get("data", {}),
            "component_result": current.get("component_result"),
            "awaiting_input": current.get("awaiting_input", False),
        }
        fields.update(changes)
        self.update_flow_state(**fields)

    def transition_flow(self, path: str, component: str) -> None:
        """Move to another step: its data is kept, its result and input wait are not."""
        self._update_flow(
            path=path, component=component, component_result=None, awaiting_input=False
        )

    def set_component_result(self, result: str | None) -> None:
        self._update_flow(component_result=result)

    def set_component_awaiting(self, awaiting: bool) -> None:
        self._update_flow(awaiting_input=awaiting)

    def update_component_data(self, data: Mapping[str, Any]) -> None:
        """Merge ``data`` into the step's data."""
        merged = {**self._component().get("data", {}), **data}
        self._update_flow(data=merged)

    def clear_component_data(self) -> None:
        self.update_state({COMPONENT_DATA: None})

    def get_incoming_message(self) -> dict[str, Any] | None:
        message = self._component().get("incoming_message")
        return message if isinstance(message, dict) else None

    def set_incoming_message(self, message: Mapping[str, Any]) -> None:
        if not isinstance(message, Mapping):
            raise InvalidInput("the incoming message is a dict")
        self.update_state({COMPONENT_DATA: {**self._component(), "incoming_message": message}})

    def clear_all_state(self) -> None:
        """Forget the member, the token and the flow, keeping ``mock_testing``, as the bot's
        clear_all_state does, within this message: if its handler then fails, nothing of
        it is stored (the member stays logged in)."""
        mock = self._conv.context.get(MOCK_TESTING)
        self.update_state({DASHBOARD: None, AUTH: None, COMPONENT_DATA: None})
        conv = self._conv
        conv.form = None
        conv.session.menu.clear()
        conv.session.offer = None
        conv.session.context.clear()
        if mock:
            conv.session.context[MOCK_TESTING] = mock

    # The channel and the member
    def initialize_channel(
        self, channel_type: str, channel_id: str, mock_testing: bool = False
    ) -> None:
        """Check that the channel is this message's user and record mock_testing."""
        try:
            same = PhoneNumber.parse("+" + str(channel_id).lstrip("+")).digits == self._msg.phone
        except InvalidPhoneNumber:
            same = False
        if not same:
            raise InvalidInput("the channel identifier is not this message's phone number")
        if not isinstance(channel_type, str) or not channel_type:
            raise InvalidInput("the channel type is text, like 'whatsapp'")
        self._channel_type = channel_type
        self.update_state({MOCK_TESTING: bool(mock_testing)})

    def get_channel_id(self) -> str:
        """The wa_id: the user's number as E.164 digits."""
        return self._msg.phone

    def get_channel_type(self) -> str:
        return self._channel_type

    def is_mock_testing(self) -> bool:
        return bool(self._conv.context.get(MOCK_TESTING))

    def is_authenticated(self) -> bool:
        """A member is known and their token has not expired (its JWT ``exp`` included).

        The signature is not checked here: the bot verifies it where it holds the secret.
        """
        return self._conv.profile is not None and self._msg.token() is not None

    def get_member_id(self) -> str | None:
        profile = self._conv.profile
        return profile.member.member_id if profile and self.is_authenticated() else None

    # What the bot's transaction tracking was for
    def effect(self, name: str, run: Callable[[], T]) -> T:
        """``run()`` at most once for this message (a Credex call): see Message.effect."""
        return self._msg.effect(name, run)

    def idempotency_key(self, name: str) -> str:
        """The same key on every delivery of this message: Credex's X-Idempotency-Key."""
        return self._msg.idempotency_key(name)
