"""A double of the VimbisoPay bot (Great-Sun-Group/vimbiso-chatserver) as it is deployed.

Written from reading the bot, none of its code copied. ``BotApp.installed()`` puts it under
the bot's own module names (``core.api.views``, ``core.state.manager``,
``services.whatsapp.state_manager``...), so that the code docs/adopting.md tells a developer
to paste into those files runs as written. What it keeps of the real bot, because the library
has to live with it:

- the webhook view answers 200 to what is not a message, and 500 to whatever escapes;
- ``services.whatsapp.state_manager.StateManager`` accepts only the core ``StateManager``
  (an ``isinstance`` check) and turns every error into a ``SystemException``;
- ``MessagingService(...)`` sets ``state_manager.messaging`` after construction;
- replies are ``Message`` objects (text, a list, buttons) turned into WhatsApp Cloud API
  payloads and posted at once; a failed send never reaches the components;
- ``make_api_request(url, payload, method, retry_auth, state_manager)`` takes no headers, sends
  the JWT from ``auth.token``, returns a ``requests.Response`` (or an error dict after a 401)
  and sends the request again after a ``RequestException``, up to three times;
- components report failures as ``ValidationResult``; the flow processor catches every
  ``Exception`` of the flow, and a failed step sends the member back to the login.

Credex and WhatsApp's Graph API are fakes whose records (offers, sent payloads) can live in a
Redis, so that a forked worker's calls are seen by the test that killed it.
"""

from __future__ import annotations

import abc
import itertools
import json
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Protocol

import redis
import requests
from fakes import jwt

MEMBER = {
    "memberID": "mem-1",
    "memberTier": 1,
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberHandle": "tendai",
    "defaultDenom": "USD",
    "remainingAvailableUSD": 20.0,
}


def account(balance: str, pending_out: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "accountID": "acc-1",
        "accountName": "Tendai Moyo",
        "accountHandle": "tendai",
        "accountType": "PERSONAL",
        "defaultDenom": "USD",
        "isOwnedAccount": True,
        "balanceData": {"securedNetBalancesByDenom": [balance]},
        "pendingInData": [],
        "pendingOutData": pending_out or [],
    }


# Records shared with forked workers: a list in this process, or in a Redis.
class Records(Protocol):
    def append(self, item: dict[str, Any]) -> None: ...

    def all(self) -> list[dict[str, Any]]: ...


class LocalRecords:
    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def append(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)


class RedisRecords:
    """A list in a Redis (never one of the library's keys): seen across processes."""

    def __init__(self, url: str, name: str) -> None:
        self._url, self._name = url, f"double:{name}:{uuid.uuid4().hex}"

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self._url)  # one per call: safe after a fork

    def append(self, item: dict[str, Any]) -> None:
        with self._client() as client:
            client.rpush(self._name, json.dumps(item))

    def all(self) -> list[dict[str, Any]]:
        with self._client() as client:
            return [json.loads(raw) for raw in client.lrange(self._name, 0, -1)]


# Credex, as the bot's API client reaches it (requests.request)
def credex_amount(amount: float, denom: str) -> str:
    """An outgoing offer's amount as credex-core formats it in pendingOutData."""
    places = {"CXX": 3, "XAU": 4}.get(denom, 2)
    return f"-{amount:,.{places}f} {denom}"


