"""Running the code of README.md and docs/ as written.

The blocks are taken from the Markdown files, unchanged: a block that names its file
(``# bot.py``) is written to that file and imported, so that ``from bot import ...`` in the
next block works as it does for a user; the others are exec'd. The only things a test
replaces are the functions the docs present as the network calls (``credex_*`` and
``send_whatsapp``). Webhook payloads are those of the WhatsApp Cloud API.

The scenarios are written once here and run by tests/unit (memory backend) and
tests/integration (Redis).
"""

from __future__ import annotations

import asyncio
import importlib
import random
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlencode

import pytest
from vimbiso_bot_double import body_of, buttons_of, rows_of

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "webhook-guide.md"
BUSINESS_NUMBER = "15550783881"
VERIFY_TOKEN = "verify-me"

MEMBER = {"memberID": "mem-1", "firstname": "Tendai", "lastname": "Moyo", "memberTier": 3}
ACCOUNTS = [
    {"accountID": "acc-1", "accountHandle": "tendai", "accountType": "PERSONAL"},
    {"accountID": "acc-2", "accountHandle": "moyo_hw", "accountType": "BUSINESS"},
]

# Every variable the examples read; each test starts from none of them set.
EXAMPLE_ENVIRONMENT = (
    "MYCREDEX_APP_URL",
    "CLIENT_API_KEY",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
    "WHATSAPP_TOKEN",
)


# Blocks
def python_blocks(path: Path) -> list[str]:
    return python_blocks_in(path.read_text(encoding="utf-8"))


def named_block(path: Path, name: str) -> str:
    """The python block whose first line is ``# name`` (as in ``# bot.py``)."""
    found = [b for b in python_blocks(path) if re.match(rf"# {re.escape(name)}\b", b)]
    assert len(found) == 1, f"{path.name}: {len(found)} python blocks named {name}"
    return found[0]


def block_after(path: Path, heading: str, index: int = 0) -> str:
    """The index-th python block after a heading (or any other text) of the file."""
    text = path.read_text(encoding="utf-8")
    assert heading in text, f"{path.name} has no {heading!r}"
    return python_blocks_in(text[text.index(heading) :])[index]


