"""A miniature of the VimbisoPay bot's flow, written against its StateManager interface only.

Its components behave like the live bot's (Great-Sun-Group/vimbiso-chatserver: login with
Credex, the account dashboard, the secured offer: amount, handle, validation, confirmation,
createCredex) and reach state only through ``get_state_value``, ``update_state``,
``transition_flow`` and the other StateManager calls, so that playing messages through it
exercises ``vimbiso_state.integrations.vimbiso_bot.BotState`` the way the real bot would.
Credex is a fake that counts its calls.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

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


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeCredex:
    """The Credex API's answers, shaped as the bot receives them ({"data": {...}})."""

    HANDLES: ClassVar[dict[str, dict[str, str]]] = {
        "bob_store": {"accountID": "acc-bob", "accountName": "Bob Store"}
    }

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self.logins = 0
        self.created: list[tuple[dict[str, Any], str]] = []
        self.token = ""

    def login(self, phone: str) -> dict[str, Any]:
        self.logins += 1
        exp = int((self._now() + timedelta(hours=1)).timestamp())
        self.token = jwt({"sub": "mem-1", "phone": phone, "login": self.logins, "exp": exp})
        return {
            "data": {
                "dashboard": {"member": dict(MEMBER), "accounts": [account("150.00 USD")]},
                "action": {
                    "id": "act-login",
                    "type": "MEMBER_FOUND",
                    "timestamp": "2025-03-14T09:26:53Z",
                    "actor": "mem-1",
                    "details": {"token": self.token},
                },
            }
        }

    def get_account_by_handle(self, handle: str) -> dict[str, Any]:
        found = self.HANDLES.get(handle)
        kind = "ACCOUNT_FOUND" if found else "ERROR_NOT_FOUND"
        return {"data": {"action": {"type": kind, "details": dict(found or {})}}}

    def create_credex(self, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        self.created.append((payload, idempotency_key))
        pending = {
            "credexID": "cx-1",
            "formattedInitialAmount": f"{float(payload['InitialAmount']):.2f} USD",
            "counterpartyAccountName": "Bob Store",
        }
        return {
            "data": {
                "action": {"id": "cx-1", "type": "CREDEX_CREATED", "details": {}},
                "dashboard": {
                    "member": dict(MEMBER),
                    "accounts": [account("125.00 USD", [pending])],
                },
            }
        }


class Outbox:
    """The bot's messaging service: what it would send to WhatsApp."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fail_on: str | None = None

    def send_text(self, text: str) -> None:
        if self.fail_on and self.fail_on in text:
            self.fail_on = None
            raise ConnectionError("WhatsApp's API did not answer")
        self.texts.append(text)

    def send_interactive(self, body: str, **options: Any) -> None:
        self.send_text(body)


# WhatsApp webhook payloads, and the message the bot extracts from one.
def payload(wa_id: str, message_id: str, message: dict[str, Any]) -> dict[str, Any]:
    body = {"id": message_id, "from": wa_id, **message}
    value = {"messaging_product": "whatsapp", "contacts": [{"wa_id": wa_id}], "messages": [body]}
    return {"entry": [{"changes": [{"value": value}]}]}


def text(body: str) -> dict[str, Any]:
    return {"type": "text", "text": {"body": body}}


def chosen(option: str) -> dict[str, Any]:
    return {
        "type": "interactive",
        "interactive": {"type": "list_reply", "list_reply": {"id": option}},
    }


def button(button_id: str) -> dict[str, Any]:
    reply = {"type": "button_reply", "button_reply": {"id": button_id}}
    return {"type": "interactive", "interactive": reply}


def extract(webhook: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The wa_id and the message as the bot's flow processor keeps it in component_data."""
    value = webhook["entry"][0]["changes"][0]["value"]
    message = value["messages"][0]
    if message["type"] == "text":
        kept = {"type": "text", "text": {"body": message["text"]["body"]}}
    else:
        reply = message["interactive"]
        if reply["type"] == "list_reply":
            content = {"interactive_type": "list", "list_reply": reply["list_reply"]}
        else:
            content = {"interactive_type": "button", "button": reply["button_reply"]}
        kept = {"type": "interactive", "text": content}
    return value["contacts"][0]["wa_id"], kept


GREETINGS = {"hi", "hello", "mhoro", "makadii", "sawubona"}
AMOUNT_PROMPT = "Offer how much? Defaults to USD, or ZWG 99.99 or 9.99 ZWG"
HANDLE_PROMPT = "What's the account handle?"
DENOMINATIONS = {"USD", "ZWG", "XAU", "CAD", "CXX"}

Component = Callable[[Any, FakeCredex], bool]  # True: move on; False: wait for the member


def _typed(state: Any) -> str:
    message = state.get_incoming_message() or {}
    return (
        str(message.get("text", {}).get("body", "")).strip()
        if message.get("type") == "text"
        else ""
    )


def apply_response(state: Any, response: dict[str, Any]) -> None:
    """The bot's handle_api_response: dashboard, action and the token into state."""
    data = response.get("data", {})
    update: dict[str, Any] = {}
    if "dashboard" in data:
        update["dashboard"] = data["dashboard"]
    if "action" in data:
        update["action"] = data["action"]
        token = data["action"].get("details", {}).get("token")
        if token:
            update["auth"] = {"token": token}
    state.update_state(update)


def greeting(state: Any, credex: FakeCredex) -> bool:
    state.messaging.send_text("Welcome to VimbisoPay, connecting you to Credex...")
    return True


def login(state: Any, credex: FakeCredex) -> bool:
    apply_response(state, credex.login(state.get_channel_id()))
    accounts = state.get_state_value("dashboard", {}).get("accounts", [])
    personal = next(a for a in accounts if a.get("accountType") == "PERSONAL")
    state.update_state({"active_account_id": personal["accountID"]})
    state.set_component_result("send_dashboard")
    return True


def dashboard(state: Any, credex: FakeCredex) -> bool:
    if not state.is_awaiting_input():
        board = state.get_state_value("dashboard")
        active = state.get_state_value("active_account_id")
        shown = next(a for a in board["accounts"] if a["accountID"] == active)
        lines = [shown["accountName"], shown["accountHandle"]]
        lines += shown["balanceData"]["securedNetBalancesByDenom"]
        member = board["member"]
        if member.get("memberTier", 0) < 3:  # a number, as Credex sent it
            lines.append(f"Daily Open Tier Limit {float(member['remainingAvailableUSD']):.2f} USD")
        if shown["pendingOutData"]:
            lines.append(f"{len(shown['pendingOutData'])} offer(s) pending")
        state.set_component_awaiting(True)
        state.messaging.send_interactive(body="\n".join(lines), sections=["offer_secured"])
        return False
    message = state.get_incoming_message() or {}
    choice = message.get("text", {}).get("list_reply", {}).get("id")
    if choice == "offer_secured":
        state.set_component_result(choice)
        state.set_component_awaiting(False)
        return True
    state.messaging.send_text("Invalid selection. Please choose from the available options.")
    return False


def amount_input(state: Any, credex: FakeCredex) -> bool:
    if not state.is_awaiting_input():
        state.messaging.send_text(AMOUNT_PROMPT)
        state.set_component_awaiting(True)
        return False
    parts = _typed(state).upper().split()
    try:
        if len(parts) == 1:
            amount, denom = float(parts[0]), "USD"
        elif len(parts) == 2 and parts[0] in DENOMINATIONS:
            amount, denom = float(parts[1]), parts[0]
        elif len(parts) == 2:
            amount, denom = float(parts[0]), parts[1]
        else:
            raise ValueError(parts)
    except ValueError:
        state.messaging.send_text("Invalid amount format")  # same question, still awaiting
        return False
    if denom not in DENOMINATIONS or amount <= 0:
        state.messaging.send_text("Invalid amount format")
        return False
    state.update_component_data({"amount": str(amount), "denom": denom})
    state.set_component_awaiting(False)
    return True


def handle_input(state: Any, credex: FakeCredex) -> bool:
    if not state.is_awaiting_input():
        state.messaging.send_text(HANDLE_PROMPT)
        state.set_component_awaiting(True)
        return False
    state.update_component_data({"handle": _typed(state)})
    state.set_component_awaiting(False)
    return True


def validate_account(state: Any, credex: FakeCredex) -> bool:
    handle = state.get_state_value("component_data", {}).get("data", {}).get("handle")
    response = credex.get_account_by_handle(handle)
    apply_response(state, response)
    if response["data"]["action"]["type"] == "ERROR_NOT_FOUND":
        state.messaging.send_text("Oops, that accountHandle doesn't exist. Please try again.")
        state.update_component_data({"handle": None})
        state.set_component_result("return_to_handle")
    return True


def confirm_offer(state: Any, credex: FakeCredex) -> bool:
    offer = state.get_state_value("component_data", {}).get("data", {})
    if not state.is_awaiting_input():
        target = state.get_state_value("action", {}).get("details", {})
        state.messaging.send_interactive(
            body=f"Offer {float(offer['amount']):.2f} {offer['denom']} to "
            f"{target['accountName']} ({offer['handle']})?",
            buttons=["confirm", "cancel"],
        )
        state.set_component_awaiting(True)
        return False
    message = state.get_incoming_message() or {}
    pressed = message.get("text", {}).get("button", {}).get("id")
    if pressed not in ("confirm", "cancel"):
        state.messaging.send_text("Please use the Confirm or Cancel button")
        return False
    state.update_component_data({"confirmed": pressed == "confirm"})
    state.set_component_result(None if pressed == "confirm" else "cancelled")
    state.set_component_awaiting(False)
    return True


def create_credex_offer(state: Any, credex: FakeCredex) -> dict[str, Any]:
    """The createCredex call, at most once per message (replaced by the docs' version)."""
    offer = state.get_state_value("component_data", {}).get("data", {})
    payload = {
        "issuerAccountID": state.get_state_value("active_account_id"),
        "receiverAccountID": state.get_state_value("action", {})["details"]["accountID"],
        "Denomination": offer["denom"],
        "InitialAmount": offer["amount"],
    }
    key = state.idempotency_key("create_credex")
    result: dict[str, Any] = state.effect(
        "create_credex", lambda: credex.create_credex(payload, key)
    )
    return result


class MiniBot:
    """The bot's flow processor: runs components until one waits for the member."""

    def __init__(
        self,
        messaging: Any,
        state: Any,
        credex: FakeCredex,
        create: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.messaging = messaging
        self.state = state
        self.credex = credex
        self.create = create or create_credex_offer
        self.components: dict[str, Component] = {
            "Greeting": greeting,
            "LoginApiCall": login,
            "AccountDashboard": dashboard,
            "AmountInput": amount_input,
            "HandleInput": handle_input,
            "ValidateAccountApiCall": validate_account,
            "ConfirmOfferSecured": confirm_offer,
            "CreateCredexApiCall": self._create,
        }

    def _create(self, state: Any, credex: FakeCredex) -> bool:
        apply_response(state, self.create(state, credex))
        state.messaging.send_text("Secured credex offered")
        flow = state.get_state_value("component_data", {})
        state.update_flow_state(flow["path"], flow["component"], data={})
        state.set_component_result("show_dashboard")
        return True

    @staticmethod
    def next_step(path: str, component: str, result: str | None) -> tuple[str, str]:
        steps = {
            ("login", "Greeting"): ("login", "LoginApiCall"),
            ("login", "LoginApiCall"): ("account", "AccountDashboard"),
            ("offer_secured", "AmountInput"): ("offer_secured", "HandleInput"),
            ("offer_secured", "HandleInput"): ("offer_secured", "ValidateAccountApiCall"),
            ("offer_secured", "CreateCredexApiCall"): ("account", "AccountDashboard"),
        }
        if (path, component) == ("account", "AccountDashboard"):
            return ("offer_secured", "AmountInput")
        if component == "ValidateAccountApiCall":
            target = "HandleInput" if result == "return_to_handle" else "ConfirmOfferSecured"
            return ("offer_secured", target)
        if component == "ConfirmOfferSecured":
            if result == "cancelled":
                return ("account", "AccountDashboard")
            return ("offer_secured", "CreateCredexApiCall")
        return steps[(path, component)]

    def process_message(self, webhook: dict[str, Any]) -> None:
        """What the bot's FlowProcessor.process_message does with a webhook's payload."""
        state = self.state
        wa_id, message = extract(webhook)
        state.initialize_channel("whatsapp", wa_id, mock_testing=False)
        state.set_incoming_message(message)
        if _typed(state).lower() in GREETINGS or not state.get_path():
            state.clear_all_state()
            state.initialize_channel("whatsapp", wa_id)
            state.set_incoming_message(message)
            state.transition_flow("login", "Greeting")
        while True:
            path, component = state.get_path(), state.get_component()
            if not self.components[component](state, self.credex):
                return
            result = state.get_component_result()
            state.transition_flow(*self.next_step(path, component, result))


def processor_of(credex: FakeCredex, create: Callable[..., Any] | None = None) -> Any:
    """The bot's WhatsAppFlowProcessor class, as the webhook view uses it."""
    return lambda messaging, state: MiniBot(messaging, state, credex, create)