def _response(status: int, body: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()  # how requests' own tests build one
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.encoding = "utf-8"
    return response


class FakeCredex:
    """credex-core's login, getAccountByHandle and createCredex, answered as it answers them.

    ``on_create`` runs inside a createCredex call, before (``"before"``) or after
    (``"after"``) the offer is recorded: tests make the call slow or kill the worker there.
    """

    HANDLES: ClassVar[dict[str, dict[str, str]]] = {
        "bob_store": {
            "accountID": "acc-bob",
            "accountName": "Bob Store",
            "accountHandle": "bob_store",
        }
    }

    def __init__(self, now: Callable[[], datetime], offers: Records | None = None) -> None:
        self._now = now
        self.offers: Records = offers or LocalRecords()
        self.calls: list[str] = []  # endpoints, in this process
        self.tokens: list[str] = []
        self.on_create: Callable[[str], None] | None = None
        self.down = False

    @property
    def logins(self) -> int:
        return self.calls.count("login")

    @property
    def token(self) -> str:
        return self.tokens[-1] if self.tokens else ""

    def request(
        self, method: str, url: str, headers: dict[str, str], json: dict[str, Any], timeout: float
    ) -> requests.Response:
        endpoint = url.rstrip("/").split("/")[-1]
        self.calls.append(endpoint)
        if self.down:
            raise requests.ConnectionError("Credex does not answer")
        if endpoint == "login":
            return self._login(json["phone"])
        if not self._authorised(headers):
            return _response(401, _failure("ERROR_UNAUTHORIZED", "invalid or expired token"))
        if endpoint == "getAccountByHandle":
            return self._account(json["accountHandle"])
        if endpoint == "createCredex":
            return self._create(json)
        return _response(404, _failure("ERROR_NOT_FOUND", f"no endpoint {endpoint}"))

    def _authorised(self, headers: dict[str, str]) -> bool:
        bearer = headers.get("Authorization", "").removeprefix("Bearer ")
        return bearer in self.tokens

    def dashboard(self) -> dict[str, Any]:
        pending = [
            {
                "credexID": offer["credexID"],
                "formattedInitialAmount": credex_amount(offer["amount"], offer["denom"]),
                "counterpartyAccountName": offer["receiverAccountName"],
                "secured": True,
            }
            for offer in self.offers.all()
        ]
        spent = sum(offer["amount"] for offer in self.offers.all())
        return {
            "member": dict(MEMBER),
            "accounts": [account(f"{150 - spent:.2f} USD", pending)],
        }

    def _login(self, phone: str) -> requests.Response:
        exp = int((self._now() + timedelta(hours=1)).timestamp())
        token = jwt({"sub": "mem-1", "phone": phone, "login": len(self.tokens) + 1, "exp": exp})
        self.tokens.append(token)
        action = {
            "id": "mem-1",
            "type": "MEMBER_LOGIN",
            "timestamp": self._now().isoformat(),
            "actor": "mem-1",
            "details": {"memberID": "mem-1", "phone": phone, "token": token},
        }
        body = {"message": "Successfully logged in", "data": {"action": action}}
        body["data"]["dashboard"] = self.dashboard()
        return _response(200, body)

    def _account(self, handle: str) -> requests.Response:
        found = self.HANDLES.get(handle)
        if found is None:
            failure = _failure("ERROR_NOT_FOUND", "Account not found")
            return _response(404, failure)
        action = {"id": found["accountID"], "type": "ACCOUNT_FOUND", "actor": "mem-1"}
        body = {"message": "Account found", "data": {"action": {**action, "details": found}}}
        body["data"]["dashboard"] = {}
        return _response(200, body)

    def record(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Make the offer a createCredex payload asks for (a test may do it late, as a slow
        Credex would); its action details."""
        receiver = next(
            h for h in self.HANDLES.values() if h["accountID"] == payload["receiverAccountID"]
        )
        credex_id = f"cx-{uuid.uuid4().hex[:8]}"
        amount = float(payload["InitialAmount"])
        self.offers.append(
            {
                "credexID": credex_id,
                "amount": amount,
                "denom": payload["Denomination"],
                "receiverAccountName": receiver["accountName"],
                "payload": payload,
            }
        )
        return {
            "id": credex_id,
            "amount": f"{amount:.2f}",
            "denomination": payload["Denomination"],
            "securedCredex": True,
            "receiverAccountID": receiver["accountID"],
            "receiverAccountName": receiver["accountName"],
        }

    def _create(self, payload: dict[str, Any]) -> requests.Response:
        if self.on_create:
            self.on_create("before")
        details = self.record(payload)
        if self.on_create:
            self.on_create("after")
        credex_id = details.pop("id")
        action = {"id": credex_id, "type": "CREDEX_CREATED", "actor": "mem-1", "details": details}
        body = {"message": "Secured credex created", "data": {"action": action}}
        body["data"]["dashboard"] = self.dashboard()
        return _response(200, body)


def _failure(kind: str, reason: str) -> dict[str, Any]:
    action = {"id": None, "type": kind, "actor": "system", "details": {"reason": reason}}
    return {"message": reason, "data": {"action": action, "dashboard": {}}}


class GraphApi:
    """WhatsApp's Cloud API: the payloads the bot posts to /messages."""

    def __init__(self, sent: Records | None = None) -> None:
        self.sent: Records = sent or LocalRecords()
        self.fail_on: str | None = None

    def post(self, payload: dict[str, Any]) -> None:
        body = payload.get("text", {}).get("body", "")
        if self.fail_on and self.fail_on in body:
            self.fail_on = None
            raise requests.ConnectionError("graph.facebook.com did not answer")
        self.sent.append(payload)


# core.error
class BotError(Exception):
    """The bot's own exception base (it is called BaseException there)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        self.message, self.details = message, details or {}
        super().__init__(message)


class SystemException(BotError):
    def __init__(self, message: str, code: str, service: str, action: str) -> None:
        super().__init__(message, {"code": code, "service": service, "action": action})


class ComponentException(BotError):
    def __init__(self, message: str, component: str, field: str, value: str = "") -> None:
        super().__init__(message, {"component": component, "field": field, "value": value})


class MessageValidationError(BotError):
    pass


@dataclass
class ValidationResult:
    valid: bool
    error: dict[str, Any] | None = None
    value: Any = None

    @classmethod
    def success(cls, value: Any = None) -> ValidationResult:
        return cls(True, None, value)

    @classmethod
    def failure(
        cls, message: str, field: str = "value", details: dict[str, Any] | None = None
    ) -> ValidationResult:
        error = {"type": "validation", "field": field, "message": message}
        if details:
            error["details"] = details
        return cls(False, error)


def error_dict(code: str, message: str) -> dict[str, Any]:
    """What the bot's ErrorHandler.handle_system_error returns."""
    return {"error": {"type": "system", "message": message, "details": {"code": code}}}


# core.messaging
class MessageType(Enum):
    TEXT = "text"
    INTERACTIVE = "interactive"


class InteractiveType(Enum):
    LIST = "list"
    BUTTON = "button"


@dataclass
class Button:
    id: str
    title: str
    type: str = "reply"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "reply": {"id": self.id, "title": self.title}}


@dataclass
class Section:
    title: str
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": self.rows}


@dataclass
class TextContent:
    body: str
    preview_url: bool = False
    type: MessageType = MessageType.TEXT


@dataclass
class InteractiveContent:
    """WhatsApp's limits are checked on construction, as the bot's own type does."""

    interactive_type: InteractiveType
    body: str
    buttons: list[Button] = field(default_factory=list)
    sections: list[Section | dict[str, Any]] = field(default_factory=list)
    header: str | None = None
    footer: str | None = None
    button_text: str | None = None
    type: MessageType = MessageType.INTERACTIVE

    def __post_init__(self) -> None:
        problems = [
            len(self.body) > 4096,
            len(self.buttons) > 3,
            any(len(b.title) > 20 for b in self.buttons),
            len(self.sections) > 10,
            any(len(s["rows"]) > 10 for s in self.section_dicts()),
            any(len(r["title"]) > 24 for s in self.section_dicts() for r in s["rows"]),
            any(
                len(r.get("description", "")) > 72 for s in self.section_dicts() for r in s["rows"]
            ),
        ]
        if any(problems):
            raise MessageValidationError("interactive message past WhatsApp's limits")

    def section_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() if isinstance(s, Section) else s for s in self.sections]


@dataclass
class MessageRecipient:
    type: str
    identifier: str


@dataclass
class Message:
    content: TextContent | InteractiveContent
    recipient: MessageRecipient | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class BaseMessagingService:
    state_manager: Any = None

    def send_message(self, message: Message) -> Message:
        raise NotImplementedError


class MessagingService:
    """The core messaging service the components send through (``state_manager.messaging``)."""

    def __init__(self, channel_service: BaseMessagingService, state_manager: Any = None) -> None:
        if not isinstance(channel_service, BaseMessagingService):
            raise ValueError("Channel service must implement BaseMessagingService")
        self.channel_service, self.state_manager = channel_service, state_manager
        if state_manager:
            channel_service.state_manager = state_manager
            state_manager.messaging = self  # after the state manager was built
            if isinstance(channel_service, WhatsAppMessagingService):
                channel_service.mock_testing = state_manager.is_mock_testing()

    def _send(self, content: TextContent | InteractiveContent) -> Message:
        recipient = MessageRecipient(
            self.state_manager.get_channel_type(), self.state_manager.get_channel_id()
        )
        return self.channel_service.send_message(Message(content, recipient))

    def send_text(self, text: str, preview_url: bool = False) -> Message:
        return self._send(TextContent(text, preview_url))

    def send_interactive(
        self,
        body: str,
        buttons: list[Button] | None = None,
        header: str | None = None,
        footer: str | None = None,
        sections: list[Section | dict[str, Any]] | None = None,
        button_text: str | None = None,
    ) -> Message:
        kind = InteractiveType.BUTTON if buttons else InteractiveType.LIST
        content = InteractiveContent(
            kind, body, buttons or [], sections or [], header, footer, button_text
        )
        return self._send(content)


