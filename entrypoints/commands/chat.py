"""``vimbiso-state chat``: you are the WhatsApp user; the bot's menu and forms run on StateService.

Every line read from stdin is one inbound message, handled the way a webhook handler would:
``start`` (resume, expiry, greetings), then the step for the stage the user is at, each write
atomic and versioned. Piped input works the same as typing, so a whole flow can be scripted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TextIO

from vimbiso_state.adapters.clock import OffsetClock
from vimbiso_state.domain.conversation import Conversation, Notice, is_greeting
from vimbiso_state.domain.errors import FormValidationError, InvalidInput
from vimbiso_state.domain.offer import Offer
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.entrypoints.commands.common import check_reachable, close, container, describe
from vimbiso_state.entrypoints.commands.output import interactive
from vimbiso_state.entrypoints.demo import ACCOUNTS, MEMBER
from vimbiso_state.services.config import Settings
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
ACCEPT = "handle_action_accept_offers"
SWITCH = "handle_action_switch_account"
MENU = "1. Offer credex  2. Accept offers  3. Switch account"
QUESTIONS = {
    "amount": "How much do you want to offer? (100, USD 100 or 100 ZWG)",
    "recipient": "Who to? Their account handle, like bob_store.",
}
INCOMING = "50 USD from alice_shop"
QUIT = frozenset({"quit", "exit", "bye"})
NOTICES = {
    Notice.SESSION_EXPIRED: "Your session timed out, so we are back at the menu.",
    Notice.FORM_EXPIRED: "Your unfinished offer timed out and was discarded.",
    Notice.STATE_LOST: "Sorry, we lost track of our conversation and are starting again.",
}
HELP = (
    "Type as the WhatsApp user: menu numbers, answers, 'back', a greeting (hi, mhoro...). "
    "'wait MINUTES' lets time pass in silence; 'quit' (or end of input) leaves."
)


class ChatBot:
    """The bot's side of the conversation: one reply (a few lines) per inbound message."""

    def __init__(self, state: StateService, phone: str, clock: OffsetClock) -> None:
        self.state, self.phone, self.clock = state, phone, clock

    def reply(self, text: str) -> list[str]:
        conv = self.state.start(self.phone, text)  # a greeting restarts at the menu
        said = [NOTICES[n] for n in conv.notices if n in NOTICES]
        if conv.profile is None:  # first contact (or state lost): log in with Credex
            return [*said, *self.login(), MENU]
        if is_greeting(text):
            first = conv.profile.member.name.split(" ")[0] or "there"
            return [*said, f"Mhoro {first}! {self.menu(conv)}"]
        if text.lower() == "back":
            return [*said, self.prompt(self.state.back(self.phone))]
        steps: dict[str, Callable[[Conversation, str], list[str]]] = {
            OFFER: self.offer_step,
            ACCEPT: self.accept_step,
            SWITCH: self.switch_step,
        }
        return [*said, *steps.get(conv.stage, self.menu_step)(conv, text)]

    def login(self) -> list[str]:
        # Two accounts: like the VimbisoPay bot's login, act for the member's personal one.
        conv = self.state.set_profile(self.phone, MEMBER, ACCOUNTS, selection="personal")
        self.state.save_token(self.phone, "eyJhbGciOiJIUzI1NiJ9.chat-member-token.signature")
        name = conv.profile.member.name if conv.profile else ""
        return [f"Welcome to VimbisoPay, {name}! You are logged in with Credex."]

    # What the bot asks at each stage
    def menu(self, conv: Conversation) -> str:
        if conv.form is not None and conv.form.name == "offer":
            return f"{MENU}  (your unfinished offer is kept: reply 1 to continue)"
        return MENU

    def prompt(self, conv: Conversation) -> str:
        if conv.stage == OFFER:
            if conv.offer is not None and conv.offer.pending:
                return _confirmation(conv.offer, conv)
            if conv.form is not None and conv.form.missing():
                return QUESTIONS[conv.form.missing()[0]]
        if conv.stage == ACCEPT:
            return _incoming(conv)
        if conv.stage == SWITCH:
            return _accounts(conv)
        return self.menu(conv)

    # One step per stage
    def menu_step(self, conv: Conversation, text: str) -> list[str]:
        if text == "1":
            conv = self.state.navigate(self.phone, OFFER)
            pending = conv.offer is not None and conv.offer.pending
            if pending or (conv.form is not None and conv.form.name == "offer"):
                return [f"Let's finish your offer. {self.prompt(conv)}"]
            self.state.form_start(self.phone, "offer", required=["amount", "recipient"])
            return [QUESTIONS["amount"]]
        if text in ("2", "3"):
            return [self.prompt(self.state.navigate(self.phone, ACCEPT if text == "2" else SWITCH))]
        return [f"Please choose from the menu. {self.menu(conv)}"]

    def offer_step(self, conv: Conversation, text: str) -> list[str]:
        if conv.offer is not None and conv.offer.pending:
            if text not in ("1", "2"):
                return ["Reply 1 to sign and send, or 2 to cancel."]
            done = self.state.update(
                self.phone, lambda c: c.confirm_offer() if text == "1" else c.cancel_offer()
            )
            self.state.back(self.phone)
            if text == "2":
                return [f"Offer cancelled. {MENU}"]
            member = done.profile.member.member_id if done.profile else ""
            return [f"Signed with your member id ({member}) and sent. {MENU}"]
        form = conv.form
        if form is None or form.name != "offer":  # expired while the user was away
            self.state.form_start(self.phone, "offer", required=["amount", "recipient"])
            return [f"Let's start your offer again. {QUESTIONS['amount']}"]
        field = form.missing()[0]
        try:
            form = self.state.form_fill(self.phone, **{field: text})
        except FormValidationError as exc:
            why = "; ".join(exc.errors.values())
            return [f"Sorry, that {field} did not work: {why}. {QUESTIONS[field]}"]
        if form.missing():
            return [QUESTIONS[form.missing()[0]]]
        now = self.clock.now()

        def propose(c: Conversation) -> None:
            # Close the form and create the offer in one atomic write.
            if c.form is None:
                raise InvalidInput("the offer form is gone")
            values = c.form.result()
            c.form = None
            c.propose_offer(values, now)

        conv = self.state.update(self.phone, propose)
        return [_confirmation(conv.offer, conv)] if conv.offer else [MENU]

    def accept_step(self, conv: Conversation, text: str) -> list[str]:
        if text == "1" and not conv.context.get("accepted"):
            self.state.update(self.phone, lambda c: c.context.update(accepted=INCOMING))
            conv = self.state.back(self.phone)
            return [f"Accepted {INCOMING}. {self.menu(conv)}"]
        return [f"{_incoming(conv)}"]

    def switch_step(self, conv: Conversation, text: str) -> list[str]:
        accounts = conv.profile.accounts if conv.profile else []
        if text.isdigit() and 1 <= int(text) <= len(accounts):
            chosen = accounts[int(text) - 1]
            self.state.update(self.phone, lambda c: c.select_account(chosen.account_id))
            conv = self.state.back(self.phone)
            return [f"You are now acting for {chosen.handle}. {self.menu(conv)}"]
        return [_accounts(conv)]


