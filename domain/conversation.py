"""The conversation: critical data, the session's navigation, an optional form, and the rules."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from dataclasses_json import DataClassJsonMixin

from vimbiso_state.domain.errors import InvalidInput
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.json_values import check_json
from vimbiso_state.domain.offer import Denomination, Offer, parse_handle
from vimbiso_state.domain.profile import (
    Account,
    AccountSelection,
    Profile,
    account_selection,
    profile_problem,
)
from vimbiso_state.domain.schema import SCHEMA_VERSION
from vimbiso_state.domain.timestamps import timestamp

DEFAULT_STAGE = "handle_action_menu"
MAX_MENU_DEPTH = 16
# Flow steps are identifiers: the menu's handle_action_menu, the live bot's components
# (AmountInput, ConfirmOfferSecured) and paths (offer_secured). ASCII only, never key syntax.
_STEP = re.compile(r"[A-Za-z0-9_]{1,64}")

# Greetings in English, Shona and Ndebele restart the conversation at the menu.
GREETINGS = frozenset(
    {
        "hi",
        "hie",
        "hey",
        "hello",
        "hallo",
        "good morning",
        "good afternoon",
        "good evening",
        "menu",
        "start",
        "mhoro",
        "mhoroi",
        "makadii",
        "makadini",
        "manheru",
        "mangwanani",
        "masikati",
        "salibonani",
        "sawubona",
        "yebo",
        "livuke njani",
        "lotshani",
    }
)


class Direction(StrEnum):
    IN = "IN"
    OUT = "OUT"


class Notice(StrEnum):
    """What happened to the conversation that the user should be told about."""

    WELCOME = "welcome"
    SESSION_EXPIRED = "session_expired"
    FORM_EXPIRED = "form_expired"
    RESTARTED = "restarted"
    STATE_LOST = "state_lost"


# WhatsApp allows free-form messages this long after the member's last inbound message.
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)


def window_closes_at(inbound_at: datetime | None) -> datetime | None:
    return None if inbound_at is None else inbound_at + CUSTOMER_SERVICE_WINDOW


def is_greeting(text: str) -> bool:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(words) in GREETINGS


def check_step(kind: str, value: object) -> str:
    """Stages, options and menu entries are step names; user text must never pass as one."""
    if not is_step(value):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise InvalidInput(
            f"{kind} must be an identifier: 1 to 64 letters, digits or underscores "
            f"(like handle_action_menu or AmountInput), not {shown[:80]}"
        )
    return value  # type: ignore[return-value]


def is_step(value: object) -> bool:
    return type(value) is str and _known_step(value)


# A list of step names joined by commas, which no step name contains: one match for a menu.
_STEPS = re.compile(r"[A-Za-z0-9_]{1,64}(?:,[A-Za-z0-9_]{1,64})*")


def _all_steps(values: list[str]) -> bool:
    try:
        joined = ",".join(values)
    except TypeError:  # an entry that is not text
        return False
    return _STEPS.fullmatch(joined) is not None


@functools.lru_cache(maxsize=4096)
def _known_step(value: str) -> bool:
    # A bot has a few hundred step names, checked on every read and write of a session.
    return _STEP.fullmatch(value) is not None


@dataclass(kw_only=True, slots=True)
class CriticalData(DataClassJsonMixin):
    """What survives session expiry and greetings: stored under ``user:{phone}:state``."""

    schema_version: int = SCHEMA_VERSION
    # The Credex member and accounts exactly as set_profile was given them (None: no profile).
    member: dict[str, Any] | None = None
    accounts: list[dict[str, Any]] = field(default_factory=list)
    # The selected account is stored once, in the accounts; this is its id.
    current_account_id: str | None = None
    created_at: datetime = timestamp()
    # Kept by the store beside the document and slid on every read, like the session's.
    last_seen_at: datetime = timestamp()
    # The deadline of the form stored with this data (None: no form). The form's own key is
    # collected soon after its deadline; this is how the domain still knows that a form
    # expired, however late the user comes back (set by ConversationWrite on every write).
    form_expires_at: datetime | None = timestamp(default=None)
    # The member's last inbound message (kept beside the document too): WhatsApp's
    # customer-service window closes 24 hours after it.
    inbound_at: datetime | None = timestamp(default=None)

    # What a damaged profile costs: these fields, nothing else.
    PROFILE_FIELDS: ClassVar[tuple[str, ...]] = ("member", "accounts", "current_account_id")

    @property
    def profile(self) -> Profile | None:
        """Views over the stored member and accounts (they share the dicts)."""
        return None if self.member is None else Profile.of(self.member, self.accounts)

    @property
    def current_account(self) -> Account | None:
        if self.member is None or self.current_account_id is None:
            return None
        return Profile.of(self.member, self.accounts).account(self.current_account_id)

    def check_values(self) -> None:
        """InvalidInput unless the profile is plain JSON with its ids (see set_profile)."""
        if self.member is None:
            if self.accounts:
                raise InvalidInput("accounts without a member: use set_profile(member, accounts)")
            return
        check_json(self.member, "member")
        check_json(self.accounts, "accounts")
        problem = profile_problem(self.member, self.accounts)
        if problem:
            raise InvalidInput(problem)

    def drop_damaged_profile(self) -> str | None:
        """Drop a stored profile that cannot be used; what was wrong with it, or None."""
        if self.member is None:
            problem = "accounts without a member" if self.accounts else None
        else:
            problem = profile_problem(self.member, self.accounts)
        if problem:
            self.member, self.accounts, self.current_account_id = None, [], None
        return problem


@dataclass(kw_only=True, slots=True)
class Session(DataClassJsonMixin):
    """The live session and its navigation: stored under ``session:{phone}:data``.

    Navigation lives here, not with the critical data, so that it can only ever expire
    together with the session that gives it meaning.
    """

    schema_version: int = SCHEMA_VERSION
    id: str
    started_at: datetime = timestamp()
    last_seen_at: datetime = timestamp()
    stage: str = DEFAULT_STAGE
    option: str | None = None
    direction: Direction = Direction.OUT
    menu: list[str] = field(default_factory=list)
    offer: Offer | None = None
    # Flow data of the bot's own (JSON values); it expires with the session.
    context: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def begin(cls, now: datetime) -> Session:
        return cls(id=secrets.token_hex(8), started_at=now, last_seen_at=now)

    def step_problem(self) -> str | None:
        """What makes the stage, option or menu unusable as step names, or None."""
        if not is_step(self.stage):
            return "the stage is not an identifier"
        if self.option is not None and not is_step(self.option):
            return "the option is not an identifier"
        if self.menu and not _all_steps(self.menu):
            return "a menu entry is not an identifier"
        return None

    def check_values(self) -> None:
        """InvalidInput unless the steps are identifiers and the context is plain JSON."""
        problem = self.step_problem()
        if problem:
            raise InvalidInput(problem)
        check_json(self.context, "context")


@dataclass(kw_only=True)
class Conversation(DataClassJsonMixin):
    """One user's conversation as bot code sees it; mutate it inside ``StateService.update``."""

    phone: str
    critical: CriticalData
    session: Session
    form: Form | None = None
    version: int = 0
    notices: list[Notice] = field(default_factory=list)

    # How set_profile picks the current account when none is selected yet. Configuration
    # (the service sets it on every conversation it hands out), never stored: not a field.
    account_selection = AccountSelection.SINGLE

    @classmethod
    def new(cls, phone: str, now: datetime) -> Conversation:
        return cls(
            phone=phone,
            critical=CriticalData(created_at=now, last_seen_at=now),
            session=Session.begin(now),
        )

    # The public fields bot code reads and writes, kept where they are stored.
    @property
    def stage(self) -> str:
        return self.session.stage

    @stage.setter
    def stage(self, value: str) -> None:
        self.session.stage = check_step("stage", value)

    @property
    def option(self) -> str | None:
        return self.session.option

    @option.setter
    def option(self, value: str | None) -> None:
        self.session.option = None if value is None else check_step("option", value)

    @property
    def direction(self) -> Direction:
        return self.session.direction

    @direction.setter
    def direction(self, value: Direction | str) -> None:
        try:
            self.session.direction = Direction(value)
        except ValueError as exc:
            raise InvalidInput("direction is IN or OUT") from exc

    @property
    def menu(self) -> list[str]:
        return self.session.menu

    @property
    def offer(self) -> Offer | None:
        return self.session.offer

    @property
    def context(self) -> dict[str, Any]:
        return self.session.context

    @property
    def profile(self) -> Profile | None:
        return self.critical.profile

    @property
    def current_account(self) -> Account | None:
        return self.critical.current_account

    @property
    def window_closes_at(self) -> datetime | None:
        """When WhatsApp's customer-service window closes: 24 hours after the member's last
        inbound message (after it, only approved templates may be sent); None before any."""
        return window_closes_at(self.critical.inbound_at)

    # Navigation
    def navigate(self, option: str) -> None:
        """Enter a menu option, remembering where we were for ``back``."""
        check_step("option", option)
        self.session.menu.append(self.session.option or self.session.stage)
        del self.session.menu[:-MAX_MENU_DEPTH]
        self.session.option = option
        self.session.stage = option

    def back(self) -> None:
        """Return to the previous menu choice; at the top this stays at the menu."""
        previous = self.session.menu.pop() if self.session.menu else DEFAULT_STAGE
        self.session.stage = previous
        self.session.option = None if previous == DEFAULT_STAGE else previous

    def restart(self, now: datetime, notice: Notice) -> None:
        """Back to the menu with a fresh session; critical data and a live form are kept."""
        self.session = Session.begin(now)
        self.notices.append(notice)

    def greet(self, now: datetime) -> None:
        """A greeting restarts at the menu; a brand-new conversation is already there."""
        if Notice.WELCOME not in self.notices:
            self.restart(now, Notice.RESTARTED)

    # Critical data
    def set_profile(
        self,
        member: Mapping[str, Any],
        accounts: Sequence[Mapping[str, Any]],
        *,
        selection: AccountSelection | str | None = None,
    ) -> Profile:
        """Keep the Credex member and accounts exactly as given (copies, checked first).

        The current account is kept while it is still among the accounts; otherwise
        ``selection`` (default: this conversation's ``account_selection``) picks one or none.
        """
        profile = Profile.from_credex(member, accounts)
        self.use_profile(profile, selection=selection)
        return profile

    def use_profile(
        self, profile: Profile, *, selection: AccountSelection | str | None = None
    ) -> None:
        """Store a profile built by Profile.from_credex (its dicts are kept, not copied)."""
        rule = self.account_selection if selection is None else account_selection(selection)
        current = self.critical.current_account_id
        selected = (profile.account(current) if current else None) or profile.default_account(rule)
        self.critical.member = profile.member.data
        self.critical.accounts = [account.data for account in profile.accounts]
        self.critical.current_account_id = selected.account_id if selected else None

    def select_account(self, account_id: str) -> Account:
        account = self.profile.account(account_id) if self.profile else None
        if account is None:
            raise InvalidInput(f"no account {account_id!r} in this member's profile")
        self.critical.current_account_id = account.account_id
        return account

    # The offer flow
    def propose_offer(self, values: Mapping[str, str], now: datetime) -> Offer:
        """Turn a completed offer form into an offer awaiting the member's signature."""
        try:
            amount = Decimal(values["amount"])
            denomination = Denomination(values.get("denomination", Denomination.USD.value))
            recipient = parse_handle(values["recipient"])
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise InvalidInput(f"an offer needs amount, denomination and recipient: {exc}") from exc
        if not amount.is_finite() or amount <= 0:
            raise InvalidInput("the amount of an offer must be more than zero")
        offer = Offer(amount=amount, denomination=denomination, recipient=recipient, created_at=now)
        self.session.offer = offer
        return offer

    def confirm_offer(self) -> Offer:
        offer = self._pending_offer()
        member = self.profile.member.member_id if self.profile else ""
        offer.confirm(signature=member)
        return offer

    def cancel_offer(self) -> Offer:
        offer = self._pending_offer()
        offer.cancel()
        return offer

    def _pending_offer(self) -> Offer:
        if self.session.offer is None:
            raise InvalidInput("there is no offer to confirm or cancel")
        return self.session.offer
