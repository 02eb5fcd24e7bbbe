"""The memory and Redis backends, driven by the same random operations, must agree.

A hypothesis state machine applies each operation to a memory-backed and a Redis-backed
StateService, each with its own FakeClock, started at the same instant and always advanced
together, and compares what the caller sees: the return value or the type of the exception.

Compared: stage, option, direction, menu, offer, context, profile, current account, form
(name, values, required), notices and tokens. Not compared: versions (after retention expiry
memory garbage-collects by the fake clock and Redis by real time, so version numbers may
legitimately differ) and generated session ids and timestamps. For the same reason the answer
of revoke_token ("was there a token key") is compared exactly only while the token is within
its deadline; past it, the key's existence depends on the collector, and only "no token
afterwards" is compared.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from fakes import FakeClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.form import Form
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import FormIncomplete, FormValidationError, StateError
from vimbiso_state.services.state_service import StateService

KEY = Fernet.generate_key().decode()
# Hypothesis reseeds `random` for every example, so fresh numbers come from `secrets`.
_numbers = itertools.count(263_710_000_000 + secrets.randbelow(80_000_000))

PHONES = st.integers(0, 2)
GREETINGS = st.sampled_from([None, "hi", "Mhoro!", "salibonani", "100 USD", "what?"])
OPTIONS = st.sampled_from(
    ["handle_action_offer_credex", "handle_action_balance", "handle_action_confirm"]
)
MEMBERS = [
    (
        {"memberID": "m-1", "firstname": "Rudo", "lastname": "Dube", "tier": 2},
        [
            {"accountID": "a-1", "accountName": "Rudo Personal", "accountHandle": "rudo"},
            {"accountID": "a-2", "accountName": "Dube Farm", "accountHandle": "dube_farm"},
        ],
    ),
    ({"member_id": "m-2", "name": "Tendai"}, [{"account_id": "a-2", "handle": "tendai"}]),
    ({"memberID": "m-3"}, []),
]
FORMS = st.sampled_from(
    [("offer", ["amount", "recipient"]), ("offer", ["amount"]), ("contact", ["handle"])]
)
AMOUNTS = st.sampled_from(["100", "USD 100", "100 USD", "XAU 2.5", "zwg 7", "abc", "-5", "0"])
RECIPIENTS = st.sampled_from(["bob_smith", "gold_buyer", "bob smith!", ""])
HANDLES = st.sampled_from(["tendai_7", "no-dashes"])
OFFERS = st.sampled_from(
    [
        {"amount": "10", "denomination": "CAD", "recipient": "maple"},
        {"amount": "2.5", "recipient": "gold_buyer"},
        {"amount": "ten", "recipient": "x"},
        {"recipient": "nobody"},
    ]
)
TOKEN_TTL = timedelta(seconds=1800)
MESSAGE_IDS = st.sampled_from(["wamid.1", "wamid.2", "wamid.3"])
TOKENS = st.sampled_from(["jwt-a", "jwt-b"])
# Small steps, and steps past each deadline (session 300 s, form 600 s, token 1800 s,
# retention 86400 s) and past each deadline plus the stores' 2 s grace.
ADVANCES = st.sampled_from(
    [1, 5, 60, 299, 300, 301, 303, 599, 600, 601, 603, 1799, 1800, 1801, 1803, 86400, 86403]
)


def _conversation(conv: Conversation) -> dict[str, Any]:
    form = conv.form
    return {
        "stage": conv.stage,
        "option": conv.option,
        "direction": conv.direction,
        "menu": list(conv.menu),
        "offer": conv.offer.to_dict() if conv.offer else None,
        "context": conv.context,
        "profile": (
            (conv.profile.member.data, [a.data for a in conv.profile.accounts])
            if conv.profile
            else None
        ),
        "current_account": conv.current_account.data if conv.current_account else None,
        "form": _form(form) if form else None,
        "notices": list(conv.notices),
    }


def _form(form: Form) -> dict[str, Any]:
    return {"name": form.name, "values": form.values, "required": form.required}


def _observe(value: object) -> object:
    if isinstance(value, Conversation):
        return _conversation(value)
    if isinstance(value, Form):
        return _form(value)
    return value


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", _observe(call())
    except FormValidationError as exc:
        return "error", ("FormValidationError", sorted(exc.errors))
    except FormIncomplete as exc:
        return "error", ("FormIncomplete", exc.missing)
    except StateError as exc:
        # Only the library's errors are outcomes; anything else is a bug in the test or the
        # library and fails the test (an AttributeError on both backends used to "agree").
        return "error", type(exc).__name__


class BackendsAgree(RuleBasedStateMachine):
    def __init__(self, redis_url: str) -> None:
        super().__init__()
        start = datetime.now(UTC).replace(microsecond=0)
        self.clocks = {"memory": FakeClock(start), "redis": FakeClock(start)}
        self.containers: dict[str, Container] = {}
        self.services: dict[str, StateService] = {}
        for backend, clock in self.clocks.items():
            container = Container.from_settings(
                Settings(backend=backend, redis_url=redis_url, token_keys=(KEY,))
            )
            container.clock.override(clock)
            self.containers[backend] = container
            self.services[backend] = container.state_service()
        # Fresh numbers per example: examples never see each other's keys on the shared server.
        self.phones = [f"+{next(_numbers)}" for _ in range(3)]
        self.steps: list[str] = []
        # The deadline of each phone's saved token, to know when revoke_token's answer
        # depends on garbage collection rather than on the domain.
        self.token_deadlines: dict[int, datetime] = {}

    def now(self) -> datetime:
        return self.clocks["memory"].now()

    def both(self, what: str, call: Callable[[StateService, FakeClock], object]) -> None:
        self.steps.append(what)
        outcomes = {
            backend: _outcome(lambda b=backend: call(self.services[b], self.clocks[b]))
            for backend in self.services
        }
        assert outcomes["memory"] == outcomes["redis"], (
            f"backends disagree after: {'; '.join(self.steps)}"
        )

    @rule(p=PHONES, greeting=GREETINGS)
    def start(self, p: int, greeting: str | None) -> None:
        phone = self.phones[p]
        self.both(f"start({p}, {greeting!r})", lambda s, c: s.start(phone, greeting))

    @rule(p=PHONES, option=OPTIONS)
    def navigate(self, p: int, option: str) -> None:
        phone = self.phones[p]
        self.both(f"navigate({p}, {option!r})", lambda s, c: s.navigate(phone, option))

    @rule(p=PHONES)
    def back(self, p: int) -> None:
        phone = self.phones[p]
        self.both(f"back({p})", lambda s, c: s.back(phone))

    @rule(p=PHONES, value=st.integers(0, 99))
    def append(self, p: int, value: int) -> None:
        phone = self.phones[p]

        def change(conv: Conversation) -> None:
            conv.context.setdefault("entries", []).append(value)

        self.both(f"append({p}, {value})", lambda s, c: s.update(phone, change))

    @rule(p=PHONES, direction=st.sampled_from(["IN", "OUT", "SIDEWAYS"]))
    def set_direction(self, p: int, direction: str) -> None:
        phone = self.phones[p]

        def change(conv: Conversation) -> None:
            conv.direction = direction

        self.both(f"direction({p}, {direction})", lambda s, c: s.update(phone, change))

    @rule(p=PHONES, member=st.integers(0, len(MEMBERS) - 1))
    def set_profile(self, p: int, member: int) -> None:
        phone = self.phones[p]
        data, accounts = MEMBERS[member]
        self.both(f"set_profile({p}, {member})", lambda s, c: s.set_profile(phone, data, accounts))

    @rule(p=PHONES, account=st.sampled_from(["a-1", "a-2", "a-9"]))
    def select_account(self, p: int, account: str) -> None:
        phone = self.phones[p]
        self.both(
            f"select_account({p}, {account})",
            lambda s, c: s.update(phone, lambda conv: conv.select_account(account)),
        )

    @rule(p=PHONES, form=FORMS)
    def form_start(self, p: int, form: tuple[str, list[str]]) -> None:
        phone = self.phones[p]
        name, required = form
        self.both(
            f"form_start({p}, {name}, {required})",
            lambda s, c: s.form_start(phone, name, required=required),
        )

    @rule(
        p=PHONES,
        amount=st.none() | AMOUNTS,
        recipient=st.none() | RECIPIENTS,
        handle=st.none() | HANDLES,
    )
    def form_fill(
        self, p: int, amount: str | None, recipient: str | None, handle: str | None
    ) -> None:
        phone = self.phones[p]
        given = {"amount": amount, "recipient": recipient, "handle": handle}
        values = {k: v for k, v in given.items() if v is not None}
        self.both(f"form_fill({p}, {values})", lambda s, c: s.form_fill(phone, **values))

    @rule(p=PHONES)
    def form_complete(self, p: int) -> None:
        phone = self.phones[p]
        self.both(f"form_complete({p})", lambda s, c: s.form_complete(phone))

    @rule(p=PHONES, values=OFFERS)
    def propose_offer(self, p: int, values: dict[str, str]) -> None:
        phone = self.phones[p]
        self.both(
            f"propose_offer({p}, {values})",
            lambda s, c: s.update(phone, lambda conv: conv.propose_offer(values, c.now())),
        )

    @rule(p=PHONES, confirm=st.booleans())
    def settle_offer(self, p: int, confirm: bool) -> None:
        phone = self.phones[p]

        def change(conv: Conversation) -> None:
            conv.confirm_offer() if confirm else conv.cancel_offer()

        what = "confirm_offer" if confirm else "cancel_offer"
        self.both(f"{what}({p})", lambda s, c: s.update(phone, change))

    @rule(p=PHONES, value=TOKENS)
    def save_token(self, p: int, value: str) -> None:
        phone = self.phones[p]
        self.both(f"save_token({p}, {value})", lambda s, c: s.save_token(phone, value))
        self.token_deadlines[p] = self.now() + TOKEN_TTL

    @rule(p=PHONES)
    def token(self, p: int) -> None:
        phone = self.phones[p]
        self.both(f"token({p})", lambda s, c: s.token(phone))

    @rule(p=PHONES)
    def revoke_token(self, p: int) -> None:
        phone = self.phones[p]
        deadline = self.token_deadlines.pop(p, None)
        if deadline is None or self.now() < deadline:
            self.both(f"revoke_token({p})", lambda s, c: s.revoke_token(phone))
            return
        # Expired: whether its key is still there is up to the collector (fake clock on
        # memory, real time on Redis). Either way it is gone afterwards on both.
        self.both(f"revoke_token({p}) [expired]", lambda s, c: type(s.revoke_token(phone)))
        self.both(f"token({p})", lambda s, c: s.token(phone))

    @rule(p=PHONES)
    def reset(self, p: int) -> None:
        phone = self.phones[p]
        self.both(f"reset({p})", lambda s, c: s.reset(phone))
        self.token_deadlines.pop(p, None)

    @rule(p=PHONES, message_id=MESSAGE_IDS, value=st.integers(0, 99))
    def handle_once(self, p: int, message_id: str, value: int) -> None:
        phone = self.phones[p]

        def change(conv: Conversation) -> None:
            conv.context.setdefault("messages", []).append([message_id, value])

        self.both(
            f"handle_once({p}, {message_id}, {value})",
            lambda s, c: s.handle_once(phone, message_id, change),
        )

    @rule(seconds=ADVANCES)
    def advance(self, seconds: int) -> None:
        self.steps.append(f"advance({seconds})")
        for clock in self.clocks.values():
            clock.advance(seconds)

    def teardown(self) -> None:
        redis_state = self.services["redis"]
        for phone in self.phones:
            redis_state.reset(phone)
        self.containers["redis"].redis_client().close()


def test_memory_and_redis_agree_on_random_operation_sequences(redis_url: str) -> None:
    run_state_machine_as_test(
        lambda: BackendsAgree(redis_url),
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# Sequences on which the backends once disagreed, replayed on every run.


def test_a_form_collected_after_its_deadline_still_expires_with_a_notice(redis_url: str) -> None:
    """Memory collected the form key 2 s after its deadline and then said nothing about it,
    while Redis (collecting by real time) still had it and said FORM_EXPIRED. The critical
    data now remembers the form's deadline, so the notice no longer depends on the collector.
    """
    machine = BackendsAgree(redis_url)
    try:
        machine.form_start(0, ("offer", ["amount", "recipient"]))
        machine.advance(604)
        machine.back(0)
        machine.form_start(1, ("offer", ["amount"]))
        machine.advance(604)
        machine.start(1, None)
        machine.start(1, None)  # told once, then the marker is cleared
    finally:
        machine.teardown()


def test_revoking_a_collected_token_answers_like_redis_del() -> None:
    """The memory store's delete reported a collected token as present unless a read had
    happened to collect it first; Redis's DEL answers 0 for a key whose TTL has run out."""
    clock = FakeClock()
    container = Container.from_settings(Settings(backend="memory", token_keys=(KEY,)))
    container.clock.override(clock)
    state = container.state_service()
    phone = f"+{next(_numbers)}"
    for read_first in (True, False):
        state.save_token(phone, "jwt-a")
        clock.advance(1803)  # past the token's deadline and the store's 2 s grace
        if read_first:
            assert state.token(phone) is None
        assert state.revoke_token(phone) is False
    state.save_token(phone, "jwt-a")
    clock.advance(1799)
    assert state.revoke_token(phone) is True