def python_blocks_in(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def run_block(source: str, filename: str) -> dict[str, Any]:
    """Run a block as a script; its globals, so that a test can replace its functions."""
    scope: dict[str, Any] = {"__name__": "doc_example"}
    exec(compile(source, filename, "exec"), scope)
    return scope


def import_files(
    directory: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> dict[str, ModuleType]:
    """Write each block to ``<name>.py`` and import them in order, as fresh modules."""
    monkeypatch.syspath_prepend(str(directory))
    for name in files:
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    modules = {}
    for name, source in files.items():
        (directory / f"{name}.py").write_text(source, encoding="utf-8")
        modules[name] = importlib.import_module(name)
    # The next test imports its own copies.
    for name in files:
        monkeypatch.delitem(sys.modules, name, raising=False)
    return modules


# Environment
def configure(
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    redis_url: str | None = None,
    token_key: str | None = None,
    **settings: str,
) -> None:
    """The environment a deployed bot has: STATE_* for the library, the examples' own."""
    from vimbiso_state.services.config import ENVIRONMENT

    for variable in (*ENVIRONMENT.values(), *EXAMPLE_ENVIRONMENT):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("STATE_BACKEND", backend)
    if redis_url is not None:
        monkeypatch.setenv("REDIS_STATE_URL", redis_url)
    if token_key is not None:
        monkeypatch.setenv("STATE_TOKEN_KEYS", token_key)
    for name, value in settings.items():
        monkeypatch.setenv(ENVIRONMENT[name], value)
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
    # Where the real calls would go; nothing listens there, and nothing may call it.
    monkeypatch.setenv("MYCREDEX_APP_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CLIENT_API_KEY", "test-key")
    monkeypatch.setenv("WHATSAPP_PHONE_NUMBER_ID", "106540352242922")
    monkeypatch.setenv("WHATSAPP_TOKEN", "test-token")


def track_containers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The containers the examples build with Container.from_env(), so that a test can
    close their Redis clients (an example keeps only the service it builds)."""
    from vimbiso_state import Container

    built: list[Any] = []
    build = Container.from_env

    def from_env(environ: Any = None) -> Any:
        container = build(environ)
        built.append(container)
        return container

    monkeypatch.setattr(Container, "from_env", from_env)
    return built


def close_clients(containers: list[Any]) -> None:
    for container in containers:
        container.close()


async def close_async_clients(containers: list[Any]) -> None:
    """Close the asyncio clients on the loop that used them (and the blocking ones)."""
    for container in containers:
        await container.aclose()


def new_sender() -> str:
    """A Zimbabwean mobile number as WhatsApp's ``from`` gives it (digits, no +), one per
    test: tests on a shared Redis never meet another run's users."""
    return f"26377{random.randrange(10**6, 10**7)}"


# WhatsApp Cloud API webhooks
def webhook(*messages: dict[str, Any], statuses: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A webhook as the Cloud API POSTs it: messages and status callbacks in one change."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": BUSINESS_NUMBER, "phone_number_id": "106540352242922"},
    }
    if messages:
        value["contacts"] = [
            {"profile": {"name": "Tendai"}, "wa_id": sender}
            for sender in dict.fromkeys(m["from"] for m in messages)
        ]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def _message(sender: str, message_id: str, kind: str) -> dict[str, Any]:
    return {"from": sender, "id": message_id, "timestamp": str(int(time.time())), "type": kind}


def text_message(sender: str, message_id: str, body: str) -> dict[str, Any]:
    return {**_message(sender, message_id, "text"), "text": {"body": body}}


def button_reply(sender: str, message_id: str, button_id: str, title: str) -> dict[str, Any]:
    return {
        **_message(sender, message_id, "interactive"),
        "context": {"from": BUSINESS_NUMBER, "id": "wamid.prompt"},
        "interactive": {"type": "button_reply", "button_reply": {"id": button_id, "title": title}},
    }


def list_reply(
    sender: str, message_id: str, row_id: str, title: str, description: str
) -> dict[str, Any]:
    return {
        **_message(sender, message_id, "interactive"),
        "context": {"from": BUSINESS_NUMBER, "id": "wamid.prompt"},
        "interactive": {
            "type": "list_reply",
            "list_reply": {"id": row_id, "title": title, "description": description},
        },
    }


def status(recipient: str, message_id: str, state: str) -> dict[str, Any]:
    """A status callback (sent, delivered, read): it carries no message."""
    return {
        "id": message_id,
        "status": state,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
        "conversation": {"id": "conv-1", "origin": {"type": "service"}},
        "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"},
    }


def wamid() -> str:
    return f"wamid.HBgM{random.randrange(16**20):020X}"


