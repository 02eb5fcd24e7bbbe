"""A realistic WhatsApp conversation played against the configured backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TextIO

from vimbiso_state.adapters.clock import OffsetClock
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.errors import FormValidationError
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

PHONE = "+263 77 000 0001"
# As Credex's login answers (the dashboard): kept exactly as given.
MEMBER = {
    "memberID": "mem_7f3a",
    "memberTier": 3,
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberHandle": "tendai_m",
    "defaultDenom": "USD",
    "remainingAvailableUSD": 20.0,
}
ACCOUNTS = [
    {
        "accountID": "acc_1",
        "accountName": "Tendai Personal",
        "accountHandle": "tendai_m",
        "accountType": "PERSONAL",
        "defaultDenom": "USD",
        "balanceData": {"securedNetBalancesByDenom": ["150.00 USD"]},
        "pendingInData": [],
        "pendingOutData": [],
    },
    {
        "accountID": "acc_2",
        "accountName": "Moyo Hardware",
        "accountHandle": "moyo_hw",
        "accountType": "BUSINESS",
        "defaultDenom": "USD",
        "balanceData": {"securedNetBalancesByDenom": []},
        "pendingInData": [],
        "pendingOutData": [],
    },
]
MENU = "1. Offer credex  2. Accept offers  3. Switch account"
OFFER = "handle_action_offer_credex"


class Demo:
    """Plays both sides: the user's messages and what the bot does with the state."""

    def __init__(self, state: StateService, clock: OffsetClock, out: TextIO) -> None:
        self.state, self.clock, self.out = state, clock, out

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def message(self, text: str, handle: Callable[[], object]) -> None:
        """One inbound WhatsApp message: the bot handles it, then we show what is stored."""
        self.print(f"\n  user> {text}")
        handle()
        self.show(self.state.start(PHONE))

    def bot(self, text: str) -> None:
        self.print(f"  bot > {text}")

    def show(self, conv: Conversation) -> None:
        offer = conv.offer
        form = conv.form
        self.print(
            f"        stored: stage={conv.stage} option={conv.option} menu={conv.menu} "
            f"version={conv.version}"
        )
        self.print(
            f"                member={conv.profile.member.name if conv.profile else None} "
            f"account={conv.current_account.handle if conv.current_account else None} "
            f"token={'present' if self.state.token(PHONE) else 'none'}"
        )
        self.print(
            f"                form={f'{form.name} {form.values}' if form else None} "
            f"offer={f'{offer.amount} {offer.denomination} to {offer.recipient} ({offer.status})' if offer else None}"  # noqa: E501
        )

    def answer(self, **values: str) -> None:
        try:
            self.state.form_fill(PHONE, **values)
        except FormValidationError as exc:
            for field, message in exc.errors.items():
                self.bot(f"Sorry, that {field} did not work: {message}. Please try again.")
            return
        self.bot("Got it.")

    def first_contact(self) -> None:
        conv = self.state.start(PHONE, "Hi")
        self.bot(
            f"Welcome to VimbisoPay ({', '.join(n.value for n in conv.notices)}). "
            "Logging you in with Credex..."
        )
        # Two accounts: like the VimbisoPay bot's login, act for the member's personal one.
        self.state.set_profile(PHONE, MEMBER, ACCOUNTS, selection="personal")
        self.state.save_token(PHONE, "eyJhbGciOiJIUzI1NiJ9.demo-member-token.signature")
        self.bot(MENU)

    def choose_offer(self) -> None:
        self.state.navigate(PHONE, OFFER)
        self.state.form_start(PHONE, "offer", required=["amount", "recipient"])
        self.bot("How much do you want to offer? (100, USD 100 or 100 ZWG)")

    def recipient(self, handle: str) -> None:
        self.answer(recipient=handle)
        values = self.state.form_complete(PHONE)
        self.state.update(PHONE, lambda c: c.propose_offer(values, self.clock.now()))
        self.bot(
            f"Offer {values['amount']} {values['denomination']} to {values['recipient']}? "
            "1. Sign and send  2. Cancel"
        )

    def confirm(self) -> None:
        self.state.update(PHONE, lambda c: c.confirm_offer())
        self.state.back(PHONE)
        self.bot("Signed with your member id and sent. " + MENU)

    def resume(self) -> None:
        conv = self.state.start(PHONE)
        notices = ", ".join(n.value for n in conv.notices)
        self.bot(f"({notices}) We are back at the menu; your unfinished offer is kept. " + MENU)

    def greeting(self) -> None:
        conv = self.state.start(PHONE, "mhoro")
        name = conv.profile.member.name if conv.profile else "there"
        self.bot(f"Mhoro {name}! " + MENU)

    def run(self) -> None:
        self.state.reset(PHONE)
        self.print(f"vimbiso-state demo: one member's WhatsApp conversation ({PHONE})")
        self.message("Hi", self.first_contact)
        self.message("1", self.choose_offer)
        self.message("a hundred dollars", lambda: self.answer(amount="a hundred dollars"))
        self.message("USD 100", lambda: self.answer(amount="USD 100"))
        self.message("bob_store", lambda: self.recipient("bob_store"))
        self.message("1", self.confirm)
        self.message("1", self.choose_offer)
        self.message("250 ZWG", lambda: self.answer(amount="250 ZWG"))
        self.print("\n  ... the user goes quiet for 6 minutes (session 5 min, form 10 min) ...")
        self.clock.skip(timedelta(minutes=6))
        self.message("hello?", self.resume)
        self.message("mhoro", self.greeting)
        self.print("\ndone: every step above was stored and read back through the backend.")


def run_demo(container: Container, out: TextIO) -> None:
    clock = OffsetClock()
    container.clock.override(clock)
    Demo(container.state_service(), clock, out).run()