class WhatsAppMessagingService(BaseMessagingService):
    """Turns a Message into the Cloud API payload and posts it; errors stay here."""

    graph: ClassVar[GraphApi]

    def __init__(self) -> None:
        self.state_manager = None
        self.mock_testing = False

    def send_message(self, message: Message) -> Message:
        try:
            self.graph.post(whatsapp_payload(message))
        except Exception as error:  # a failed send never reaches the component
            message.metadata = {"error": str(error)}
        return message


def whatsapp_payload(message: Message) -> dict[str, Any]:
    assert message.recipient is not None
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.recipient.identifier,
    }
    content = message.content
    if isinstance(content, TextContent):
        return {**payload, "type": "text", "text": {"body": content.body}}
    interactive: dict[str, Any] = {
        "type": content.interactive_type.value,
        "body": {"text": content.body},
    }
    if content.interactive_type is InteractiveType.BUTTON:
        interactive["action"] = {"buttons": [b.to_dict() for b in content.buttons]}
    else:
        interactive["action"] = {
            "button": content.button_text or "Select",
            "sections": content.section_dicts(),
        }
    if content.header:
        interactive["header"] = {"type": "text", "text": content.header}
    if content.footer:
        interactive["footer"] = {"text": content.footer}
    return {**payload, "type": "interactive", "interactive": interactive}


# core.state: the bot's own store, one JSON document per user, rewritten whole
class StateManagerInterface(abc.ABC):
    """The calls the bot's components and flow make on a state manager: abstract, as in the
    bot (an ABC), so that a class missing one cannot be built."""

    @property
    @abc.abstractmethod
    def messaging(self) -> Any: ...

    @messaging.setter
    @abc.abstractmethod
    def messaging(self, service: Any) -> None: ...


# The calls, and the error code the WhatsApp wrapper gives each one's failure.
WRAPPED = {
    "get_state_value": "STATE_GET_ERROR",
    "update_state": "STATE_UPDATE_ERROR",
    "get_path": "FLOW_PATH_ERROR",
    "get_component": "FLOW_COMPONENT_ERROR",
    "get_component_result": "FLOW_RESULT_ERROR",
    "is_awaiting_input": "FLOW_INPUT_ERROR",
    "set_component_result": "FLOW_RESULT_ERROR",
    "set_component_awaiting": "FLOW_INPUT_ERROR",
    "update_component_data": "FLOW_DATA_ERROR",
    "transition_flow": "FLOW_TRANSITION_ERROR",
    "update_flow_state": "FLOW_STATE_UPDATE_ERROR",
    "clear_component_data": "STATE_CLEAR_ERROR",
    "clear_all_state": "STATE_CLEAR_ERROR",
    "get_channel_id": "CHANNEL_ERROR",
    "get_channel_type": "CHANNEL_ERROR",
    "is_authenticated": "AUTH_ERROR",
    "get_member_id": "AUTH_ERROR",
    "is_mock_testing": "STATE_ERROR",
    "get_incoming_message": "MESSAGE_ERROR",
    "set_incoming_message": "MESSAGE_ERROR",
    "initialize_channel": "CHANNEL_ERROR",
}