# Fakes of the network calls the docs show
@dataclass
class FakeCredex:
    """Stands in for the examples' credex_* functions: Credex's side, with the offers it
    holds, and every call the bot made."""

    logins: list[str] = field(default_factory=list)
    created: list[tuple[Any, ...]] = field(default_factory=list)  # createCredex calls
    offers: list[dict[str, Any]] = field(default_factory=list)  # the offers Credex holds
    dashboards: int = 0  # reads of the member's dashboard
    failure: BaseException | None = None  # raised by the next calls that create something
    fail_after_creating: bool = False  # ... once Credex has acted (its answer is lost)
    delay: float = 0.0
    waiting_in: list[str] = field(default_factory=lambda: ["cx-a", "cx-b"])  # offers to accept
    accepted: list[str] = field(default_factory=list)
    acceptances: int = 0
    accept_at_most: int | None = None  # an acceptance that fails after accepting this many

    def login(self, phone: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        self.logins.append(phone)
        return dict(MEMBER), [dict(a) for a in ACCOUNTS], f"jwt-{len(self.logins)}"

    def create(self, token: str, request: dict[str, Any]) -> dict[str, Any]:
        """createCredex: the request becomes an offer pending out of the member's account."""
        self.created.append((token, request))
        time.sleep(self.delay)
        if self.failure is not None and not self.fail_after_creating:
            raise self.failure
        offer = {
            "credexID": f"cx-{len(self.offers) + 1}",
            "formattedInitialAmount": f"-{request['InitialAmount']:.2f} {request['Denomination']}",
            "counterpartyAccountName": request["receiverAccountHandle"],
        }
        self.offers.append(offer)
        if self.failure is not None:
            raise self.failure
        return {"credexID": offer["credexID"]}

    def pending_out(self, phone: str, token: str, account_id: str) -> list[dict[str, Any]]:
        """The member's dashboard: the offers pending out of the account."""
        assert account_id == ACCOUNTS[0]["accountID"]
        self.dashboards += 1
        return [dict(offer) for offer in self.offers]

    async def waiting_async(self, phone: str) -> list[str]:
        self.dashboards += 1
        return list(self.waiting_in)

    async def accept_async(self, credex_ids: list[str]) -> list[str]:
        """acceptCredexBulk: accepting an offer accepted before changes nothing."""
        self.acceptances += 1
        done = []
        for credex_id in credex_ids:
            if self.accept_at_most is not None and len(done) == self.accept_at_most:
                assert self.failure is not None
                raise self.failure
            if credex_id in self.waiting_in:
                self.waiting_in.remove(credex_id)
                self.accepted.append(credex_id)
            done.append(credex_id)
        return done


class Outbox:
    """Stands in for send_whatsapp; replies may be sent from other threads (Flask's pool)."""

    def __init__(self) -> None:
        self._sent: list[tuple[str, Any]] = []
        self._taken = 0
        self._changed = threading.Condition()

    def send(self, phone: str, reply: Any) -> None:
        with self._changed:
            self._sent.append((phone, reply))
            self._changed.notify_all()

    async def send_async(self, phone: str, reply: Any) -> None:
        self.send(phone, reply)

    def take(self, count: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
        """The next ``count`` replies, once sent; more than that is an error."""
        with self._changed:
            wanted = self._taken + count
            assert self._changed.wait_for(lambda: len(self._sent) >= wanted, timeout), (
                f"expected {count} more replies, got {self._sent[self._taken :]}"
            )
            if count == 0:  # give a stray reply a moment to show up
                self._changed.wait(0.05)
            taken = self._sent[self._taken : wanted]
            assert len(self._sent) == wanted, f"unexpected replies: {self._sent[wanted:]}"
            self._taken = wanted
            return taken


# Scenarios
class Client(Protocol):
    """What Flask's test client and httpx's (FastAPI's TestClient) have in common."""

    def get(self, url: str) -> Any: ...

    def post(self, url: str, *, json: Any) -> Any: ...


def choices_of(reply: dict[str, Any]) -> list[str]:
    """The ids a user can tap in an interactive reply."""
    return buttons_of(reply) if reply["interactive"]["type"] == "button" else rows_of(reply)


def text_of(response: Any) -> str:
    return response.text if hasattr(response, "text") else response.get_data(as_text=True)


@contextmanager
def guide_fakes(
    monkeypatch: pytest.MonkeyPatch, bot: ModuleType, app: ModuleType
) -> Iterator[tuple[FakeCredex, Outbox]]:
    """The guide's network calls replaced, in the modules that use them."""
    credex, outbox = FakeCredex(), Outbox()
    monkeypatch.setattr(bot, "credex_login", credex.login)
    monkeypatch.setattr(bot, "credex_create_offer", credex.create)
    monkeypatch.setattr(bot, "credex_pending_offers", credex.pending_out)
    monkeypatch.setattr(bot, "send_whatsapp", outbox.send)
    monkeypatch.setattr(app, "send_whatsapp", outbox.send)  # `from bot import send_whatsapp`
    yield credex, outbox


def guide_offer_conversation(
    client: Client, bot: ModuleType, credex: FakeCredex, outbox: Outbox
) -> None:
    """A whole offer through the guide's app: text, list and button replies, status
    callbacks, and redeliveries of a menu choice and of the signature."""
    phone = new_sender()

    def post(*messages: dict[str, Any], replies: int) -> list[Any]:
        response = client.post("/webhook", json=webhook(*messages))
        assert response.status_code == 200, text_of(response)
        return [reply for _, reply in outbox.take(replies)]

    # Meta's subscription handshake.
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = client.get("/webhook?" + urlencode(query))
    assert (response.status_code, text_of(response)) == (200, "1158201444")
    response = client.get("/webhook?" + urlencode({**query, "hub.verify_token": "guess"}))
    assert response.status_code == 403

    # Status callbacks carry no message: nothing is handled, nothing is sent.
    response = client.post("/webhook", json=webhook(statuses=(status(phone, wamid(), "read"),)))
    assert response.status_code == 200
    outbox.take(0)

    (welcome,) = post(text_message(phone, wamid(), "hi"), replies=1)
    assert body_of(welcome) == "Welcome to VimbisoPay, Tendai!"
    assert choices_of(welcome) == ["offer", "accounts"]
    assert credex.logins == [phone]

    choice = text_message(phone, wamid(), "1")
    (question,) = post(choice, replies=1)
    assert body_of(question) == bot.QUESTIONS["amount"]
    # WhatsApp delivers the "1" again: a duplicate, not the offer's amount.
    assert post(choice, replies=0) == []
    form = bot.state.start(phone).form
    assert form is not None and form.values == {}

    (again,) = post(text_message(phone, wamid(), "a lot"), replies=1)
    assert body_of(again).startswith("Sorry, enter an amount like 100")
    (question,) = post(text_message(phone, wamid(), "USD 25"), replies=1)
    assert body_of(question) == bot.QUESTIONS["recipient"]
    (confirm,) = post(text_message(phone, wamid(), "bob_store"), replies=1)
    assert body_of(confirm) == "Offer 25 USD to bob_store?"
    assert choices_of(confirm) == ["sign", "cancel"]

    signature = button_reply(phone, wamid(), "sign", "Sign and send")
    (sent,) = post(signature, replies=1)
    assert body_of(sent) == "Sent: 25 USD to bob_store."
    ((token, request),) = credex.created
    assert token == "jwt-1"
    assert request == {
        "issuerAccountID": "acc-1",
        "receiverAccountHandle": "bob_store",
        "Denomination": "USD",
        "InitialAmount": 25.0,
        "credexType": "PURCHASE",
        "OFFERSorREQUESTS": "OFFERS",
        "securedCredex": True,
    }
    assert post(signature, replies=0) == []  # a redelivered tap creates nothing
    assert len(credex.created) == 1
    assert credex.offers == [
        {
            "credexID": "cx-1",
            "formattedInitialAmount": "-25.00 USD",
            "counterpartyAccountName": "bob_store",
        }
    ]

    accounts = list_reply(phone, wamid(), "accounts", "My accounts", "Your Credex accounts")
    (listed,) = post(accounts, replies=1)
    assert body_of(listed) == "Your accounts: tendai, moyo_hw"

    # Several messages and a status in one webhook, each handled.
    response = client.post(
        "/webhook",
        json=webhook(
            list_reply(phone, wamid(), "offer", "Offer credex", "Send a credex offer"),
            text_message(phone, wamid(), "100 ZWG"),
            statuses=(status(phone, wamid(), "delivered"),),
        ),
    )
    assert response.status_code == 200
    assert [body_of(r) for _, r in outbox.take(2)] == [
        bot.QUESTIONS["amount"],
        bot.QUESTIONS["recipient"],
    ]
    conv = bot.state.start(phone)
    assert conv.form is not None and conv.form.values == {"amount": "100", "denomination": "ZWG"}
    assert credex.logins == [phone]  # the token is kept, encrypted, between messages

    # A greeting mid-form is back at the menu, not an answer; the form is kept.
    (greeted,) = post(text_message(phone, wamid(), "Salibonani"), replies=1)
    assert body_of(greeted) == "What would you like to do?"
    conv = bot.state.start(phone)
    assert conv.stage == "handle_action_menu" and conv.form is not None


def guide_reaches_confirmation(client: Client, outbox: Outbox, phone: str) -> None:
    """Login, the menu choice and the form's answers, up to the Sign and Cancel buttons."""
    for said in ("hi", "1", "USD 25", "bob_store"):
        response = client.post("/webhook", json=webhook(text_message(phone, wamid(), said)))
        assert response.status_code == 200, text_of(response)
        outbox.take(1)


def guide_user_busy(client: Client, bot: ModuleType, outbox: Outbox) -> None:
    """A message that waits too long for the user's previous one: 503, Retry-After, and the
    redelivery is handled once the user is free. Needs STATE_LEASE_WAIT small."""
    phone = new_sender()
    guide_reaches_confirmation(client, outbox, phone)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with bot.state.message(phone, wamid()):
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        tap = button_reply(phone, wamid(), "cancel", "Cancel")
        response = client.post("/webhook", json=webhook(tap))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        outbox.take(0)
    finally:
        done.set()
        holder.join()
    response = client.post("/webhook", json=webhook(tap))  # WhatsApp's redelivery
    assert response.status_code == 200
    (reply,) = (r for _, r in outbox.take(1))
    assert body_of(reply) == "Cancelled: nothing was sent."


def guide_lease_lost(client: Client, bot: ModuleType, credex: FakeCredex, outbox: Outbox) -> None:
    """Credex answers after the lease lapsed: 503 and nothing stored; the redelivery gets the
    offer that was created, without creating another. Needs STATE_LEASE_TTL below 1 s."""
    phone = new_sender()
    guide_reaches_confirmation(client, outbox, phone)
    signature = button_reply(phone, wamid(), "sign", "Sign and send")
    credex.delay = 1.2
    response = client.post("/webhook", json=webhook(signature))
    assert response.status_code == 503
    outbox.take(0)
    conv = bot.state.start(phone)
    assert conv.stage == bot.CONFIRM and conv.offer is not None and conv.offer.pending
    credex.delay = 0
    response = client.post("/webhook", json=webhook(signature))
    assert response.status_code == 200
    (reply,) = (r for _, r in outbox.take(1))
    assert body_of(reply) == "Sent: 25 USD to bob_store."
    assert len(credex.created) == len(credex.offers) == 1  # the recorded result, not a second
    assert bot.state.start(phone).stage == "handle_action_menu"


def guide_effect_in_doubt(
    client: Client,
    bot: ModuleType,
    credex: FakeCredex,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
    created: bool,
) -> None:
    """createCredex times out (after Credex created the offer, or before): the bot, which
    catches every exception, tells the member the offer is being checked and commits. The
    member's next taps meet the offer in doubt and create nothing; once no call can still be
    running, the dashboard settles it, and exactly one offer exists in the end."""
    import httpx

    phone = new_sender()

    def post(*messages: dict[str, Any]) -> str:
        response = client.post("/webhook", json=webhook(*messages))
        assert response.status_code == 200, text_of(response)
        (reply,) = (r for _, r in outbox.take(1))
        return body_of(reply)

    guide_reaches_confirmation(client, outbox, phone)
    credex.failure = httpx.ReadTimeout("Credex did not answer")
    credex.fail_after_creating = created
    signature = button_reply(phone, wamid(), "sign", "Sign and send")
    assert post(signature) == bot.CHECKING
    credex.failure = None
    response = client.post("/webhook", json=webhook(signature))  # a redelivery: handled
    assert response.status_code == 200
    outbox.take(0)
    # The member taps Sign again, then writes: new messages, the same offer in doubt.
    assert post(button_reply(phone, wamid(), "sign", "Sign and send")) == bot.CHECKING
    assert post(text_message(phone, wamid(), "1")) == bot.CHECKING
    assert len(credex.created) == 1
    (doubt,) = _in_doubt(bot, phone)
    assert doubt.name == "create_credex"

    monkeypatch.setattr(bot, "SETTLE_AFTER", timedelta(0))  # no call can still be running
    settled = post(text_message(phone, wamid(), "hi"))
    if created:
        assert settled == "Your offer of 25 USD to bob_store went through."
    else:
        assert settled == "Your offer of 25 USD to bob_store did not go through: nothing was sent."
        # The member makes the offer again: a new offer, a new intent.
        guide_reaches_confirmation(client, outbox, phone)
        assert post(button_reply(phone, wamid(), "sign", "Sign and send")) == (
            "Sent: 25 USD to bob_store."
        )
    assert _in_doubt(bot, phone) == ()
    assert len(credex.offers) == 1  # exactly one offer, whatever happened
    assert post(text_message(phone, wamid(), "2")) == "Your accounts: tendai, moyo_hw"


def guide_worker_killed_mid_offer(
    client: Client,
    bot: ModuleType,
    credex: FakeCredex,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credex is slower than the worker: gunicorn's timeout ends the sync worker (SystemExit,
    raised in the handler) after Credex created the offer. Nothing of the message is stored
    and WhatsApp delivers the tap again: the redelivery meets the offer in doubt, and once no
    call can still be running it is settled from the dashboard, with one offer."""
    phone = new_sender()
    guide_reaches_confirmation(client, outbox, phone)
    credex.failure, credex.fail_after_creating = SystemExit(1), True
    signature = button_reply(phone, wamid(), "sign", "Sign and send")
    with pytest.raises(SystemExit):
        client.post("/webhook", json=webhook(signature))
    outbox.take(0)
    credex.failure = None
    conv = bot.state.start(phone)
    assert conv.stage == bot.CONFIRM and conv.offer is not None and conv.offer.pending
    response = client.post("/webhook", json=webhook(signature))  # WhatsApp's redelivery
    assert response.status_code == 200
    (reply,) = (r for _, r in outbox.take(1))
    assert body_of(reply) == bot.CHECKING
    monkeypatch.setattr(bot, "SETTLE_AFTER", timedelta(0))
    response = client.post("/webhook", json=webhook(signature))  # handled: a duplicate now
    assert response.status_code == 200
    outbox.take(0)
    tap = button_reply(phone, wamid(), "sign", "Sign and send")
    response = client.post("/webhook", json=webhook(tap))  # the member taps again
    assert response.status_code == 200
    (reply,) = (r for _, r in outbox.take(1))
    assert body_of(reply) == "Your offer of 25 USD to bob_store went through."
    assert len(credex.created) == len(credex.offers) == 1
    assert bot.state.start(phone).stage == "handle_action_menu"


def _in_doubt(bot: ModuleType, phone: str) -> tuple[Any, ...]:
    """The member's effects in doubt, as a message sees them (a duplicate delivery)."""
    with bot.state.message(phone, "wamid.status-check") as msg:
        return msg.in_doubt


def readme_offer(scope: dict[str, Any]) -> None:
    """The README's example through a whole offer, with a redelivered menu choice; then an
    offer whose Credex call fails, which every later message hears is being checked."""
    created: list[dict[str, str]] = []
    failures: list[Exception] = []

    def credex_create_offer(offer: dict[str, str]) -> dict[str, str]:
        created.append(offer)
        if failures:
            raise failures[0]
        return {"credexID": f"cx-{len(created)}"}

    scope["credex_create_offer"] = credex_create_offer
    on_message = scope["on_whatsapp_message"]
    phone = "+" + new_sender()
    menu = "1. Offer credex  2. Accept offers"
    assert on_message(phone, wamid(), "hi") == menu
    choice = wamid()
    assert on_message(phone, choice, "1") == "How much do you want to offer?"
    assert on_message(phone, choice, "1") is None  # redelivered: not the amount
    reply = on_message(phone, wamid(), "a lot")
    assert reply is not None and reply.startswith("Sorry, amount: enter an amount like 100")
    assert reply.endswith("How much do you want to offer?")
    assert on_message(phone, wamid(), "USD 25") == "To whom? (a handle)"
    # A greeting mid-form is back at the menu (the form is kept), not an answer.
    assert on_message(phone, wamid(), "Mhoro") == menu
    assert on_message(phone, wamid(), "bob_store") == menu
    assert on_message(phone, wamid(), "1") == "How much do you want to offer?"
    assert on_message(phone, wamid(), "25") == "To whom? (a handle)"
    sign = wamid()
    assert on_message(phone, sign, "bob_store") == f"Offer cx-1 sent to bob_store. {menu}"
    assert on_message(phone, sign, "bob_store") is None
    assert created == [{"amount": "25", "denomination": "USD", "recipient": "bob_store"}]
    assert scope["state"].start(phone).form is None  # completed and closed

    assert on_message(phone, wamid(), "1") == "How much do you want to offer?"
    assert on_message(phone, wamid(), "40") == "To whom? (a handle)"
    failures.append(TimeoutError("Credex did not answer"))
    last = wamid()
    with pytest.raises(TimeoutError):  # the webhook answers 500: nothing is stored
        on_message(phone, last, "carol")
    failures.clear()
    assert on_message(phone, last, "carol") == scope["CHECKING"]  # WhatsApp's redelivery
    assert on_message(phone, wamid(), "carol") == scope["CHECKING"]  # and the next message
    assert len(created) == 2  # the offer in doubt was not created again


def readme_one_call(scope: dict[str, Any]) -> None:
    """The README's one-call example: a menu choice applied once per message id."""
    on_choice = scope["on_menu_choice"]
    phone = "+" + new_sender()
    menu = "1. Offer credex  2. Accept offers"
    assert on_choice(phone, wamid(), "hi") == f"You are at handle_action_menu. {menu}"
    choice = wamid()
    assert on_choice(phone, choice, "1") == "Now at handle_action_offer_credex."
    assert on_choice(phone, choice, "1") is None  # redelivered: applied once
    assert scope["state"].start(phone).menu == ["handle_action_menu"]


@contextmanager
def serve_guide(
    framework: str, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, ModuleType, Any]]:
    """The guide's bot.py and its Flask (app.py) or FastAPI (main.py) app, imported as
    written (configure() first), with a test client."""
    app_file = {"flask": "app", "fastapi": "main"}[framework]
    modules = import_files(
        directory,
        monkeypatch,
        {"bot": named_block(GUIDE, "bot.py"), app_file: named_block(GUIDE, f"{app_file}.py")},
    )
    bot, app = modules["bot"], modules[app_file]
    if framework == "flask":
        try:
            yield bot, app, app.app.test_client()
        finally:
            app.outbox.shutdown(wait=True)
        return
    client = AsgiClient(app.app)
    try:
        yield bot, app, client
    finally:
        client.close()


class AsgiClient:
    """A blocking client for an ASGI app, through httpx's ASGITransport on one event loop
    (what Starlette's TestClient does, without its dependency on a particular httpx)."""

    def __init__(self, app: Any) -> None:
        import httpx

        self._runner = asyncio.Runner()
        # A 500 is what WhatsApp sees when the handler raises: answer it, do not raise it.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def get(self, url: str) -> Any:
        return self._runner.run(self._client.get(url))

    def post(self, url: str, *, json: Any) -> Any:
        return self._runner.run(self._client.post(url, json=json))

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()


async def guide_async_app(
    client: Any, module: ModuleType, credex: FakeCredex, outbox: Outbox
) -> None:
    """The guide's asyncio app (httpx on its ASGI app): text, taps it does not handle,
    statuses, a redelivery, an acceptance in doubt settled from the dashboard, a busy user."""
    import httpx

    phone = new_sender()
    menu = module.MENU

    async def post(*messages: dict[str, Any], replies: int) -> list[Any]:
        response = await client.post("/webhook", json=webhook(*messages))
        assert response.status_code == 200, response.text
        return [reply for _, reply in outbox.take(replies)]

    response = await client.post(
        "/webhook", json=webhook(statuses=(status(phone, wamid(), "sent"),))
    )
    assert response.status_code == 200
    outbox.take(0)
    assert await post(text_message(phone, wamid(), "hi"), replies=1) == [menu]
    # This app reads text only: taps are answered 200 and otherwise ignored.
    assert await post(button_reply(phone, wamid(), "sign", "Sign and send"), replies=0) == []
    row = list_reply(phone, wamid(), "offer", "Offer credex", "Send a credex offer")
    assert await post(row, replies=0) == []

    accept = text_message(phone, wamid(), "2")
    assert await post(accept, replies=1) == [f"Accepted 2 offers. {menu}"]
    assert await post(accept, replies=0) == []  # redelivered: accepted once
    assert (credex.acceptances, credex.accepted) == (1, ["cx-a", "cx-b"])

    # Two new offers: Credex accepts the first, then its answer times out.
    credex.waiting_in = ["cx-c", "cx-d"]
    credex.failure, credex.accept_at_most = httpx.ReadTimeout("Credex did not answer"), 1
    doubtful = text_message(phone, wamid(), "2")
    checking = f"We are checking whether your offers were accepted. {menu}"
    assert await post(doubtful, replies=1) == [checking]
    credex.failure = credex.accept_at_most = None
    assert await post(doubtful, replies=0) == []  # handled: a duplicate
    # The member's next message settles it from the dashboard, without accepting again.
    assert await post(text_message(phone, wamid(), "hi"), replies=1) == [
        f"1 offers are waiting for you. {menu}"
    ]
    assert credex.acceptances == 2
    async with module.state.message(phone, doubtful["id"]) as msg:  # a duplicate delivery
        assert msg.duplicate and msg.in_doubt == ()
        assert await msg.settle("accept_all", ["wrong"], key=doubtful["id"]) == ["cx-c"]
    assert await post(text_message(phone, wamid(), "2"), replies=1) == [
        f"Accepted 1 offers. {menu}"
    ]
    assert credex.accepted == ["cx-a", "cx-b", "cx-c", "cx-d"]

    waiting = text_message(phone, wamid(), "hi")
    holding, done = asyncio.Event(), asyncio.Event()

    async def previous_message() -> None:  # another request's task, as a server runs it
        async with module.state.message(phone, wamid()):
            holding.set()
            await done.wait()

    holder = asyncio.create_task(previous_message())
    try:
        await holding.wait()
        response = await client.post("/webhook", json=webhook(waiting))
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
    finally:
        done.set()
        await holder
    assert await post(waiting, replies=1) == [menu]  # the redelivery, once the user is free


@contextmanager
def async_guide_fakes(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType
) -> Iterator[tuple[FakeCredex, Outbox]]:
    credex, outbox = FakeCredex(), Outbox()
    monkeypatch.setattr(module, "credex_waiting", credex.waiting_async)
    monkeypatch.setattr(module, "credex_accept", credex.accept_async)
    monkeypatch.setattr(module, "send_whatsapp", outbox.send_async)
    yield credex, outbox
