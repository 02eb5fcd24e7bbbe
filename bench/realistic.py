"""The realistic user and message every benchmark here measures, and the same data as a plain
JSON document for the stores it is compared with.

A user is logged in (a Credex member with three accounts, one selected, and a JWT), part way
through the offer flow (a form with the amount answered). A realistic message resumes the
conversation and makes three changes to different parts of it: navigation (the menu path),
the bot's own context, and a form answer; then it commits. The changes alternate between two
values of the same size, so that stored sizes stay constant however many messages run.
"""

from __future__ import annotations

import base64
import json
import random
import time
from typing import Any

from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.message import AsyncMessage, Message
from vimbiso_state.services.state_service import StateService

MEMBER: dict[str, Any] = {
    "memberID": "8f1c2d3e-4b5a-4c6d-9e8f-0a1b2c3d4e5f",
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberTier": 3,
    "defaultDenom": "USD",
    "remainingAvailableUSD": 100,
}
_ACCOUNT_KINDS = ("Personal", "Shop", "Farm")


def account(n: int) -> dict[str, Any]:
    """One account as the Credex login/dashboard answer returns it."""
    kind = _ACCOUNT_KINDS[n]
    return {
        "accountID": f"0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6{n}",
        "accountName": f"Tendai Moyo {kind}",
        "accountHandle": f"tendai_{kind.lower()}",
        "accountType": "PERSONAL",
        "defaultDenom": "USD",
        "isOwnedAccount": True,
        "balanceData": {"securedNetBalancesByDenom": ["120.50 USD", "3000.00 ZWG"]},
        "pendingInData": [],
        "pendingOutData": [],
    }


ACCOUNTS = [account(n) for n in range(3)]
CURRENT_ACCOUNT = ACCOUNTS[0]["accountID"]
OFFER_MENU = "handle_action_offer_credex"
OFFER_STEP = "handle_action_confirm_offer"  # where every other message navigates to
FORM_NAME = "offer_credex"
FORM_FIELDS = ["amount", "recipient", "confirm"]
# Two answers of one length: the form and the context keep their size message after message.
ANSWERS = ("jane_doe", "john_doe")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(member_id: str = MEMBER["memberID"], lifetime: float = 86_400) -> str:
    """A JWT shaped like Credex's (about 350 characters); its exp is a day away, so the
    library's token_ttl (30 minutes) decides when it expires."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "memberID": member_id,
        "phone": "263771234567",
        "memberTier": 3,
        "iss": "credex-core",
        "aud": "vimbiso-pay",
        "iat": now,
        "exp": now + int(lifetime),
        "jti": "5d1e0c4b-8a7f-4e2d-9c3b-1f0a9e8d7c6b",
    }
    signature = _b64(bytes(random.Random(7).randrange(256) for _ in range(32)))
    encode = json.dumps
    return f"{_b64(encode(header).encode())}.{_b64(encode(claims).encode())}.{signature}"


def message_id(n: int) -> str:
    """A WhatsApp message id (wamid...), unique per ``n`` within a run."""
    return f"wamid.HBgMMjYzNzcxMjM0NTY3FQIAEhgg{random.getrandbits(40):010X}{n:08X}"


def log_in(state: StateService, phone: str) -> None:
    """The user's first messages: the login (profile, account, token), then the offer menu
    with its form's first answer. What every measured message then resumes."""
    with state.message(phone, message_id(0), "hi") as msg:
        conv = msg.conversation
        conv.set_profile(MEMBER, ACCOUNTS)
        conv.select_account(CURRENT_ACCOUNT)
        msg.save_token(jwt())
    with state.message(phone, message_id(1), "2") as msg:
        msg.conversation.navigate(OFFER_MENU)
        msg.form_start(FORM_NAME, FORM_FIELDS)
        msg.form_fill(amount="USD 100")


def change(msg: Message | AsyncMessage, n: int) -> None:
    """The three changes of a realistic message: navigation, context and a form answer."""
    conv = msg.conversation
    if n % 2 == 0:
        conv.navigate(OFFER_STEP)
    else:
        conv.back()
    answer = ANSWERS[n % 2]
    conv.context["last_input"] = answer
    msg.form_fill(recipient=answer)


def handle_result() -> dict[str, str]:
    """What a Credex call (validate the recipient's handle) returns to an effect."""
    return {"accountID": "4b0e2f1a-9c8d-4e7f-8a6b-5c4d3e2f1a0b", "accountName": "Jane Doe"}


class RoundRobin:
    """Messages to a set of users, one after another in turn."""

    def __init__(self, phones: list[str]) -> None:
        self.phones = phones
        self.sent = 0

    def next(self) -> tuple[str, int, int]:
        """The next user, the message's number in the run and its number in that user's
        conversation (a user's changes alternate by the latter)."""
        n = self.sent
        self.sent += 1
        users = len(self.phones)
        return self.phones[n % users], n + 2, n // users  # 0 and 1 were log_in's


class Messages(RoundRobin):
    """Realistic messages on a blocking service."""

    def __init__(self, state: StateService, phones: list[str]) -> None:
        super().__init__(phones)
        self.state = state

    def one(self) -> None:
        """One realistic message, to the next user."""
        phone, n, k = self.next()
        with self.state.message(phone, message_id(n), ANSWERS[k % 2]) as msg:
            change(msg, k)

    def with_effect(self) -> None:
        """A realistic message that also calls Credex once (an effect)."""
        phone, n, k = self.next()
        with self.state.message(phone, message_id(n), ANSWERS[k % 2]) as msg:
            msg.effect("validate_handle", handle_result)
            change(msg, k)


class AsyncMessages(RoundRobin):
    """The same messages on an AsyncStateService."""

    def __init__(self, state: AsyncStateService, phones: list[str]) -> None:
        super().__init__(phones)
        self.state = state

    async def one(self) -> None:
        phone, n, k = self.next()
        async with self.state.message(phone, message_id(n), ANSWERS[k % 2]) as msg:
            change(msg, k)


def document() -> dict[str, Any]:
    """The same data as one plain JSON document, for the stores that keep a user that way
    (the bot's own store, aiogram's FSM data): profile, token, menu, context and form."""
    return {
        "member": MEMBER,
        "accounts": ACCOUNTS,
        "current_account": CURRENT_ACCOUNT,
        "token": jwt(),
        "stage": OFFER_MENU,
        "option": OFFER_MENU,
        "menu": ["handle_action_menu"],
        "context": {},
        "form": {
            "name": FORM_NAME,
            "required": FORM_FIELDS,
            "values": {"amount": "100", "denomination": "USD"},
            "expires_at": "2026-11-26T10:15:00.000000+00:00",
        },
    }


def change_document(data: dict[str, Any], n: int) -> str:
    """The realistic message's three changes on a plain document; returns the new stage."""
    if n % 2 == 0:
        data["menu"] = [*data["menu"], data["stage"]]
        data["stage"] = data["option"] = OFFER_STEP
    else:
        data["stage"] = data["option"] = data["menu"][-1]
        data["menu"] = data["menu"][:-1]
    answer = ANSWERS[n % 2]
    data["context"] = {**data["context"], "last_input": answer}
    data["form"] = {**data["form"], "values": {**data["form"]["values"], "recipient": answer}}
    return str(data["stage"])
