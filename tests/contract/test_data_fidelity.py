"""What goes in comes back exactly: on every backend.

Credex profile dicts round-trip with their types, nesting and unknown fields; a value JSON
cannot carry stores nothing (each such value is refused in tests/unit/test_refusals.py); a
token that is a JWT expires at its own ``exp``; stored data the domain cannot trust is dropped
with a ``state_lost`` notice.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pytest
from fakes import FakeClock, jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stored_documents import rewrite

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Notice
from vimbiso_state.domain.json_values import MAX_DEPTH
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import InvalidInput
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
MEMBER = {
    "memberID": "mem-1",
    "memberTier": 3,
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberHandle": "tendai",
    "defaultDenom": "USD",
    "remainingAvailableUSD": 20.0,
}
ACCOUNT = {
    "accountID": "acc-1",
    "accountName": "Tendai Moyo",
    "accountHandle": "tendai",
    "accountType": "PERSONAL",
    "defaultDenom": "USD",
    "isOwnedAccount": True,
    "balanceData": {"securedNetBalancesByDenom": ["150.00 USD"]},
    "pendingInData": [],
    "pendingOutData": [],
}


def same(left: Any, right: Any, path: str = "$") -> None:
    """Equal and of the same types all the way down (``True == 1`` and ``1.0 == 1`` in
    Python, but the bot's ``memberTier == 5`` and ``isinstance`` checks see the difference)."""
    assert type(left) is type(right), f"{path}: {type(left).__name__} != {type(right).__name__}"
    if isinstance(left, dict):
        assert list(left) == list(right), path
        for key in left:
            same(left[key], right[key], f"{path}[{key!r}]")
    elif isinstance(left, list):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(left, float) and left == 0:
        assert math.copysign(1, left) == math.copysign(1, right), path  # -0.0 stays -0.0
    else:
        assert left == right, f"{path}: {left!r} != {right!r}"


# The Credex profile
def test_the_credex_profile_comes_back_exactly(state: StateService, phone: str) -> None:
    state.set_profile(phone, MEMBER, [ACCOUNT])
    conv = state.start(phone)
    assert conv.profile is not None
    same(conv.profile.member.data, MEMBER)
    same([a.data for a in conv.profile.accounts], [ACCOUNT])
    assert conv.profile.member.tier == 3 and conv.profile.member.tier < 5
    assert (conv.profile.member.firstname, conv.profile.member.lastname) == ("Tendai", "Moyo")
    assert conv.current_account is not None and conv.current_account.account_id == "acc-1"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
identifiers = st.text(min_size=1, max_size=16).filter(str.strip)
members = st.builds(lambda d, i: {**d, "memberID": i}, json_objects, identifiers)
accounts = st.lists(
    st.builds(lambda d, i: {**d, "accountID": i}, json_objects, identifiers),
    max_size=4,
    unique_by=lambda a: a["accountID"].strip(),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(member=members, accounts=accounts)
def test_any_json_member_and_accounts_round_trip_exactly(
    state: StateService, member: dict[str, Any], accounts: list[dict[str, Any]]
) -> None:
    # A phone of its own per example (the phone fixture is drawn once per test).
    user = f"+{263_750_000_000 + random.randrange(49_000_000)}"
    state.set_profile(user, member, accounts)
    state.navigate(user, OFFER)  # another write: the stored profile is carried through it
    conv = state.start(user)
    assert conv.profile is not None
    same(conv.profile.member.data, member)
    same([a.data for a in conv.profile.accounts], accounts)
    state.reset(user)


# Values at the limits JSON can carry, and a refused one on the store
def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_json_values_at_the_depth_limit_are_stored(state: StateService, phone: str) -> None:
    deepest = _deep(MAX_DEPTH - 1)  # inside the context: MAX_DEPTH levels in all
    state.update(phone, lambda c: c.context.update(deep=deepest, n=-0.0, big=2**80))
    stored = state.start(phone).context
    same(stored, {"deep": deepest, "n": -0.0, "big": 2**80})


def test_a_refused_value_in_handle_once_leaves_the_message_unhandled(
    state: StateService, phone: str
) -> None:
    state.start(phone)
    with pytest.raises(InvalidInput, match=r"context\['when'\]"):
        state.handle_once(phone, "wamid.nan", lambda c: c.context.update(when=float("nan")))
    # Nothing stored, the id included: WhatsApp's retry (with a fixed bot) is handled.
    assert state.handle_once(phone, "wamid.nan", lambda c: c.context.update(when=1.5)) is not None
    assert state.start(phone).context == {"when": 1.5}


# JWT expiry
def _token_pttl(container: Container, backend: str, phone: str) -> int | None:
    if backend == "memory":
        return None
    key = "token:{" + phone.lstrip("+") + "}"
    return int(container.redis_client().pttl(key))


def test_a_jwt_expires_at_its_exp_when_that_comes_before_token_ttl(
    container: Container, backend: str, state: StateService, phone: str, clock: FakeClock
) -> None:
    exp = clock.now() + timedelta(minutes=10)  # token_ttl is 30 minutes
    token = jwt({"sub": "mem-1", "exp": int(exp.timestamp())})
    state.save_token(phone, token)
    pttl = _token_pttl(container, backend, phone)
    if pttl is not None:  # Redis keeps the key no longer than the exp (plus its 2 s grace)
        assert 0 < pttl <= 10 * 60 * 1000 + 2000
    clock.advance(minutes=9, seconds=59)
    assert state.token(phone) == token
    clock.advance(seconds=1)
    assert state.token(phone) is None


def test_a_jwt_saved_by_a_message_expires_at_its_exp_too(
    container: Container, backend: str, state: StateService, phone: str, clock: FakeClock
) -> None:
    """msg.save_token seals the token for the message's commit (how BotState and the import
    store the bot's token): the same deadline as the one-call save_token."""
    exp = clock.now() + timedelta(minutes=10)
    token = jwt({"sub": "mem-1", "exp": int(exp.timestamp())})
    with state.message(phone, "wamid.login") as msg:
        msg.save_token(token)
    pttl = _token_pttl(container, backend, phone)
    if pttl is not None:
        assert 0 < pttl <= 10 * 60 * 1000 + 2000
    clock.advance(minutes=9, seconds=59)
    assert state.token(phone) == token
    clock.advance(seconds=1)
    assert state.token(phone) is None
    with state.message(phone, "wamid.next") as msg:
        assert msg.token() is None


def test_a_jwt_whose_exp_is_after_token_ttl_lives_for_token_ttl(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    token = jwt({"exp": int((clock.now() + timedelta(hours=5)).timestamp())})
    state.save_token(phone, token)
    clock.advance(minutes=29, seconds=59)
    assert state.token(phone) == token
    clock.advance(seconds=1)
    assert state.token(phone) is None


def test_a_token_without_a_usable_exp_lives_for_token_ttl(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    # Each kind of token without a usable exp: tests/unit/test_token_expiry.py.
    token = jwt({"sub": "mem-1"})
    state.save_token(phone, token)
    clock.advance(minutes=29, seconds=59)
    assert state.token(phone) == token
    clock.advance(seconds=1)
    assert state.token(phone) is None


def test_saving_a_jwt_that_has_already_expired_leaves_no_token(
    state: StateService, phone: str, clock: FakeClock
) -> None:
    state.save_token(phone, "the-previous-token")
    past = clock.now() - timedelta(seconds=1)
    state.save_token(phone, jwt({"exp": past.timestamp()}))
    assert state.token(phone) is None


# Stored data the domain cannot trust
def test_a_corrupt_profile_inside_a_valid_document_is_dropped_with_state_lost(
    container: Container, backend: str, state: StateService, phone: str
) -> None:
    # Each kind of damage: tests/unit/test_codec_equivalence.py.
    damage = {"member": {"firstname": "Tendai"}}
    state.set_profile(phone, MEMBER, [ACCOUNT])
    state.navigate(phone, OFFER)
    state.form_start(phone, "offer", required=["amount"])
    rewrite(container, backend, phone, "user", lambda doc: {**doc, **damage})
    conv = state.start(phone)
    assert conv.notices == [Notice.STATE_LOST]
    assert conv.profile is None and conv.current_account is None
    # Only the profile is lost: the live session and form stay.
    assert conv.stage == OFFER and conv.form is not None
    assert state.start(phone).notices == []


def test_a_stored_stage_that_is_not_an_identifier_goes_back_to_the_menu_with_state_lost(
    container: Container, backend: str, state: StateService, phone: str
) -> None:
    stage = "menu; DROP *"  # each kind of bad stage: tests/unit/test_codec_equivalence.py
    state.set_profile(phone, MEMBER, [ACCOUNT])
    state.navigate(phone, OFFER)
    rewrite(container, backend, phone, "session", lambda doc: {**doc, "stage": stage})
    conv = state.start(phone)
    assert Notice.STATE_LOST in conv.notices
    assert (conv.stage, conv.option, conv.menu) == (DEFAULT_STAGE, None, [])
    assert conv.profile is not None  # critical data is kept
    assert state.start(phone).notices == []


def test_stored_flow_steps_named_like_the_live_bot_are_read(
    state: StateService, phone: str
) -> None:
    state.navigate(phone, "offer_secured")
    state.navigate(phone, "AmountInput")
    state.update(phone, lambda c: setattr(c, "stage", "ConfirmOfferSecured"))
    conv = state.start(phone)
    assert conv.notices == []
    assert (conv.stage, conv.option) == ("ConfirmOfferSecured", "AmountInput")
    assert conv.menu == [DEFAULT_STAGE, "offer_secured"]
