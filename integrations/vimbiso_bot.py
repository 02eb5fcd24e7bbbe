"""The VimbisoPay bot's StateManager interface, on top of one message's unit of work.

The bot (Great-Sun-Group/vimbiso-pay, vimbiso-chatserver) keeps one JSON document per user
under ``channel:{wa_id}`` and rewrites all of it on every ``update_state``: ``channel``,
``mock_testing``, ``auth`` (the Credex JWT), ``dashboard`` (the Credex member and accounts),
``active_account_id``, ``action`` (the last Credex answer) and ``component_data`` (the flow:
``path``, ``component``, ``component_result``, ``awaiting_input``, ``data`` and the
``incoming_message``). ``BotState`` answers the same calls from a ``state.message(...)``:

- ``dashboard`` is the profile (critical data, kept exactly as Credex gave it),
- ``active_account_id`` the current account,
- ``auth.token`` the sealed token (``token()`` is None once the JWT's ``exp`` has passed); the
  same JWT anywhere else in an update (the login answer's ``action.details.token``) is kept
  out of the stored conversation and put back when the bot reads it,
- ``component_data`` the session's context, with ``path`` mirrored as the option and
  ``component`` as the stage (``vimbiso-state inspect`` shows where the user is),
- every other key the session's context (flow data: it expires with the session).

Nothing is written until the message's ``with`` block ends, and then all of it at once: the
bot's many ``update_state`` calls per message become one atomic commit.
"""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

import msgspec

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Conversation, check_step
from vimbiso_state.domain.effects import InDoubt
from vimbiso_state.domain.errors import InvalidInput, InvalidPhoneNumber
from vimbiso_state.domain.json_values import check_json
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.profile import AccountSelection, Profile
from vimbiso_state.domain.token import JWT_SHAPED

T = TypeVar("T")

CHANNEL = "channel"
AUTH = "auth"
DASHBOARD = "dashboard"
ACTIVE_ACCOUNT = "active_account_id"
COMPONENT_DATA = "component_data"
MOCK_TESTING = "mock_testing"
# Keys with a home of their own; every other top-level key is kept in the context as is.
_PROFILE_KEYS = ("member", "accounts")
# BotState's own bookkeeping in the context (the flow's intent, where the token was): a name
# the bot's state schema does not allow, so it can never be one of the bot's keys.
RESERVED = "_vimbiso_state"
_JWT_BYTES = re.compile(JWT_SHAPED.pattern.encode())

Step = str | int
TokenPaths = list[list[Step]]


class BotMessage(Protocol):
    """What BotState needs from ``state.message(...)``: a Message (sync service)."""

    message_id: str

    @property
    def phone(self) -> str: ...

    @property
    def conversation(self) -> Conversation: ...

    @property
    def in_doubt(self) -> tuple[InDoubt, ...]: ...

    def token(self) -> str | None: ...

    def save_token(self, value: str) -> None: ...

    def revoke_token(self) -> None: ...

    def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T: ...

    def settle(self, name: str, result: object, *, key: str | None = None) -> Any: ...

    def idempotency_key(self, name: str, key: str | None = None) -> str: ...


_SUBCLASSES: dict[type, type[BotState]] = {}


