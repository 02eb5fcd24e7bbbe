"""StateService through the real container on the in-memory backend, with a fake clock: what
the contract suite (tests/contract, every backend) leaves open: copies never alias the store,
expiry at its exact boundaries, the token kept out of sight, and the configuration."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from fakes import OTHER_PHONE, PHONE, FakeClock

from vimbiso_state.domain.conversation import DEFAULT_STAGE, Conversation, Notice
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import (
    ConfigurationError,
    FormValidationError,
    NoActiveForm,
    TokenError,
)
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"
SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LWp3dC00MjQy.sig-XYZZY-4242"
MEMBER = {"memberID": "m-101", "firstname": "Tendai", "lastname": "Moyo"}
ACCOUNTS = [
    {"accountID": "a-1", "accountName": "Personal", "accountHandle": "tendai"},
    {"accountID": "a-2", "accountName": "Business", "accountHandle": "moyo_traders"},
]


# copies: what a caller holds is never the stored state


def test_mutating_a_returned_conversation_does_not_change_stored_state(
    state: StateService,
) -> None:
    state.start(PHONE)
    state.set_profile(PHONE, MEMBER, ACCOUNTS)
    state.update(PHONE, lambda c: c.select_account("a-1"))
    conversation = state.navigate(PHONE, OFFER)
    conversation.navigate("offer_amount")
    conversation.session.menu.append("evil")
    assert conversation.profile is not None
    conversation.profile.member.data["memberID"] = "m-evil"
    conversation.critical.accounts.clear()
    conversation.critical.current_account_id = None
    stored = state.start(PHONE)
    assert stored.stage == OFFER
    assert stored.menu == [DEFAULT_STAGE]
    assert stored.profile is not None and len(stored.profile.accounts) == 2
    assert stored.profile.member.member_id == "m-101"
    assert stored.current_account is not None


def test_mutating_the_conversation_given_to_a_change_after_it_returns_has_no_effect(
    state: StateService,
) -> None:
    state.start(PHONE)
    kept: list[Conversation] = []
    state.update(PHONE, kept.append)
    kept[0].navigate(OFFER)
    assert state.start(PHONE).stage == DEFAULT_STAGE


def test_mutating_input_dicts_or_returned_forms_does_not_change_stored_state(
    state: StateService,
) -> None:
    member = {**MEMBER, "extra": {"nested": [1]}}
    accounts = [{**ACCOUNTS[0], "balanceData": {"securedNetBalancesByDenom": ["1.00 USD"]}}]
    state.set_profile(PHONE, member, accounts)
    member["extra"]["nested"].append(2)
    accounts[0]["balanceData"]["securedNetBalancesByDenom"].append("2.00 USD")
    accounts.append(ACCOUNTS[1])
    state.form_start(PHONE, "offer", ["amount", "recipient"])
    form = state.form_fill(PHONE, recipient="alice_1")
    form.values["amount"] = "1000000"
    stored = state.start(PHONE)
    assert stored.profile is not None
    assert stored.profile.member.data == {**MEMBER, "extra": {"nested": [1]}}
    assert [a.data["balanceData"] for a in stored.profile.accounts] == [
        {"securedNetBalancesByDenom": ["1.00 USD"]}
    ]
    assert stored.form is not None and stored.form.values == {"recipient": "alice_1"}


# expiry through the clock
def _conversation_in_progress(state: StateService) -> None:
    state.start(PHONE)
    state.set_profile(PHONE, MEMBER, ACCOUNTS)
    state.update(PHONE, lambda c: c.select_account("a-2"))
    state.save_token(PHONE, SECRET)
    state.form_start(PHONE, "offer", ["amount", "recipient"])
    state.form_fill(PHONE, recipient="alice_1")
    state.navigate(PHONE, OFFER)
    state.navigate(PHONE, "offer_amount")


def test_form_expiry_is_reported_however_late_the_user_returns(
    state: StateService, clock: FakeClock
) -> None:
    _conversation_in_progress(state)
    clock.advance(hours=3)  # long after the form's key has been collected
    conversation = state.start(PHONE)
    assert Notice.FORM_EXPIRED in conversation.notices
    assert Notice.SESSION_EXPIRED in conversation.notices
    assert conversation.form is None
    assert conversation.profile is not None
    assert state.start(PHONE).notices == []


def test_form_expires_ten_minutes_after_its_last_answer(
    state: StateService, clock: FakeClock
) -> None:
    _conversation_in_progress(state)
    clock.advance(minutes=4)
    state.navigate(PHONE, "offer_recipient")
    clock.advance(minutes=4)
    state.back(PHONE)
    clock.advance(minutes=2)
    conversation = state.start(PHONE)
    assert conversation.notices == [Notice.FORM_EXPIRED]
    assert conversation.form is None
    assert conversation.stage == "offer_amount"
    with pytest.raises(NoActiveForm):
        state.form_fill(PHONE, amount="100")


# forms
def test_form_fill_with_a_bad_value_raises_and_keeps_earlier_values(state: StateService) -> None:
    state.form_start(PHONE, "offer", ["amount", "denomination", "recipient"])
    state.form_fill(PHONE, recipient="alice_1")
    with pytest.raises(FormValidationError) as caught:
        state.form_fill(PHONE, amount="100 EUR", denomination="ZWG")
    assert set(caught.value.errors) == {"amount"}
    stored = state.start(PHONE)
    assert stored.form is not None and stored.form.values == {"recipient": "alice_1"}


def test_form_fill_amount_with_code_fills_both_fields(state: StateService) -> None:
    state.form_start(PHONE, "offer", ["amount", "denomination", "recipient"])
    form = state.form_fill(PHONE, amount="ZWG 5")
    assert form.values == {"amount": "5", "denomination": "ZWG"}
    assert form.missing() == ["recipient"]


def test_form_start_replaces_a_previous_form(state: StateService) -> None:
    state.form_start(PHONE, "offer", ["amount"])
    state.form_fill(PHONE, amount="5")
    form = state.form_start(PHONE, "transfer", ["recipient"])
    assert (form.name, form.values) == ("transfer", {})


# tokens


def test_tokens_are_per_user(state: StateService) -> None:
    state.save_token(PHONE, SECRET)
    assert state.token(OTHER_PHONE) is None


def test_token_value_never_appears_in_reprs_strings_stored_bytes_or_logs(
    state: StateService, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state.start(PHONE)
    state.save_token(PHONE, SECRET)
    conversation = state.navigate(PHONE, OFFER)
    number = PhoneNumber.parse(PHONE)
    sealed = container.tokens().get(number)
    assert sealed is not None
    token = container.cipher().open(number, sealed)
    assert token.value == SECRET  # the cipher does hold it...
    shown = [
        repr(state),
        str(state),
        repr(conversation),
        str(conversation),
        conversation.to_json(),
        repr(token),
        str(token),
        repr(container.settings()),
        sealed.decode("latin-1"),
        caplog.text,
    ]
    for text in shown:  # ...but nothing shows it
        assert SECRET not in text
        assert "XYZZY" not in text


def test_tampered_token_is_rejected(state: StateService, container: Container) -> None:
    state.save_token(PHONE, SECRET)
    number = PhoneNumber.parse(PHONE)
    sealed = container.tokens().get(number)
    assert sealed is not None
    tampered = sealed[:-5] + (b"AAAAA" if not sealed.endswith(b"AAAAA") else b"BBBBB")
    container.tokens().put(number, tampered, timedelta(minutes=30))
    with pytest.raises(TokenError):
        state.token(PHONE)


# reset
def test_reset_forgets_conversation_form_and_token_but_not_handled_messages(
    state: StateService,
) -> None:
    _conversation_in_progress(state)
    before = state.handle_once(PHONE, "wamid.1", lambda c: None)
    assert before is not None
    state.reset(PHONE)
    assert state.token(PHONE) is None
    conversation = state.start(PHONE)
    assert conversation.notices == [Notice.WELCOME]
    # A version never comes back: a writer that loaded before the reset cannot pass.
    assert conversation.version > before.version
    assert conversation.profile is None and conversation.current_account is None
    assert conversation.form is None
    assert conversation.stage == DEFAULT_STAGE
    # A redelivery of a message handled before the reset is still a duplicate.
    assert state.handle_once(PHONE, "wamid.1", lambda c: None) is None


def test_reset_of_one_user_leaves_others_alone(state: StateService) -> None:
    state.set_profile(PHONE, MEMBER, ACCOUNTS)
    state.set_profile(OTHER_PHONE, MEMBER, ACCOUNTS)
    state.save_token(OTHER_PHONE, SECRET)
    state.reset(PHONE)
    assert state.start(OTHER_PHONE).profile is not None
    assert state.token(OTHER_PHONE) == SECRET


# profile


@pytest.mark.parametrize(
    ("setting", "one", "several"),
    [
        ("single", "a-1", None),
        ("none", None, None),
        ("first", "a-1", "a-1"),
        ("personal", None, "a-2"),
        (" Personal ", None, "a-2"),
    ],
)
def test_the_default_account_setting_decides_the_current_account(
    clock: FakeClock, setting: str, one: str | None, several: str | None
) -> None:
    container = Container()
    container.config.from_dict({"backend": "memory", "default_account": setting})
    container.clock.override(clock)
    state = container.state_service()
    accounts = [ACCOUNTS[0], {**ACCOUNTS[1], "accountType": "PERSONAL"}]
    for phone, given, expected in ((PHONE, ACCOUNTS[:1], one), (OTHER_PHONE, accounts, several)):
        conversation = state.set_profile(phone, MEMBER, given)
        current = conversation.current_account
        assert (current.account_id if current else None) == expected
        # The conversation's own set_profile, inside a change, follows the setting too.
        state.reset(phone)
        state.update(phone, lambda c, given=given: c.set_profile(MEMBER, given))
        current = state.start(phone).current_account
        assert (current.account_id if current else None) == expected


def test_set_profile_takes_a_selection_for_one_call(state: StateService) -> None:
    conversation = state.set_profile(PHONE, MEMBER, ACCOUNTS, selection="first")
    assert conversation.current_account is not None
    assert conversation.current_account.account_id == "a-1"


def test_an_unknown_default_account_setting_is_a_configuration_error() -> None:
    container = Container()
    container.config.from_dict({"backend": "memory", "default_account": "random"})
    with pytest.raises(ConfigurationError, match="default_account"):
        container.state_service()


# handle_once
def test_handle_once_applies_a_message_once_and_returns_none_for_a_repeat(
    state: StateService,
) -> None:
    state.start(PHONE)
    calls: list[int] = []

    def change(conversation: Conversation) -> None:
        calls.append(1)
        conversation.navigate(OFFER)

    first = state.handle_once(PHONE, "wamid.HBgM123", change)
    assert first is not None and first.stage == OFFER and first.version == 2
    assert state.handle_once(PHONE, "wamid.HBgM123", change) is None
    assert calls == [1]
    stored = state.start(PHONE)
    assert stored.menu == [DEFAULT_STAGE]
    assert stored.version == 2


# configuration
def test_container_from_env_honours_the_session_ttl() -> None:
    container = Container.from_env({"STATE_BACKEND": "memory", "STATE_SESSION_TTL": "60"})
    clock = FakeClock()
    container.clock.override(clock)
    state = container.state_service()
    state.navigate(PHONE, OFFER)
    clock.advance(60)
    assert state.start(PHONE).notices == []
    clock.advance(61)
    conversation = state.start(PHONE)
    assert conversation.notices == [Notice.SESSION_EXPIRED]
    assert conversation.stage == DEFAULT_STAGE


def test_container_from_env_ignores_unrelated_variables() -> None:
    container = Container.from_env({"STATE_BACKEND": "memory", "HOME": "/root", "REDIS_URL": "x"})
    assert container.settings().session_ttl == 300


@pytest.mark.parametrize(
    "config",
    [
        {"backend": "mongo"},
        {"session_ttl": -1},
        {"form_ttl": 0},
        {"bogus": 1},
        {"max_retries": -1},
        {"session_ttl": "soon"},
        {"redis_url": "http://127.0.0.1:6379"},
        {"session_ttl": 600, "form_ttl": 600, "state_ttl": 60},
        {"phone_region": "XX"},
        {"phone_region": "Zimbabwe"},
        {"default_account": "best"},
    ],
)
def test_bad_config_raises_configuration_error(config: dict[str, object]) -> None:
    container = Container()
    container.config.from_dict(config)
    with pytest.raises(ConfigurationError):
        container.state_service()


@pytest.mark.parametrize(
    "environ",
    [
        {"STATE_BACKEND": "mongo"},
        {"STATE_SESSION_TTL": "-5"},
        {"STATE_MAX_RETRIES": "many"},
        {"STATE_PHONE_REGION": "QQ"},
        {"STATE_DEFAULT_ACCOUNT": "all"},
    ],
)
def test_bad_environment_raises_configuration_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Container.from_env(environ).state_service()


@pytest.mark.parametrize("service", ["state_service", "async_state_service"])
def test_redis_backend_without_token_keys_is_refused_at_start_up(service: str) -> None:
    """Not at the first member who logs in, as a bug logged on every message (the bot's first
    "hi" got no reply): the service is not built, without contacting a server."""
    container = Container()
    container.config.from_dict({"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"})
    with pytest.raises(ConfigurationError, match="STATE_TOKEN_KEYS"):
        getattr(container, service)()


def test_bad_token_key_is_refused_without_echoing_it() -> None:
    container = Container()
    container.config.from_dict({"backend": "memory", "token_keys": ["not-a-fernet-key-XYZZY"]})
    with pytest.raises(ConfigurationError) as caught:
        container.state_service()
    assert "XYZZY" not in str(caught.value)


def test_the_phone_region_setting_reads_national_numbers_as_the_same_user() -> None:
    container = Container.from_env({"STATE_BACKEND": "memory", "STATE_PHONE_REGION": "zw"})
    assert container.settings().phone_region == "ZW"
    state = container.state_service()
    state.navigate("077 123 4567", OFFER)
    assert state.start("+263771234567").stage == OFFER
    assert state.start("263771234567").stage == OFFER  # WhatsApp's wa_id
    assert state.start("+263 (0) 77 123 4567").stage == OFFER


@pytest.mark.parametrize(
    ("environ", "setting", "value"),
    [
        ({"STATE_PHONE_REGION": "ZW"}, "phone_region", "ZW"),
        ({"STATE_PHONE_REGION": ""}, "phone_region", None),
        ({}, "phone_region", None),
        ({"STATE_DEFAULT_ACCOUNT": "PERSONAL"}, "default_account", "personal"),
        ({}, "default_account", "single"),
    ],
)
def test_phone_region_and_default_account_come_from_the_environment(
    environ: dict[str, str], setting: str, value: object
) -> None:
    container = Container.from_env({"STATE_BACKEND": "memory", **environ})
    assert getattr(container.settings(), setting) == value


def test_the_configuration_never_shows_token_keys_or_a_redis_password_in_a_repr() -> None:
    key = Fernet.generate_key().decode()
    url = "redis://bot:hunter2-XYZZY@127.0.0.1:1/0"
    for keys in (key, [key], (key,)):
        container = Container()
        container.config.from_dict({"backend": "redis", "redis_url": url, "token_keys": keys})
        config = container.config()
        for shown in (repr(config), str(config), f"{config}", repr(container.settings())):
            assert key not in shown and "hunter2" not in shown, shown
        assert "***" in repr(config)
        # The values themselves are intact: the settings read the real key and URL.
        assert container.settings().token_keys == (key,)
        assert container.settings().redis_url == url
    from_settings = Container.from_env(
        {"STATE_BACKEND": "memory", "STATE_TOKEN_KEYS": key, "REDIS_STATE_URL": url}
    )
    assert key not in repr(from_settings.config()) and "hunter2" not in repr(from_settings.config())
    assert from_settings.state_service().token(PHONE) is None  # the key works


def test_the_configuration_shows_a_redis_url_without_a_password_as_it_is() -> None:
    container = Container()
    container.config.from_dict({"backend": "memory", "redis_url": "redis://cache:6379/2"})
    assert "'redis://cache:6379/2'" in repr(container.config())