def _confirmation(offer: Offer | None, conv: Conversation) -> str:
    if offer is None:
        return MENU
    source = conv.current_account.handle if conv.current_account else "your account"
    return (
        f"Offer {offer.amount} {offer.denomination.value} to {offer.recipient} from {source}? "
        "1. Sign and send  2. Cancel"
    )


def _incoming(conv: Conversation) -> str:
    if conv.context.get("accepted"):
        return "No offers are waiting for you. Reply 'back' for the menu."
    return f"Offers waiting for you: {INCOMING}. 1. Accept  (or 'back')"


def _accounts(conv: Conversation) -> str:
    accounts = conv.profile.accounts if conv.profile else []
    current = conv.current_account.account_id if conv.current_account else None
    listed = "  ".join(
        f"{i}. {a.handle}{' (current)' if a.account_id == current else ''}"
        for i, a in enumerate(accounts, 1)
    )
    return f"Which account? {listed}  (or 'back')"


def _wait(text: str) -> float | None:
    """Minutes from 'wait 6' (also '6m'), or None if the line is not a wait command."""
    words = text.lower().split()
    if len(words) != 2 or words[0] != "wait":
        return None
    try:
        minutes = float(words[1].removesuffix("m"))
    except ValueError:
        return None
    return minutes if 0 < minutes <= 7 * 24 * 60 else None


def run(config: Settings, phone: str, inp: TextIO, out: TextIO, *, fresh: bool = False) -> int:
    number = PhoneNumber.parse(phone, config.phone_region)  # fails before any connection
    built, notes = container(config, throwaway_key=True)
    clock = OffsetClock()
    built.clock.override(clock)
    try:
        check_reachable(built)
        state = built.state_service()
        if fresh:
            state.reset(number.digits)
        bot = ChatBot(state, number.digits, clock)
        print(f"vimbiso-state chat as {number.e164} on {describe(config)}", file=out)
        for note in notes:
            print(f"note: {note}", file=out)
        print(HELP, file=out)
        typing = interactive(inp)
        while True:
            if typing:
                out.write("you > ")
                out.flush()
            line = inp.readline()
            if not line:
                if typing:
                    print(file=out)  # end of input (Ctrl-D) after the prompt
                break
            text = line.strip()
            if not text:
                continue
            if not typing:
                print(f"you > {text}", file=out)
            if text.lower() in QUIT:
                break
            minutes = _wait(text)
            if minutes is not None:
                clock.skip(timedelta(minutes=minutes))
                print(f"      ... {minutes:g} minute(s) pass in silence ...", file=out)
                continue
            for said in bot.reply(text):
                print(f"bot > {said}", file=out)
        print(
            f"bot > Bye! Your session lasts {config.session_ttl:g} s after your last message; "
            "your profile is kept.",
            file=out,
        )
    finally:
        close(built)
    return 0
