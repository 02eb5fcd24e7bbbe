"""The conversation's rules, with fixed times: navigation, profile, offers, greetings, expiry."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fakes import DIGITS, T0

from vimbiso_state.domain.conversation import (
    DEFAULT_STAGE,
    MAX_MENU_DEPTH,
    Conversation,
    CriticalData,
    Direction,
    Notice,
    Session,
    is_greeting,
)
from vimbiso_state.domain.errors import InvalidInput
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.lifecycle import resume
from vimbiso_state.domain.offer import Denomination, OfferStatus
from vimbiso_state.domain.ports import StoredConversation
from vimbiso_state.domain.profile import Account, AccountSelection, Member, Profile
from vimbiso_state.domain.timeouts import Timeouts

TIMEOUTS = Timeouts()
OFFER = "handle_action_offer_credex"

MEMBER = {
    "memberID": "m-101",
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberTier": 2,
    "defaultDenom": "USD",
}
PERSONAL = {"accountID": "a-1", "accountName": "Tendai Personal", "accountHandle": "tendai"}
BUSINESS = {"accountID": "a-2", "accountName": "Moyo Traders", "accountHandle": "moyo_traders"}
SAVINGS = {"accountID": "a-3", "accountName": "Savings", "accountHandle": "tendai_save"}


def new() -> Conversation:
    return Conversation.new(DIGITS, T0)


# Navigation
def test_new_conversation_starts_at_the_action_menu() -> None:
    conversation = new()
    assert conversation.stage == DEFAULT_STAGE == "handle_action_menu"
    assert conversation.option is None
    assert conversation.menu == []
    assert conversation.direction is Direction.OUT
    assert conversation.profile is None and conversation.current_account is None


def test_navigate_sets_stage_and_option_and_remembers_the_path() -> None:
    conversation = new()
    conversation.navigate(OFFER)
    conversation.navigate("offer_amount")
    assert conversation.stage == "offer_amount"
    assert conversation.option == "offer_amount"
    assert conversation.menu == [DEFAULT_STAGE, OFFER]


def test_back_returns_to_the_previous_choice() -> None:
    conversation = new()
    conversation.navigate(OFFER)
    conversation.navigate("offer_amount")
    conversation.back()
    assert (conversation.stage, conversation.option) == (OFFER, OFFER)
    assert conversation.menu == [DEFAULT_STAGE]


def test_back_to_the_top_clears_the_option() -> None:
    conversation = new()
    conversation.navigate(OFFER)
    conversation.back()
    assert (conversation.stage, conversation.option) == (DEFAULT_STAGE, None)
    assert conversation.menu == []


def test_back_at_the_top_stays_at_the_action_menu() -> None:
    conversation = new()
    conversation.back()
    conversation.back()
    assert (conversation.stage, conversation.option) == (DEFAULT_STAGE, None)
    assert conversation.menu == []


@pytest.mark.parametrize(
    "option",
    [
        "x:y",
        "DROP *",
        "",
        "offer credex",
        "{263771234567}",
        "a?",
        "x" * 65,
        "amount-input",
        "offer.secured",
        "caf\u00e9",
        "\u0661",
        "menu\n",
        None,
        5,
    ],
)
def test_navigate_rejects_an_option_that_is_not_an_identifier(option: object) -> None:
    conversation = new()
    with pytest.raises(InvalidInput):
        conversation.navigate(option)  # type: ignore[arg-type]
    assert conversation.stage == DEFAULT_STAGE
    assert conversation.menu == []


@pytest.mark.parametrize(
    "step",
    [
        "handle_action_select_profile",
        "handle_action_offer_credex",
        "AmountInput",
        "HandleInput",
        "ConfirmOfferSecured",
        "offer_secured",
        "x" * 64,
        "step2",
    ],
)
def test_the_live_bots_step_names_are_accepted_everywhere(step: str) -> None:
    # The VimbisoPay bot names steps by component and by path, not only lower_snake_case.
    conversation = new()
    conversation.navigate(step)
    conversation.stage = step
    conversation.option = step
    conversation.navigate("handle_action_menu")
    assert conversation.menu == [DEFAULT_STAGE, step]
    conversation.back()
    assert (conversation.stage, conversation.option) == (step, step)


@pytest.mark.parametrize("attribute", ["stage", "option"])
def test_setting_stage_or_option_to_user_text_is_refused(attribute: str) -> None:
    conversation = new()
    with pytest.raises(InvalidInput):
        setattr(conversation, attribute, "user:*")
    assert conversation.stage == DEFAULT_STAGE


def test_option_can_be_cleared_and_direction_is_in_or_out() -> None:
    conversation = new()
    conversation.option = "handle_action_balance"
    conversation.option = None
    conversation.direction = "IN"
    assert conversation.option is None
    assert conversation.direction is Direction.IN
    with pytest.raises(InvalidInput, match="IN or OUT"):
        conversation.direction = "SIDEWAYS"


def test_menu_path_is_bounded_and_keeps_the_most_recent_steps() -> None:
    conversation = new()
    for i in range(MAX_MENU_DEPTH * 3):
        conversation.navigate(f"step_{i}")
    assert len(conversation.menu) == MAX_MENU_DEPTH
    conversation.back()
    assert conversation.stage == f"step_{MAX_MENU_DEPTH * 3 - 2}"


def test_backing_out_of_a_trimmed_path_ends_at_the_action_menu() -> None:
    conversation = new()
    for i in range(MAX_MENU_DEPTH + 5):
        conversation.navigate(f"step_{i}")
    for _ in range(MAX_MENU_DEPTH + 3):
        conversation.back()
    assert (conversation.stage, conversation.option) == (DEFAULT_STAGE, None)
    assert conversation.menu == []


def test_restart_goes_back_to_the_menu_keeping_critical_data_and_form() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    conversation.form = Form.start("offer", ["amount"], T0, TIMEOUTS.form)
    conversation.navigate(OFFER)
    old_session = conversation.session.id
    conversation.restart(T0 + timedelta(seconds=1), Notice.RESTARTED)
    assert conversation.stage == DEFAULT_STAGE and conversation.menu == []
    assert conversation.session.id != old_session
    assert conversation.profile is not None and conversation.form is not None
    assert conversation.notices == [Notice.RESTARTED]


# Profile and accounts
CREDEX_MEMBER = {
    "memberID": "mem-1",
    "memberTier": 3,
    "firstname": "Tendai",
    "lastname": "Moyo",
    "memberHandle": "tendai",
    "defaultDenom": "USD",
    "remainingAvailableUSD": 20.0,
}
CREDEX_ACCOUNT = {
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


def test_set_profile_keeps_the_credex_dicts_exactly_with_typed_accessors_on_top() -> None:
    conversation = new()
    conversation.set_profile(CREDEX_MEMBER, [CREDEX_ACCOUNT, BUSINESS])
    profile = conversation.profile
    assert profile is not None
    assert profile.member.data == CREDEX_MEMBER
    assert type(profile.member.data["memberTier"]) is int  # the bot compares memberTier < 3
    assert profile.member.data["memberTier"] < 5
    assert [a.data for a in profile.accounts] == [CREDEX_ACCOUNT, BUSINESS]
    assert profile.member.member_id == "mem-1"
    assert profile.member.tier == 3
    assert (profile.member.firstname, profile.member.lastname) == ("Tendai", "Moyo")
    assert profile.member.name == "Tendai Moyo"
    assert profile.member.handle == "tendai"
    assert [(a.account_id, a.name, a.handle, a.account_type) for a in profile.accounts] == [
        ("acc-1", "Tendai Moyo", "tendai", "PERSONAL"),
        ("a-2", "Moyo Traders", "moyo_traders", None),
    ]
    assert conversation.critical.member == CREDEX_MEMBER
    assert conversation.critical.accounts == [CREDEX_ACCOUNT, BUSINESS]


def test_set_profile_keeps_copies_so_later_changes_to_the_callers_dicts_do_not_leak_in() -> None:
    member = {"memberID": "m", "nested": {"list": [1]}}
    account = {"accountID": "a", "balanceData": {"x": [1]}}
    conversation = new()
    conversation.set_profile(member, [account])
    member["nested"]["list"].append(2)  # type: ignore[index]
    account["balanceData"]["x"].append(2)  # type: ignore[index]
    assert conversation.critical.member == {"memberID": "m", "nested": {"list": [1]}}
    assert conversation.critical.accounts == [{"accountID": "a", "balanceData": {"x": [1]}}]


@pytest.mark.parametrize(
    ("data", "tier"),
    [
        ({"memberTier": 1}, 1),
        ({"memberTier": 3.0}, 3),
        ({"memberTier": "4"}, 4),
        ({"memberTier": {"low": 2, "high": 0}}, 2),  # Neo4j integers of older Credex answers
        ({"tier": 5}, 5),
        ({"memberTier": True}, None),
        ({"memberTier": "gold"}, None),
        ({"memberTier": None}, None),
        ({}, None),
    ],
)
def test_member_tier_is_a_number_or_none(data: dict[str, object], tier: int | None) -> None:
    assert Member({"memberID": "m", **data}).tier == tier


def test_member_name_falls_back_to_a_name_field_and_accessors_read_other_spellings() -> None:
    member = Member({"member_id": 7, "name": "Rudo"})
    assert (member.member_id, member.name, member.tier, member.firstname) == (
        "7",
        "Rudo",
        None,
        None,
    )
    assert Member({"memberID": "m", "firstname": "Rudo"}).name == "Rudo"
    assert Member({"memberID": "m"}).name == ""
    account = Account({"account_id": "x", "name": "Main", "handle": "rudo"})
    assert (account.account_id, account.name, account.handle) == ("x", "Main", "rudo")


def test_with_one_account_set_profile_makes_it_current() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-1"


def test_with_several_accounts_none_is_current_until_the_member_chooses() -> None:
    # The VimbisoPay bot asks a member with several accounts which one to use.
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL, BUSINESS])
    assert conversation.current_account is None
    assert conversation.select_account("a-2").account_id == "a-2"
    assert conversation.current_account is not None


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (AccountSelection.SINGLE, None),
        (AccountSelection.NONE, None),
        (AccountSelection.FIRST, "a-1"),
        (AccountSelection.PERSONAL, "acc-1"),
        ("personal", "acc-1"),
    ],
)
def test_the_account_selection_decides_the_default_current_account(
    selection: AccountSelection | str, expected: str | None
) -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL, CREDEX_ACCOUNT], selection=selection)
    current = conversation.current_account
    assert (current.account_id if current else None) == expected


def test_a_conversations_account_selection_is_its_default_for_set_profile() -> None:
    conversation = new()
    conversation.account_selection = AccountSelection.FIRST
    conversation.set_profile(MEMBER, [PERSONAL, BUSINESS])
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-1"
    one = new()
    one.account_selection = AccountSelection.NONE
    one.set_profile(MEMBER, [PERSONAL])
    assert one.current_account is None


def test_personal_selection_without_a_personal_account_selects_none() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL], selection="personal")
    assert conversation.current_account is None


def test_an_unknown_account_selection_is_refused() -> None:
    with pytest.raises(InvalidInput, match="single, none, personal, first"):
        new().set_profile(MEMBER, [PERSONAL], selection="random")


def test_set_profile_keeps_the_current_account_when_it_is_still_there() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL, BUSINESS])
    conversation.select_account("a-2")
    renamed = {**BUSINESS, "accountName": "Moyo Traders Ltd"}
    conversation.set_profile(MEMBER, [SAVINGS, PERSONAL, renamed])
    assert conversation.current_account == Account(renamed)
    assert conversation.current_account.name == "Moyo Traders Ltd"


def test_set_profile_applies_the_selection_again_when_the_current_account_is_gone() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL, BUSINESS])
    conversation.select_account("a-2")
    conversation.set_profile(MEMBER, [SAVINGS, PERSONAL])
    assert conversation.current_account is None
    conversation.select_account("a-3")
    conversation.set_profile(MEMBER, [SAVINGS])
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-3"
    conversation.set_profile(MEMBER, [PERSONAL])
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-1"


def test_set_profile_with_no_accounts_leaves_no_current_account() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    conversation.set_profile(MEMBER, [])
    assert conversation.current_account is None


@pytest.mark.parametrize(
    ("member", "accounts"),
    [
        ({"firstname": "No", "lastname": "Id"}, [PERSONAL]),
        (MEMBER, [{"accountName": "no id"}]),
        ("m-101", [PERSONAL]),
        (MEMBER, ["a-1"]),
        ({"memberID": "   "}, []),
        ({"memberID": True}, []),
        (MEMBER, [PERSONAL, {**BUSINESS, "accountID": "a-1"}]),
        (MEMBER, PERSONAL),
        (MEMBER, "a-1"),
        (MEMBER, None),
    ],
)
def test_set_profile_rejects_data_without_identifiers(member: object, accounts: list) -> None:
    conversation = new()
    with pytest.raises(InvalidInput):
        conversation.set_profile(member, accounts)  # type: ignore[arg-type]
    assert conversation.profile is None


@pytest.mark.parametrize(
    ("member", "accounts", "where"),
    [
        (
            {**MEMBER, "remainingAvailableUSD": float("nan")},
            [],
            r"member\['remainingAvailableUSD'\]",
        ),
        (
            MEMBER,
            [{**PERSONAL, "balanceData": {"x": {1, 2}}}],
            r"accounts\[0\]\['balanceData'\]\['x'\]",
        ),
        ({**MEMBER, "firstname": "Tendai\ud800"}, [], r"member\['firstname'\]"),
        ({**MEMBER, 5: "int key"}, [], r"member\[5\]"),
        (MEMBER, [PERSONAL, {**BUSINESS, "opened": T0}], r"accounts\[1\]\['opened'\]"),
    ],
)
def test_set_profile_refuses_values_json_cannot_carry_and_says_where(
    member: dict[object, object], accounts: list[dict[str, object]], where: str
) -> None:
    conversation = new()
    with pytest.raises(InvalidInput, match=where):
        conversation.set_profile(member, accounts)  # type: ignore[arg-type]
    assert conversation.profile is None


def test_select_account_switches_the_current_account() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL, BUSINESS])
    selected = conversation.select_account("a-2")
    assert selected.account_id == "a-2"
    assert conversation.current_account == selected


def test_select_account_refuses_an_unknown_account() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    with pytest.raises(InvalidInput, match="a-9"):
        conversation.select_account("a-9")
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-1"


def test_select_account_without_a_profile_is_refused() -> None:
    with pytest.raises(InvalidInput):
        new().select_account("a-1")


def test_profile_account_lookup() -> None:
    profile = Profile.of({"memberID": "m"}, [{"accountID": "a"}, {"accountID": 7}])
    assert profile.account("a") == Account({"accountID": "a"})
    assert profile.account("7") == Account({"accountID": 7})
    assert profile.account("b") is None


# The offer flow
OFFER_VALUES = {"amount": "100", "denomination": "ZWG", "recipient": "alice_1"}


def test_propose_offer_builds_a_pending_offer_in_the_session() -> None:
    conversation = new()
    offer = conversation.propose_offer(OFFER_VALUES, T0)
    assert offer.amount == Decimal("100")
    assert offer.denomination is Denomination.ZWG
    assert offer.recipient == "alice_1"
    assert offer.created_at == T0
    assert offer.status is OfferStatus.AWAITING_CONFIRMATION and offer.pending
    assert conversation.offer is offer


def test_propose_offer_defaults_to_usd() -> None:
    offer = new().propose_offer({"amount": "12.50", "recipient": "bob"}, T0)
    assert offer.denomination is Denomination.USD


@pytest.mark.parametrize(
    "values",
    [
        {"denomination": "USD", "recipient": "bob"},
        {"amount": "100", "denomination": "USD"},
        {"amount": "lots", "recipient": "bob"},
        {"amount": "100", "denomination": "EUR", "recipient": "bob"},
        {"amount": "100", "recipient": "bob-1"},
        {"amount": "-5", "recipient": "bob"},
        {"amount": "0", "recipient": "bob"},
        {"amount": "NaN", "recipient": "bob"},
        {"amount": "Infinity", "recipient": "bob"},
    ],
)
def test_propose_offer_rejects_incomplete_or_invalid_values(values: dict[str, str]) -> None:
    conversation = new()
    with pytest.raises(InvalidInput):
        conversation.propose_offer(values, T0)
    assert conversation.offer is None


def test_confirm_offer_is_signed_by_the_member() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    conversation.propose_offer(OFFER_VALUES, T0)
    offer = conversation.confirm_offer()
    assert offer.status is OfferStatus.CONFIRMED
    assert offer.signed_by == "m-101"
    assert conversation.offer is offer


def test_confirm_offer_needs_a_profile_to_sign_with() -> None:
    conversation = new()
    conversation.propose_offer(OFFER_VALUES, T0)
    with pytest.raises(InvalidInput, match="signature"):
        conversation.confirm_offer()
    assert conversation.offer is not None and conversation.offer.pending


def test_confirming_twice_is_refused() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    conversation.propose_offer(OFFER_VALUES, T0)
    conversation.confirm_offer()
    with pytest.raises(InvalidInput, match="already confirmed"):
        conversation.confirm_offer()


@pytest.mark.parametrize("action", ["confirm_offer", "cancel_offer"])
def test_confirm_or_cancel_without_an_offer_is_refused(action: str) -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    with pytest.raises(InvalidInput, match="no offer"):
        getattr(conversation, action)()


def test_cancel_offer_marks_it_cancelled_and_it_can_no_longer_be_confirmed() -> None:
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL])
    conversation.propose_offer(OFFER_VALUES, T0)
    assert conversation.cancel_offer().status is OfferStatus.CANCELLED
    with pytest.raises(InvalidInput, match="already cancelled"):
        conversation.confirm_offer()
    with pytest.raises(InvalidInput, match="already cancelled"):
        conversation.cancel_offer()


# Greetings
@pytest.mark.parametrize(
    "text",
    ["hi", "Hello!", "HELLO", "mhoro", "Makadii?", "salibonani", "good morning", "Good  Morning."],
)
def test_is_greeting_recognises_english_shona_and_ndebele_greetings(text: str) -> None:
    assert is_greeting(text)


@pytest.mark.parametrize("text", ["hi there bob", "100", "", "USD 100", "history", "hi5"])
def test_is_greeting_ignores_other_messages(text: str) -> None:
    assert not is_greeting(text)


# domain.lifecycle.resume
def _stored(
    *,
    critical: CriticalData | None = None,
    session: Session | None = None,
    form: Form | None = None,
    version: int = 3,
    damaged: bool = False,
) -> StoredConversation:
    return StoredConversation(
        critical=critical, session=session, form=form, version=version, damaged=damaged
    )


def _critical(last_seen_ago: timedelta = timedelta(0)) -> CriticalData:
    critical = CriticalData(created_at=T0, last_seen_at=T0 - last_seen_ago)
    conversation = new()
    conversation.set_profile(MEMBER, [PERSONAL, BUSINESS])
    conversation.select_account("a-2")
    critical.member = conversation.critical.member
    critical.accounts = conversation.critical.accounts
    critical.current_account_id = conversation.critical.current_account_id
    return critical


def _session(last_seen_ago: timedelta) -> Session:
    session = Session.begin(T0 - last_seen_ago)
    session.stage = session.option = "offer_amount"
    session.menu = [DEFAULT_STAGE, OFFER]
    return session


def test_resume_on_first_contact_welcomes_a_new_conversation() -> None:
    conversation, changed = resume(DIGITS, _stored(version=0), T0, TIMEOUTS)
    assert changed
    assert conversation.notices == [Notice.WELCOME]
    assert conversation.phone == DIGITS
    assert conversation.stage == DEFAULT_STAGE
    assert conversation.version == 0


def test_resume_of_a_live_session_changes_nothing() -> None:
    stored = _stored(critical=_critical(), session=_session(timedelta(minutes=4)))
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert not changed
    assert conversation.notices == []
    assert conversation.stage == "offer_amount"
    assert conversation.menu == [DEFAULT_STAGE, OFFER]
    assert conversation.version == 3


def test_resume_at_exactly_the_session_timeout_is_still_live() -> None:
    stored = _stored(critical=_critical(), session=_session(TIMEOUTS.session))
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert not changed and conversation.stage == "offer_amount"


def test_resume_after_session_timeout_returns_to_menu_keeping_critical_data_and_live_form() -> None:
    form = Form.start("offer", ["amount", "recipient"], T0 - timedelta(minutes=6), TIMEOUTS.form)
    form.values["recipient"] = "alice_1"
    stored = _stored(
        critical=_critical(),
        session=_session(TIMEOUTS.session + timedelta(seconds=1)),
        form=form,
    )
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert changed
    assert conversation.notices == [Notice.SESSION_EXPIRED]
    assert (conversation.stage, conversation.option, conversation.menu) == (
        DEFAULT_STAGE,
        None,
        [],
    )
    assert conversation.profile is not None
    assert conversation.profile.member.member_id == "m-101"
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-2"
    assert conversation.form is not None
    assert conversation.form.values == {"recipient": "alice_1"}
    assert conversation.version == 3


def test_resume_with_critical_data_but_no_session_starts_a_session_at_the_menu() -> None:
    conversation, changed = resume(DIGITS, _stored(critical=_critical()), T0, TIMEOUTS)
    assert changed
    assert conversation.notices == [Notice.SESSION_EXPIRED]
    assert conversation.stage == DEFAULT_STAGE
    assert conversation.profile is not None


def test_resume_drops_an_expired_form_and_says_so() -> None:
    form = Form.start("offer", ["amount"], T0 - TIMEOUTS.form, TIMEOUTS.form)
    stored = _stored(critical=_critical(), session=_session(timedelta(minutes=1)), form=form)
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert changed
    assert conversation.form is None
    assert conversation.notices == [Notice.FORM_EXPIRED]
    assert conversation.stage == "offer_amount"


def test_resume_after_session_and_form_expiry_reports_both() -> None:
    form = Form.start("offer", ["amount"], T0 - timedelta(minutes=11), TIMEOUTS.form)
    stored = _stored(critical=_critical(), session=_session(timedelta(minutes=11)), form=form)
    conversation, _ = resume(DIGITS, stored, T0, TIMEOUTS)
    assert conversation.notices == [Notice.SESSION_EXPIRED, Notice.FORM_EXPIRED]
    assert conversation.form is None
    assert conversation.profile is not None


def test_resume_with_critical_data_lost_under_a_live_session_says_state_lost() -> None:
    stored = _stored(session=_session(timedelta(minutes=1)))
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert changed
    assert conversation.notices == [Notice.STATE_LOST]
    assert conversation.profile is None
    assert conversation.stage == DEFAULT_STAGE
    assert conversation.version == 3


def test_resume_with_critical_data_lost_under_a_live_form_says_state_lost() -> None:
    form = Form.start("offer", ["amount"], T0 - timedelta(minutes=1), TIMEOUTS.form)
    conversation, _ = resume(DIGITS, _stored(form=form), T0, TIMEOUTS)
    assert conversation.notices == [Notice.STATE_LOST]
    assert conversation.form is None


def test_resume_with_only_expired_leftovers_welcomes_rather_than_alarms() -> None:
    form = Form.start("offer", ["amount"], T0 - timedelta(minutes=20), TIMEOUTS.form)
    stored = _stored(session=_session(timedelta(minutes=20)), form=form)
    conversation, _ = resume(DIGITS, stored, T0, TIMEOUTS)
    assert conversation.notices == [Notice.WELCOME]


def test_resume_with_critical_data_older_than_state_timeout_starts_fresh() -> None:
    form = Form.start("offer", ["amount"], T0 - timedelta(minutes=1), TIMEOUTS.form)
    stored = _stored(
        critical=_critical(TIMEOUTS.state + timedelta(seconds=1)),
        session=_session(timedelta(minutes=1)),
        form=form,
    )
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert changed
    assert conversation.notices == [Notice.WELCOME]
    assert conversation.profile is None and conversation.current_account is None
    assert conversation.form is None
    assert conversation.stage == DEFAULT_STAGE
    assert conversation.critical.created_at == T0
    assert conversation.version == 3


def test_resume_with_critical_data_at_exactly_state_timeout_keeps_it() -> None:
    stored = _stored(critical=_critical(TIMEOUTS.state), session=_session(timedelta(0)))
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert not changed and conversation.profile is not None


def test_resume_with_a_damaged_part_and_no_critical_data_says_state_lost() -> None:
    conversation, changed = resume(DIGITS, _stored(damaged=True), T0, TIMEOUTS)
    assert changed
    assert conversation.notices == [Notice.STATE_LOST]


def test_resume_with_a_damaged_part_beside_live_critical_data_keeps_it_and_says_so() -> None:
    stored = _stored(critical=_critical(), session=_session(timedelta(minutes=1)), damaged=True)
    conversation, changed = resume(DIGITS, stored, T0, TIMEOUTS)
    assert changed
    assert Notice.STATE_LOST in conversation.notices
    assert conversation.profile is not None


def test_context_is_flow_data_that_lives_and_dies_with_the_session() -> None:
    conversation = new()
    conversation.context["draft"] = {"step": 2}
    assert conversation.session.context == {"draft": {"step": 2}}
    conversation.restart(T0, Notice.RESTARTED)
    assert conversation.context == {}