class BotState:
    """The bot's ``StateManager`` calls, answered from one message (see the module doc).

    Build one per message, inside ``with state.message(...) as msg`` and after checking
    ``msg.duplicate``; the bot's components use it as they used their StateManager.
    """

    def __init__(self, msg: BotMessage, messaging: Any = None) -> None:
        self._msg = msg
        self._channel_type = "whatsapp"
        self._messaging: Any = messaging
        self._intents = 0  # intents begun by this message: each gets an id of its own

    @classmethod
    def as_subclass_of(cls, base: type) -> type[BotState]:
        """A BotState class that is also a subclass of ``base`` (the bot's own StateManager),
        for code that checks ``isinstance``; BotState answers every call, ``base``'s
        ``__init__`` never runs (it would connect to the bot's Redis)."""
        if base not in _SUBCLASSES:
            missing = sorted(name for name in _public_calls(base) if not hasattr(cls, name))
            if missing:
                raise InvalidInput(
                    f"{base.__name__} has calls that BotState does not answer: {', '.join(missing)}"
                )
            made = types.new_class(f"{base.__name__}OnBotState", (cls, base))
            _SUBCLASSES[base] = cast(type[BotState], made)
        return _SUBCLASSES[base]

    @staticmethod
    def behind(state_manager: object) -> BotState:
        """The BotState that ``state_manager`` is or wraps: the bot's WhatsApp wrapper keeps
        the core manager it was given as ``_core``."""
        seen = state_manager
        for _ in range(4):
            if isinstance(seen, BotState):
                return seen
            seen = getattr(seen, "_core", None)
        raise InvalidInput("not a BotState, nor the bot's state wrapper around one")

    @property
    def messaging(self) -> Any:
        """The bot's messaging service, set after construction (its MessagingService does)."""
        return self._messaging

    @messaging.setter
    def messaging(self, service: Any) -> None:
        self._messaging = service

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
        if key == RESERVED:
            return None
        if key == AUTH:
            auth = self._unsealed(AUTH) or {}
            token = self._msg.token()
            if token is not None:
                auth["token"] = token
            return auth or None
        if key == DASHBOARD:
            dashboard = _copied(context.get(DASHBOARD)) or {}
            profile = self._conv.profile
            if profile is not None:
                dashboard["member"] = _copied(profile.member.data)
                dashboard["accounts"] = [_copied(a.data) for a in profile.accounts]
            return dashboard or None
        if key == ACTIVE_ACCOUNT:
            return self._conv.critical.current_account_id
        return self._unsealed(key)

    def _unsealed(self, key: str) -> Any:
        """A context value as the bot wrote it: the member's token back where it was."""
        value = _copied(self._conv.context.get(key))
        paths = self._own().get("sealed", {}).get(key)
        if value is None or not paths:
            return value
        return _put_token(value, paths, self._msg.token())

    def _own(self) -> dict[str, Any]:
        own = self._conv.context.get(RESERVED)
        return own if isinstance(own, dict) else {}

    # Writing
    def update_state(self, updates: Mapping[str, Any]) -> None:
        """Replace the given top-level keys, as the bot's update_state does (None deletes).

        Every value is checked before anything changes, so a refused update (InvalidInput)
        leaves this message's state as it was. A JWT-shaped value is refused unless it is the
        member's token (kept sealed, never in the conversation).
        """
        if not isinstance(updates, Mapping):
            raise InvalidInput("state updates are a dict of top-level keys")
        if CHANNEL in updates:
            raise InvalidInput("channel is set by initialize_channel, not update_state")
        for key in updates:
            if not isinstance(key, str) or not key:
                raise InvalidInput("a state key is a non-empty string")
            if key == RESERVED:
                raise InvalidInput(f"{RESERVED} is BotState's own key, not the bot's")
        check_json(dict(updates), "state update")
        tokens = _TokenFinder(updates, self._msg)
        # The dashboard first: the bot may select an account of the profile it brings. The
        # values are the finder's copy: nothing the bot changes later reaches the state.
        ordered = sorted(tokens.copy.items(), key=lambda item: item[0] != DASHBOARD)
        profile = self._conv.profile
        changes: list[Callable[[], None]] = []
        for key, value in ordered:
            if key == DASHBOARD:
                tokens.refuse_in(key, value)
                profile, change = self._dashboard(value)
            elif key == ACTIVE_ACCOUNT:
                tokens.refuse_in(key, value)
                change = self._active_account(value, profile)
            elif key == AUTH:
                change = self._auth(value, tokens)
            elif key == COMPONENT_DATA:
                change = self._component_data(value, tokens)
            else:
                change = self._context(key, value, tokens)
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
            self._set_context(DASHBOARD, rest or None, [])

        return profile, change

    def _active_account(self, value: Any, profile: Profile | None) -> Callable[[], None]:
        known = isinstance(value, str) and profile is not None and profile.account(value)
        if value is not None and not known:
            raise InvalidInput(f"active_account_id {value!r} is not an account of the member")

        def change() -> None:
            self._conv.critical.current_account_id = value

        return change

    def _auth(self, value: Any, tokens: _TokenFinder) -> Callable[[], None]:
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInput("auth is a dict with the member's token")
        auth = dict(value or {})
        token = auth.pop("token", None)
        if token is not None and (not isinstance(token, str) or not token):
            raise InvalidInput("auth.token is the member's JWT, as text")
        rest = tokens.sealed(AUTH, auth)

        def change() -> None:
            # The bot replaces auth whole: an auth without a token logs the member out.
            if token is None:
                self._msg.revoke_token()
            else:
                self._msg.save_token(token)
            self._set_context(AUTH, rest[0] or None, rest[1])

        return change

    def _component_data(self, value: Any, tokens: _TokenFinder) -> Callable[[], None]:
        if value is not None and not isinstance(value, Mapping):
            raise InvalidInput("component_data is a dict (path, component, data...)")
        data, paths = tokens.sealed(COMPONENT_DATA, value)
        path = data.get("path") if data else None
        component = data.get("component") if data else None
        # Flow steps are identifiers; an empty one means none (the bot writes "" at times).
        option = check_step("component_data.path", path) if path else None
        stage = check_step("component_data.component", component) if component else None

        def change() -> None:
            self._conv.option = option
            self._conv.stage = stage or DEFAULT_STAGE
            self._follow_intent(option)
            self._set_context(COMPONENT_DATA, data, paths)

        return change

    def _context(self, key: str, value: Any, tokens: _TokenFinder) -> Callable[[], None]:
        stored, paths = tokens.sealed(key, value)
        return lambda: self._set_context(key, stored, paths)

    def _set_context(self, key: str, value: Any, token_paths: TokenPaths) -> None:
        context = self._conv.context
        if value is None:
            context.pop(key, None)
        else:
            context[key] = value
        sealed = self._own().get("sealed", {})
        if token_paths and value is not None:
            self._set_own("sealed", {**sealed, key: token_paths})
        elif key in sealed:
            self._set_own("sealed", {k: v for k, v in sealed.items() if k != key})

    def _set_own(self, name: str, value: Any) -> None:
        own = {**self._own(), name: value}
        own = {k: v for k, v in own.items() if v}
        if own:
            self._conv.context[RESERVED] = own
        else:
            self._conv.context.pop(RESERVED, None)

    # The intent: one id per flow path the member is in (an offer being built)
    @property
    def intent(self) -> str | None:
        """The id of the flow the member is in (``component_data.path``, such as an offer
        being built): the same on every message of that flow, new when the path changes;
        BotState's effects are keyed by it. None outside any flow."""
        intent = self._own().get("intent")
        return intent.get("id") if isinstance(intent, dict) else None

    def _follow_intent(self, path: str | None) -> None:
        current = self._own().get("intent")
        if path is None:
            self._set_own("intent", None)
            return
        if isinstance(current, dict) and current.get("path") == path:
            return
        self._intents += 1
        # From the message: a redelivery of this message begins the same intent again.
        seed = f"{self._msg.phone}\0{self._msg.message_id}\0{path}\0{self._intents}"
        intent_id = hashlib.sha256(seed.encode()).hexdigest()[:16]
        self._set_own("intent", {"path": path, "id": intent_id})

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

    # Effects: the Credex calls that must run at most once per intent
    @property
    def in_doubt(self) -> tuple[InDoubt, ...]:
        """The member's effects whose outcome is unknown (the worker died or timed out during
        the call), whichever message started them: settle each (``settle``)."""
        return self._msg.in_doubt

    def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T:
        """``run()`` at most once for the intent ``key`` (default: the flow's ``intent``, else
        this message): a later message of the same offer gets the recorded result, or
        EffectInDoubt while the outcome is unknown. See Message.effect."""
        return self._msg.effect(name, run, key=self._key(key))

    def settle(self, name: str, result: object, *, key: str | None = None) -> Any:
        """Record what an effect in doubt turned out to be; returns the result that stands."""
        return self._msg.settle(name, result, key=self._key(key))

    def idempotency_key(self, name: str, key: str | None = None) -> str:
        """The same key for every attempt of the intent (default: the flow's ``intent``)."""
        return self._msg.idempotency_key(name, self._key(key))

    def _key(self, key: str | None) -> str | None:
        return key if key is not None else self.intent