def _abstract(name: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(name)

    call.__name__ = name
    return abc.abstractmethod(call)


for _name in WRAPPED:
    setattr(StateManagerInterface, _name, _abstract(_name))
abc.update_abstractmethods(StateManagerInterface)


ALLOWED_KEYS = {
    "channel",
    "mock_testing",
    "auth",
    "dashboard",
    "action",
    "active_account_id",
    "component_data",
}


class StateManager(StateManagerInterface):
    """The bot's core store (``core.state.manager.StateManager``) over a dict of documents:
    read whole when built, rewritten whole by every update, failures swallowed."""

    documents: ClassVar[dict[str, str]] = {}

    def __init__(self, key_prefix: str) -> None:
        if not key_prefix.startswith("channel:"):
            raise ComponentException("Invalid key prefix format", "state_manager", "key_prefix")
        self.key_prefix = key_prefix
        self._messaging: Any = None
        self._state: dict[str, Any] = json.loads(self.documents.get(key_prefix, "{}"))

    @property
    def messaging(self) -> Any:
        if self._messaging is None:
            raise ComponentException("Messaging service not initialized", "state", "messaging")
        return self._messaging

    @messaging.setter
    def messaging(self, service: Any) -> None:
        self._messaging = service

    def _write(self, updates: dict[str, Any]) -> None:
        state = {**self._state, **updates}
        self.documents[self.key_prefix] = json.dumps(state)
        self._state = state

    def initialize_channel(
        self, channel_type: str, channel_id: str, mock_testing: bool = False
    ) -> None:
        channel = {"type": channel_type, "identifier": channel_id}
        self._write({"channel": channel, "mock_testing": mock_testing})

    def update_state(self, updates: dict[str, Any]) -> None:
        if "channel" in updates:
            raise ComponentException("Channel is set by initialize_channel", "state", "channel")
        if set(updates) - ALLOWED_KEYS:
            return  # the bot's validator refuses, its update_state logs and drops the update
        self._write(json.loads(json.dumps(updates)))

    def get_state_value(self, key: str, default: Any = None) -> Any:
        value = self._state.get(key)
        return default if value is None else json.loads(json.dumps(value))

    def _flow(self) -> dict[str, Any]:
        return dict(self.get_state_value("component_data", {}))

    def get_path(self) -> str | None:
        return self._flow().get("path")

    def get_component(self) -> str | None:
        return self._flow().get("component")

    def get_component_result(self) -> str | None:
        return self._flow().get("component_result")

    def is_awaiting_input(self) -> bool:
        return bool(self._flow().get("awaiting_input"))

    def get_incoming_message(self) -> dict[str, Any] | None:
        return self._flow().get("incoming_message")

    def set_incoming_message(self, message: dict[str, Any]) -> None:
        self.update_state({"component_data": {**self._flow(), "incoming_message": message}})

    def update_flow_state(
        self,
        path: str,
        component: str,
        data: dict[str, Any] | None = None,
        component_result: str | None = None,
        awaiting_input: bool = False,
    ) -> None:
        flow = {
            "path": path,
            "component": component,
            "data": data or {},
            "component_result": component_result,
            "awaiting_input": awaiting_input,
        }
        incoming = self._flow().get("incoming_message")
        if isinstance(incoming, dict) and {"type", "text"} <= incoming.keys():
            flow["incoming_message"] = incoming
        self.update_state({"component_data": flow})

    def _change(self, **changes: Any) -> None:
        flow = self._flow()
        fields = {k: flow.get(k) for k in ("path", "component", "component_result")}
        fields.update(data=flow.get("data") or {}, awaiting_input=bool(flow.get("awaiting_input")))
        self.update_flow_state(**{**fields, **changes})

    def transition_flow(self, path: str, component: str) -> None:
        self._change(path=path, component=component, component_result=None, awaiting_input=False)

    def set_component_result(self, result: str | None) -> None:
        self._change(component_result=result)

    def set_component_awaiting(self, awaiting: bool) -> None:
        self._change(awaiting_input=awaiting)

    def update_component_data(self, data: dict[str, Any]) -> None:
        self._change(data={**(self._flow().get("data") or {}), **data})

    def clear_component_data(self) -> None:
        self.update_state({"component_data": None})

    def clear_all_state(self) -> None:
        self._state = {"mock_testing": True} if self._state.get("mock_testing") else {}
        self.documents[self.key_prefix] = json.dumps(self._state)

    def get_channel_id(self) -> str:
        return str(self._state.get("channel", {}).get("identifier", ""))

    def get_channel_type(self) -> str:
        return str(self._state.get("channel", {}).get("type", ""))

    def is_authenticated(self) -> bool:
        return bool(self.get_state_value("dashboard", {}).get("member_id"))  # never set: False

    def get_member_id(self) -> str | None:
        return self.get_state_value("dashboard", {}).get("member", {}).get("memberID")

    def is_mock_testing(self) -> bool:
        return bool(self._state.get("mock_testing"))


# services.whatsapp.state_manager: the wrapper the view puts around the core store
def _wrapped(name: str, code: str) -> Callable[..., Any]:
    def call(self: WhatsAppStateManager, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._core, name)(*args, **kwargs)
        except Exception as error:
            raise SystemException(
                f"Failed to {name}: {error}", code, "whatsapp_state", name
            ) from error

    call.__name__ = name
    return call


class WhatsAppStateManager(StateManagerInterface):
    """``services.whatsapp.state_manager.StateManager``: the core store, checked and wrapped."""

    def __init__(self, state_manager: StateManager) -> None:
        if not state_manager:
            raise SystemException("Core state manager is required", "STATE_INIT_ERROR", "", "")
        if not isinstance(state_manager, StateManager):
            raise SystemException(
                "Invalid core state manager type: expected StateManager, got "
                f"{type(state_manager).__name__}",
                "STATE_INIT_ERROR",
                "whatsapp_state",
                "initialize",
            )
        self._core = state_manager

    @property
    def messaging(self) -> Any:
        try:
            return self._core.messaging
        except Exception as error:
            raise SystemException(str(error), "MESSAGING_ERROR", "whatsapp_state", "get") from error

    @messaging.setter
    def messaging(self, service: Any) -> None:
        self._core.messaging = service


for _name, _code in WRAPPED.items():
    setattr(WhatsAppStateManager, _name, _wrapped(_name, _code))
abc.update_abstractmethods(WhatsAppStateManager)


# core.api: the Credex client
BASE_URL = "https://credex.test/api/v1/"
MAX_RETRIES = 3


class CredexHttp:
    """Where ``requests.request`` lands in the double: the FakeCredex of the running app."""

    credex: ClassVar[FakeCredex]


def make_api_request(
    url: str,
    payload: dict[str, Any],
    method: str = "POST",
    retry_auth: bool = True,
    state_manager: Any = None,
) -> requests.Response | dict[str, Any]:
    """The bot's API client: no headers argument; every error becomes a SystemException."""
    try:
        endpoint = url.rstrip("/").split("/")[-1]
        needs_auth = endpoint not in ("login", "onboardMember")
        if needs_auth and not state_manager:
            return error_dict("AUTH_ERROR", "State manager required for authenticated request")
        headers = {"Content-Type": "application/json", "x-client-api-key": "client-key"}
        token = (
            (state_manager.get_state_value("auth", {}) or {}).get("token") if needs_auth else None
        )
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in itertools.count(1):
            try:
                response = CredexHttp.credex.request(
                    method, BASE_URL + endpoint, headers=headers, json=payload, timeout=30
                )
            except requests.RequestException as error:
                if attempt < MAX_RETRIES:
                    continue  # the bot sleeps a second here and sends the same request again
                raise SystemException(
                    f"Request failed after {MAX_RETRIES} retries: {error}",
                    "REQUEST_FAILED",
                    "api_client",
                    endpoint,
                ) from error
            unauthorised = "Authorization" not in headers or response.status_code == 401
            if needs_auth and retry_auth and unauthorised:
                state_manager.update_state({"auth": {"return_url": url}})
                state_manager.update_flow_state("login", "Greeting", {}, "", False)
                return error_dict("AUTH_REQUIRED", "Authentication required")
            return response
        raise AssertionError("unreachable")
    except Exception as error:
        raise SystemException(
            f"Error making API request: {error}", "REQUEST_ERROR", "api_client", url
        ) from error


def update_state_from_response(
    api_response: dict[str, Any], state_manager: Any
) -> tuple[bool, Any]:
    """The bot's core.api.api_response: dashboard, action and the login's token, one update."""
    try:
        data = api_response.get("data", {})
        update: dict[str, Any] = {}
        if data.get("dashboard"):
            update["dashboard"] = data["dashboard"]
        if "action" in data:
            update["action"] = data["action"]
            token = data["action"].get("details", {}).get("token")
            if token:
                update["auth"] = {"token": token}
        state_manager.update_state(update)
        return True, None
    except Exception as error:
        return False, str(error)


def handle_api_response(response: Any, state_manager: Any) -> tuple[dict[str, Any], Any]:
    try:
        data = response.json()
        if not isinstance(data, dict):
            data = {"data": data}
        if "error" in data:
            return data, data["error"].get("message")
        ok, error = update_state_from_response(data, state_manager)
        return data, (None if ok else error)
    except Exception as error:
        return {"error": str(error)}, str(error)


# core.components
class Component:
    def __init__(self, component_type: str) -> None:
        self.type = component_type
        self.state_manager: Any = None

    def set_state_manager(self, state_manager: Any) -> None:
        if not hasattr(state_manager, "messaging") or state_manager.messaging is None:
            raise ComponentException("messaging service not initialized", self.type, "state")
        self.state_manager = state_manager

    def validate(self, value: Any) -> ValidationResult:
        try:
            return self._validate(value)
        except Exception as error:
            raise ComponentException(str(error), self.type, "value", str(value)) from error

    def _validate(self, value: Any) -> ValidationResult:
        raise NotImplementedError

    def update_data(self, data: dict[str, Any]) -> None:
        self.state_manager.update_component_data(data)

    def set_result(self, result: str | None) -> None:
        self.state_manager.set_component_result(result)

    def set_awaiting_input(self, awaiting: bool) -> None:
        self.state_manager.set_component_awaiting(awaiting)

    def _incoming(self) -> dict[str, Any]:
        flow = self.state_manager.get_state_value("component_data", {})
        incoming: dict[str, Any] = flow.get("incoming_message") or {}
        return incoming

    def _typed(self) -> str:
        incoming = self._incoming()
        return (
            str(incoming.get("text", {}).get("body", "")) if incoming.get("type") == "text" else ""
        )


class ApiComponent(Component):
    def _validate(self, value: Any) -> ValidationResult:
        return self.validate_api_call(value)

    def validate_api_call(self, value: Any) -> ValidationResult:
        raise NotImplementedError


class InputComponent(Component):
    def _validate(self, value: Any) -> ValidationResult:
        return self.validate_display(value)

    def validate_display(self, value: Any) -> ValidationResult:
        raise NotImplementedError


class DisplayComponent(Component):
    def _validate(self, value: Any) -> ValidationResult:
        try:
            self.display()
            return ValidationResult.success()
        except Exception as error:
            return ValidationResult.failure(f"Failed to display: {error}")

    def display(self) -> None:
        raise NotImplementedError


GREETING = "🌅 Mhoro! Connecting you to Credex"
WORKING = "⚡ Working on that for you"
AMOUNT_PROMPT = "💸 *Offer how much❓*\n✨ Defaults to USD or use\n✨ ZWG 99.99 or 9.99 ZWG"
HANDLE_PROMPT = "*💳 What's the account handle❓*"
NO_SUCH_HANDLE = "❌ Oops, that 💳accountHandle doesn't exist. Please try again."
OFFERED = "✅ Secured credex offered"
CANCELLED = "Ok, no problem. It's cancelled."
DENOMINATIONS = {"CXX", "XAU", "USD", "CAD", "ZWG"}


class Greeting(DisplayComponent):
    def __init__(self) -> None:
        super().__init__("greeting")

    def display(self) -> None:
        self.state_manager.messaging.send_text(GREETING)


class ProcessingNow(DisplayComponent):
    def __init__(self) -> None:
        super().__init__("processing_now")

    def display(self) -> None:
        self.state_manager.messaging.send_text(WORKING)


class LoginApiCall(ApiComponent):
    def __init__(self) -> None:
        super().__init__("login_api")

    def validate_api_call(self, value: Any) -> ValidationResult:
        try:
            phone = self.state_manager.get_state_value("channel")["identifier"]
            response = make_api_request(
                "login", {"phone": phone}, "POST", False, self.state_manager
            )
            data, error = handle_api_response(response, self.state_manager)
            if error:
                return ValidationResult.failure(f"Login failed: {error}")
            accounts = data["data"]["dashboard"]["accounts"]
            personal = next(a for a in accounts if a.get("accountType") == "PERSONAL")
            self.state_manager.update_state({"active_account_id": personal["accountID"]})
            self.set_result("send_dashboard")
            return ValidationResult.success()
        except Exception as error:
            return ValidationResult.failure(f"Login failed: {error}")


class AccountDashboard(InputComponent):
    CHOICES = ("offer_secured", "accept_offer", "decline_offer", "cancel_offer")

    def __init__(self) -> None:
        super().__init__("account_dashboard")

    def validate_display(self, value: Any) -> ValidationResult:
        try:
            if not self.state_manager.is_awaiting_input():
                self._show()
                return ValidationResult.success()
            text = self._incoming().get("text", {})
            choice = text.get("list_reply", {}).get("id")
            if text.get("interactive_type") == "list" and choice in self.CHOICES:
                self.set_result(choice)
                self.set_awaiting_input(False)
                return ValidationResult.success(True)
            return ValidationResult.failure("Invalid selection", "selection")
        except Exception as error:
            return ValidationResult.failure(str(error), "display")

    def _show(self) -> None:
        board = self.state_manager.get_state_value("dashboard")
        active = self.state_manager.get_state_value("active_account_id")
        shown = next(a for a in board["accounts"] if a["accountID"] == active)
        balances = shown["balanceData"]["securedNetBalancesByDenom"] or ["0.00 USD"]
        lines = [f"*💳 {shown['accountName']}*", f"💳 {shown['accountHandle']}", ""]
        lines += ["*💰 Secured Balances*", *(f"💰 {b}" for b in balances)]
        member = board["member"]
        if member.get("memberTier", 0) < 3:  # a number, as Credex sent it
            lines += ["", "⏳ *Daily Open Tier Limit*"]
            lines.append(f"⏳  {float(member['remainingAvailableUSD']):.2f} USD")
        rows = [{"id": "offer_secured", "title": "💸 Offer Secured Credex 💸"}]
        pending_out = shown.get("pendingOutData") or []
        if pending_out:
            described = f"You have {len(pending_out)} offers pending"
            rows.append(
                {"id": "cancel_offer", "title": "🚫 Cancel Offers 🚫", "description": described}
            )
        self.set_awaiting_input(True)
        self.state_manager.messaging.send_interactive(
            body="\n".join(lines),
            sections=[Section("Credex Actions", rows)],
            button_text="Actions 🪄",
        )


class AmountInput(InputComponent):
    def __init__(self) -> None:
        super().__init__("amount_input")

    def validate_display(self, value: Any) -> ValidationResult:
        send = self.state_manager.messaging.send_text
        if not self.state_manager.is_awaiting_input():
            send(AMOUNT_PROMPT)
            self.set_awaiting_input(True)
            return ValidationResult.success()
        parts = self._typed().strip().split()
        try:
            if len(parts) == 1:
                amount, denom = float(parts[0]), "USD"
            elif len(parts) == 2 and parts[0].replace(".", "", 1).isdigit():
                amount, denom = float(parts[0]), parts[1].upper()
            elif len(parts) == 2:
                amount, denom = float(parts[1]), parts[0].upper()
            else:
                send("Invalid format. Use: amount or 'amount DENOM' or 'DENOM amount'")
                send(AMOUNT_PROMPT)
                return ValidationResult.success()
        except ValueError:
            send("Sorry, that doesn't look like an amount to me")
            send(AMOUNT_PROMPT)
            return ValidationResult.success()
        if denom not in DENOMINATIONS or amount <= 0:
            send("Invalid amount: a positive amount in CAD, CXX, USD, XAU or ZWG")
            send(AMOUNT_PROMPT)
            return ValidationResult.success()
        self.update_data({"amount": str(amount), "denom": denom})
        self.set_awaiting_input(False)
        return ValidationResult.success()


class HandleInput(InputComponent):
    def __init__(self) -> None:
        super().__init__("handle_input")

    def validate_display(self, value: Any) -> ValidationResult:
        if not self.state_manager.is_awaiting_input():
            self.state_manager.messaging.send_text(HANDLE_PROMPT)
            self.set_awaiting_input(True)
            return ValidationResult.success()
        handle = self._typed().strip()
        if not handle or len(handle) > 30:
            return ValidationResult.failure("Handle required, at most 30 characters")
        self.update_data({"handle": handle})
        self.set_awaiting_input(False)
        return ValidationResult.success()


class ValidateAccountApiCall(ApiComponent):
    def __init__(self) -> None:
        super().__init__("validate_account_api")

    def validate_api_call(self, value: Any) -> ValidationResult:
        handle = self.state_manager.get_state_value("component_data", {})["data"]["handle"]
        response = make_api_request(
            "getAccountByHandle", {"accountHandle": handle}, state_manager=self.state_manager
        )
        handle_api_response(response, self.state_manager)
        kind = self.state_manager.get_state_value("action", {}).get("type")
        if kind == "ERROR_NOT_FOUND":
            self.state_manager.messaging.send_text(NO_SUCH_HANDLE)
            self.set_result("return_to_handle")
            return ValidationResult.failure("not found", details={"retry": True})
        if kind != "ACCOUNT_FOUND":
            return ValidationResult.failure(f"account validation failed: {kind}")
        return ValidationResult.success()


class ConfirmOfferSecured(Component):
    """It overrides ``validate`` itself: an error here is not wrapped, it propagates."""

    def __init__(self) -> None:
        super().__init__("confirm_offer_secured")

    def validate(self, value: Any) -> ValidationResult:
        offer = self.state_manager.get_state_value("component_data", {})["data"]
        if not self.state_manager.is_awaiting_input():
            target = self.state_manager.get_state_value("action", {})["details"]
            amount = f"{float(offer['amount']):.2f} {offer['denom']}"
            body = (
                f"*💰 {amount}*\n💰 Secured Credex Offer\n\n_To:_\n"
                f"💳 *{target['accountName']}*\n💳 {offer['handle']}"
            )
            buttons = [Button("confirm", "📝 Sign and Send 💸"), Button("cancel", "❌ Cancel ❌")]
            self.state_manager.messaging.send_interactive(body=body, buttons=buttons)
            self.set_awaiting_input(True)
            return ValidationResult.success()
        text = self._incoming().get("text", {})
        pressed = (
            text.get("button", {}).get("id") if text.get("interactive_type") == "button" else None
        )
        if pressed == "cancel":
            self.update_data({"confirmed": False})
            self.set_result("cancelled")
            self.state_manager.messaging.send_text(CANCELLED)
            self.set_awaiting_input(False)
            return ValidationResult.success()
        if pressed == "confirm":
            self.update_data({"confirmed": True})
            self.set_awaiting_input(False)
            return ValidationResult.success()
        return ValidationResult.failure("Please use the Confirm or Cancel button")


class CreateCredexApiCall(ApiComponent):
    """No try/except of its own, as in the bot: errors of the call propagate."""

    def __init__(self) -> None:
        super().__init__("create_credex_api")

    def set_state_manager(self, state_manager: Any) -> None:
        self.state_manager = state_manager

    def call_credex(self, url: str, payload: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The two statements docs/adopting.md replaces with one."""
        response = make_api_request(url=url, payload=payload, state_manager=self.state_manager)
        return handle_api_response(response=response, state_manager=self.state_manager)

    def validate_api_call(self, value: Any) -> ValidationResult:
        offer = self.state_manager.get_state_value("component_data", {}).get("data", {})
        recipient = self.state_manager.get_state_value("action", {}).get("details", {})
        active = self.state_manager.get_state_value("active_account_id")
        if not offer.get("amount") or not recipient.get("accountID") or not active:
            return ValidationResult.failure("offer data missing")
        payload = {
            "receiverAccountID": recipient["accountID"],
            "issuerAccountID": active,
            "Denomination": offer["denom"],
            "InitialAmount": offer["amount"],
            "credexType": "PURCHASE",
            "OFFERSorREQUESTS": "OFFERS",
            "securedCredex": True,
        }
        data, error = self.call_credex("createCredex", payload)
        if data.get("data", {}).get("action", {}).get("type") != "CREDEX_CREATED":
            return ValidationResult.failure("Credex creation failed", details={"error": error})
        self.state_manager.messaging.send_text(OFFERED)
        self.update_data({})
        self.set_result("show_dashboard")
        return ValidationResult.success()


COMPONENTS: dict[str, type[Component]] = {
    c.__name__: c
    for c in (
        Greeting,
        LoginApiCall,
        AccountDashboard,
        AmountInput,
        HandleInput,
        ValidateAccountApiCall,
        ConfirmOfferSecured,
        ProcessingNow,
        CreateCredexApiCall,
    )
}


# core.flow
GREETINGS = {"hi", "hie", "hey", "hello", "menu", "home", "mhoro", "makadii", "sawubona"}
NEXT = {
    ("login", "Greeting", None): ("login", "LoginApiCall"),
    ("login", "LoginApiCall", "send_dashboard"): ("account", "AccountDashboard"),
    ("account", "AccountDashboard", "offer_secured"): ("offer_secured", "AmountInput"),
    ("offer_secured", "AmountInput", None): ("offer_secured", "HandleInput"),
    ("offer_secured", "HandleInput", None): ("offer_secured", "ValidateAccountApiCall"),
    ("offer_secured", "ValidateAccountApiCall", None): ("offer_secured", "ConfirmOfferSecured"),
    ("offer_secured", "ValidateAccountApiCall", "return_to_handle"): (
        "offer_secured",
        "HandleInput",
    ),
    ("offer_secured", "ConfirmOfferSecured", None): ("offer_secured", "ProcessingNow"),
    ("offer_secured", "ConfirmOfferSecured", "cancelled"): ("account", "AccountDashboard"),
    ("offer_secured", "ProcessingNow", None): ("offer_secured", "CreateCredexApiCall"),
    ("offer_secured", "CreateCredexApiCall", "show_dashboard"): ("account", "AccountDashboard"),
}


def process_component(path: str, component: str, state_manager: Any) -> tuple[str, str] | None:
    step = COMPONENTS[component]()
    step.set_state_manager(state_manager)
    result = step.validate(None)
    if not result.valid:
        if component == "ValidateAccountApiCall" and (result.error or {}).get("details", {}).get(
            "retry"
        ):
            return "offer_secured", "HandleInput"
        return None
    if state_manager.is_awaiting_input():
        return path, component
    return NEXT[(path, component, state_manager.get_component_result() or None)]


class WhatsAppFlowProcessor:
    """The bot's flow processor: components run until one waits for the member; every
    Exception of the flow is caught here (its error reply is built and never sent)."""

    MAX_STEPS = 30  # the bot has no bound: a login that always fails would loop forever

    def __init__(self, messaging_service: MessagingService, state_manager: Any) -> None:
        self.messaging, self.state_manager = messaging_service, state_manager
        if not hasattr(state_manager, "messaging") or state_manager.messaging is None:
            state_manager.messaging = messaging_service

    def process_message(self, payload: dict[str, Any]) -> Message | None:
        try:
            return self._process(payload)
        except Exception as error:
            return Message(TextContent(f"❌ {error}"))  # the view discards it

    def _process(self, payload: dict[str, Any]) -> None:
        sm = self.state_manager
        channel, message = extract(payload)
        if message is None:
            return None
        sm.initialize_channel(channel["type"], channel["identifier"], channel["mock_testing"])
        sm.set_incoming_message(message)
        text = message["text"].get("body", "").lower().strip() if message["type"] == "text" else ""
        if message["type"] == "text" and not text:
            return None
        if text in GREETINGS or not sm.get_state_value("component_data"):
            self._restart(message)
        path, component = sm.get_path(), sm.get_component()
        for _ in range(self.MAX_STEPS):
            step = process_component(path, component, sm)
            if step is None:  # a failed step: back to the login, as the bot does
                self._restart(sm.get_incoming_message())
                step = ("login", "Greeting")
            elif step == (path, component):
                return None
            else:
                sm.transition_flow(*step)
            path, component = step
        raise RuntimeError("the flow did not settle")

    def _restart(self, message: dict[str, Any] | None) -> None:
        sm = self.state_manager
        channel_type, channel_id = sm.get_channel_type(), sm.get_channel_id()
        sm.clear_all_state()
        sm.initialize_channel(channel_type, channel_id)
        if message:
            sm.set_incoming_message(message)
        sm.transition_flow("login", "Greeting")


def extract(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The channel and the message as the bot keeps them (only the first message)."""
    value = payload["entry"][0]["changes"][0]["value"]
    channel = {
        "type": "whatsapp",
        "identifier": value["contacts"][0]["wa_id"],
        "mock_testing": bool(value.get("metadata", {}).get("mock_testing")),
    }
    messages = value.get("messages") or []
    if "statuses" in value or not messages or not messages[0].get("from"):
        return channel, None
    message = messages[0]
    if message["type"] == "text":
        return channel, {"type": "text", "text": {"body": message["text"].get("body", "")}}
    reply = message.get("interactive", {})
    if reply.get("type") == "button_reply":
        button = {**reply["button_reply"], "type": "reply"}
        return channel, {
            "type": "interactive",
            "text": {"interactive_type": "button", "button": button},
        }
    if reply.get("type") == "list_reply":
        chosen = reply["list_reply"]
        content = {"interactive_type": "list", "list_reply": chosen}
        return channel, {"type": "interactive", "text": content}
    return channel, None


# core.api.views: the webhook view
@dataclass
class JsonResponse:
    """What Django's JsonResponse carries that the tests read."""

    data: dict[str, Any]
    status: int = 200


class HttpStatus:
    HTTP_200_OK = 200
    HTTP_500_INTERNAL_SERVER_ERROR = 500


@dataclass
class Request:
    data: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def get_messaging_service(state_manager: Any, channel_type: str) -> MessagingService:
    if channel_type != "whatsapp":
        raise ValueError(f"Unsupported channel type: {channel_type}")
    return MessagingService(WhatsAppMessagingService(), state_manager)


def bot_store_tail(
    request: Request, channel_type: str, channel_id: str, is_mock_testing: bool
) -> JsonResponse:
    """What the bot's view does once it knows the channel, on its own store (the lines
    docs/adopting.md replaces)."""
    state_manager = WhatsAppStateManager(StateManager(f"channel:{channel_id}"))
    state_manager.initialize_channel(channel_type, channel_id, is_mock_testing)
    try:
        service = get_messaging_service(state_manager, channel_type)
        WhatsAppFlowProcessor(service, state_manager).process_message(request.data)
        return JsonResponse({"message": "received"})
    except Exception as error:
        return JsonResponse({"error": str(error)}, status=500)


class Views:
    """``CredexCloudApiWebhook.post``: checks the payload, then the module's tail."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module

    def post(self, request: Request) -> JsonResponse:
        received = JsonResponse({"message": "received"})
        try:
            changes = (request.data.get("entry") or [{}])[0].get("changes") or []
            value = changes[0].get("value") if changes else None
            if not isinstance(value, dict) or value.get("messaging_product") != "whatsapp":
                return received
            is_mock_testing = request.headers.get("X-Mock-Testing") == "true"
            if is_mock_testing:
                value.setdefault("metadata", {})["mock_testing"] = True
            if value.get("statuses") or not value.get("contacts"):
                return received
            channel_id = value["contacts"][0].get("wa_id")
            if not channel_id:
                return received
            tail: Callable[..., JsonResponse] = self.module.handle_after_channel
            return tail(request, "whatsapp", channel_id, is_mock_testing)
        except Exception as error:
            return JsonResponse({"error": str(error)}, status=500)


# WhatsApp webhook payloads


def payload(wa_id: str, message_id: str, message: dict[str, Any]) -> dict[str, Any]:
    body = {"id": message_id, "from": wa_id, "timestamp": "1741944413", **message}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1234"},
        "contacts": [{"profile": {"name": "Tendai"}, "wa_id": wa_id}],
        "messages": [body],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"value": value, "field": "messages"}]}],
    }


def status_update(wa_id: str) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "contacts": [{"wa_id": wa_id}],
        "statuses": [{"id": "wamid.sent", "status": "read", "recipient_id": wa_id}],
    }
    return {"entry": [{"changes": [{"value": value}]}]}


def text(body: str) -> dict[str, Any]:
    return {"type": "text", "text": {"body": body}}


def chosen(option: str, title: str = "") -> dict[str, Any]:
    reply = {"id": option, "title": title or option}
    return {"type": "interactive", "interactive": {"type": "list_reply", "list_reply": reply}}


def button(button_id: str, title: str = "") -> dict[str, Any]:
    reply = {"type": "button_reply", "button_reply": {"id": button_id, "title": title or button_id}}
    return {"type": "interactive", "interactive": reply}


# Reading what the bot sent
def body_of(sent: dict[str, Any]) -> str:
    if sent["type"] == "text":
        return str(sent["text"]["body"])
    return str(sent["interactive"]["body"]["text"])


def rows_of(sent: dict[str, Any]) -> list[str]:
    sections = sent["interactive"]["action"]["sections"]
    return [row["id"] for section in sections for row in section["rows"]]


def buttons_of(sent: dict[str, Any]) -> list[str]:
    return [b["reply"]["id"] for b in sent["interactive"]["action"]["buttons"]]


# The bot's module names, and the whole app
MODULES: dict[str, dict[str, Any]] = {
    "core": {},
    "core.error": {},
    "core.error.exceptions": {
        "SystemException": SystemException,
        "ComponentException": ComponentException,
    },
    "core.error.types": {"ValidationResult": ValidationResult},
    "core.messaging": {},
    "core.messaging.types": {
        "Button": Button,
        "Section": Section,
        "Message": Message,
        "MessageRecipient": MessageRecipient,
        "TextContent": TextContent,
        "InteractiveContent": InteractiveContent,
        "InteractiveType": InteractiveType,
        "MessageType": MessageType,
    },
    "core.messaging.base": {"BaseMessagingService": BaseMessagingService},
    "core.messaging.service": {"MessagingService": MessagingService},
    "core.state": {},
    "core.state.interface": {"StateManagerInterface": StateManagerInterface},
    "core.state.manager": {"StateManager": StateManager},
    "core.api": {},
    "core.api.api_response": {"update_state_from_response": update_state_from_response},
    "core.api.base": {
        "make_api_request": make_api_request,
        "handle_api_response": handle_api_response,
    },
    "core.components": dict(COMPONENTS),
    "core.components.api": {},
    "core.components.api.create_credex_api_call": {
        "CreateCredexApiCall": CreateCredexApiCall,
        "ApiComponent": ApiComponent,
        "ValidationResult": ValidationResult,
        "make_api_request": make_api_request,
        "handle_api_response": handle_api_response,
    },
    "core.api.views": {
        "StateManager": StateManager,
        "WhatsAppStateManager": WhatsAppStateManager,
        "WhatsAppFlowProcessor": WhatsAppFlowProcessor,
        "MessagingService": MessagingService,
        "JsonResponse": JsonResponse,
        "status": HttpStatus,
        "get_messaging_service": get_messaging_service,
        "handle_after_channel": bot_store_tail,
    },
    "services": {},
    "services.whatsapp": {},
    "services.whatsapp.state_manager": {"StateManager": WhatsAppStateManager},
    "services.whatsapp.service": {"WhatsAppMessagingService": WhatsAppMessagingService},
    "services.whatsapp.flow_processor": {"WhatsAppFlowProcessor": WhatsAppFlowProcessor},
}


class BotApp:
    """The bot, wired to a fake Credex and a fake Graph API; ``installed()`` gives it its
    module names while the test runs."""

    def __init__(self, credex: FakeCredex, graph: GraphApi | None = None) -> None:
        self.credex = credex
        self.graph = graph or GraphApi()
        self.modules: dict[str, types.ModuleType] = {}

    @contextmanager
    def installed(self) -> Iterator[BotApp]:
        taken = [name for name in MODULES if name in sys.modules]
        assert not taken, f"modules already imported under the bot's names: {taken}"
        CredexHttp.credex, WhatsAppMessagingService.graph = self.credex, self.graph
        StateManager.documents = {}
        for name, attributes in MODULES.items():
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            module.__path__ = []  # every name may be a package of the next
            self.modules[name] = sys.modules[name] = module
        try:
            yield self
        finally:
            for name in MODULES:
                sys.modules.pop(name, None)

    def paste(self, module: str, source: str, filename: str) -> None:
        """Run ``source`` as if pasted into the bot's ``module`` (its globals)."""
        exec(compile(source, filename, "exec"), self.modules[module].__dict__)

    def view(self) -> Views:
        return Views(self.modules["core.api.views"])

    def deliver(
        self, wa_id: str, message_id: str, message: dict[str, Any], **headers: str
    ) -> JsonResponse:
        """One webhook POST to /bot/webhook."""
        return self.view().post(Request(payload(wa_id, message_id, message), headers))

    def sent_to(self, wa_id: str) -> list[dict[str, Any]]:
        return [m for m in self.graph.sent.all() if m["to"] == wa_id]

    def bodies(self, wa_id: str) -> list[str]:
        return [body_of(m) for m in self.sent_to(wa_id)]