def _public_calls(base: type) -> set[str]:
    """The names of the methods and properties ``base`` (and its bases) define."""
    return {
        name
        for klass in base.__mro__
        if klass is not object
        for name, attribute in vars(klass).items()
        if not name.startswith("_") and (callable(attribute) or isinstance(attribute, property))
    }


class _TokenFinder:
    """Finds the member's token in the values of one update; refuses any other JWT."""

    def __init__(self, updates: Mapping[str, Any], msg: BotMessage) -> None:
        self._msg = msg
        # The update's JSON (checked plain before) gives a deep copy, and, searched once, says
        # whether any JWT is in it at all: most updates hold none, and skip the walk.
        encoded = msgspec.json.encode(dict(updates))
        self.copy: dict[str, Any] = msgspec.json.decode(encoded)
        self._none = _JWT_BYTES.search(encoded) is None
        auth = updates.get(AUTH)
        # An update that writes auth brings the token (or none: the member logs out).
        self._token: str | None = auth.get("token") if isinstance(auth, Mapping) else None
        self._looked = AUTH in updates

    def _member_token(self) -> str | None:
        # Read only when a JWT turns up: reading the token marks it used (it slides).
        if not self._looked:
            self._token, self._looked = self._msg.token(), True
        return self._token

    def sealed(self, key: str, value: Any) -> tuple[Any, TokenPaths]:
        """``value`` (of ``copy``: changed in place) without the member's token, and where
        the token was."""
        paths: TokenPaths = []
        self._walk(key, value, [], paths)
        if paths == [[]]:
            return "", paths  # the whole value was the token: an empty text holds its place
        if value is not None and paths:
            value = _put_token(value, paths, None)
        return value, paths

    def refuse_in(self, key: str, value: Any) -> None:
        """No token at all under ``key`` (the profile is kept longer than any token)."""
        paths: TokenPaths = []
        self._walk(key, value, [], paths)
        if paths:
            raise InvalidInput(f"{key}{_shown(paths[0])}: the member's token has no place here")

    def _walk(self, key: str, value: Any, path: list[Step], found: TokenPaths) -> None:
        if self._none:
            return
        if isinstance(value, Mapping):
            for name, item in value.items():
                self._check(key, name, path)
                self._walk(key, item, [*path, name], found)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._walk(key, item, [*path, index], found)
        elif isinstance(value, str) and JWT_SHAPED.search(value):
            if value != self._member_token():
                self._refuse(key, path)
            found.append(path)

    def _check(self, key: str, name: str, path: list[Step]) -> None:
        if JWT_SHAPED.search(name):
            self._refuse(key, path)

    @staticmethod
    def _refuse(key: str, path: list[Step]) -> None:
        raise InvalidInput(
            f"{key}{_shown(path)}: a JWT that is not the member's token (BotState keeps the "
            "member's token sealed and stores no other)"
        )


def _copied(value: Any) -> Any:
    """A deep copy of a stored value (plain JSON, checked when it was written)."""
    return msgspec.json.decode(msgspec.json.encode(value))


def _shown(path: list[Step]) -> str:
    return "".join(f"[{step!r}]" for step in path)


def _put_token(value: Any, paths: TokenPaths, token: str | None) -> Any:
    """``value`` with ``token`` at each path; None removes it (a list keeps a None)."""
    for path in paths:
        if not path:
            return token
        parent = value
        try:
            for step in path[:-1]:
                parent = parent[step]
        except (KeyError, IndexError, TypeError):
            continue  # the bot's value no longer has that place
        last = path[-1]
        if isinstance(parent, dict) and isinstance(last, str):
            if token is None:
                parent.pop(last, None)
            else:
                parent[last] = token
        elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
            parent[last] = token
    return value
