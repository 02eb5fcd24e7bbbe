"""The offer form's rules: amounts, handles, and forms filled over several messages."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fakes import T0

from vimbiso_state.domain.errors import FormIncomplete, FormValidationError, InvalidInput
from vimbiso_state.domain.form import MAX_FIELDS, Form
from vimbiso_state.domain.offer import Denomination, parse_amount, parse_denomination, parse_handle

TTL = timedelta(minutes=10)


@pytest.mark.parametrize(
    ("text", "amount", "denomination"),
    [
        ("100", Decimal("100"), Denomination.USD),
        ("USD 100", Decimal("100"), Denomination.USD),
        ("100 USD", Decimal("100"), Denomination.USD),
        ("usd 12.50", Decimal("12.50"), Denomination.USD),
        ("ZWG 5", Decimal("5"), Denomination.ZWG),
        ("100XAU", Decimal("100"), Denomination.XAU),
        ("cad 0.5", Decimal("0.5"), Denomination.CAD),
        ("  7 zwg  ", Decimal("7"), Denomination.ZWG),
    ],
)
def test_parse_amount_accepts_number_with_optional_code_before_or_after(
    text: str, amount: Decimal, denomination: Denomination
) -> None:
    assert parse_amount(text) == (amount, denomination)


@pytest.mark.parametrize(
    "text",
    [
        "USD 100 USD",
        "USD 100 ZWG",
        "abc",
        "0",
        "0.00",
        "-5",
        "",
        "   ",
        "100 EUR",
        "EUR 100",
        "1.234",
        "1,000",
        "1e3",
        "NaN",
        "Infinity",
        "1" * 13,
        "USD",
    ],
)
def test_parse_amount_rejects_anything_else(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(text)


@pytest.mark.parametrize("value", [None, 100, Decimal("5")])
def test_parse_amount_rejects_values_that_are_not_text(value: object) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(value)  # type: ignore[arg-type]


def test_parse_amount_error_tells_the_user_the_accepted_forms() -> None:
    with pytest.raises(InvalidInput, match=r"100, USD 100 or 100 USD"):
        parse_amount("lots")


@pytest.mark.parametrize("text", ["alice_1", "Bob", "_", "x" * 64, " alice_1 "])
def test_parse_handle_accepts_letters_digits_and_underscores(text: str) -> None:
    assert parse_handle(text) == text.strip()


@pytest.mark.parametrize(
    "text", ["bob-1", "a b", "", "   ", "x" * 65, "alice*", "user:1", "{x}", "héllo", None]
)
def test_parse_handle_rejects_anything_else(text: object) -> None:
    with pytest.raises(InvalidInput):
        parse_handle(text)  # type: ignore[arg-type]


def test_parse_denomination_is_case_insensitive_and_closed() -> None:
    assert parse_denomination(" zwg ") is Denomination.ZWG
    with pytest.raises(InvalidInput, match="USD, ZWG, XAU, CAD"):
        parse_denomination("EUR")


# Form.start
def test_form_start_records_name_fields_and_deadline() -> None:
    form = Form.start("offer", ["amount", "recipient"], T0, TTL)
    assert (form.name, form.required, form.values) == ("offer", ["amount", "recipient"], {})
    assert form.started_at == T0
    assert form.expires_at == T0 + TTL


@pytest.mark.parametrize("name", ["", "Offer", "offer form", "offer:1", "1offer", "x" * 65, None])
def test_form_start_rejects_a_bad_form_name(name: object) -> None:
    with pytest.raises(InvalidInput, match="form name"):
        Form.start(name, ["amount"], T0, TTL)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "required",
    [
        pytest.param([], id="no-fields"),
        pytest.param(["amount", "amount"], id="duplicate"),
        pytest.param([f"f{i}" for i in range(MAX_FIELDS + 1)], id="too-many"),
    ],
)
def test_form_start_rejects_a_bad_field_list(required: list[str]) -> None:
    with pytest.raises(InvalidInput, match="distinct required fields"):
        Form.start("offer", required, T0, TTL)


@pytest.mark.parametrize("field", ["Amount", "re cipient", "a*", "{x}", ""])
def test_form_start_rejects_a_bad_field_name(field: str) -> None:
    with pytest.raises(InvalidInput, match="form field"):
        Form.start("offer", ["amount", field], T0, TTL)


# Form.fill
def _offer_form() -> Form:
    return Form.start("offer", ["amount", "denomination", "recipient"], T0, TTL)


def test_fill_stores_good_answers() -> None:
    form = _offer_form()
    form.fill({"recipient": "alice_1"}, T0, TTL)
    assert form.values == {"recipient": "alice_1"}


def test_fill_amount_with_code_fills_amount_and_denomination() -> None:
    form = _offer_form()
    form.fill({"amount": "USD 100"}, T0, TTL)
    assert form.values == {"amount": "100", "denomination": "USD"}


def test_fill_amount_without_code_defaults_to_usd() -> None:
    form = _offer_form()
    form.fill({"amount": "12.50"}, T0, TTL)
    assert form.values == {"amount": "12.50", "denomination": "USD"}


def test_fill_normalises_free_text_fields() -> None:
    form = Form.start("feedback", ["comment"], T0, TTL)
    form.fill({"comment": "  great service  "}, T0, TTL)
    assert form.values == {"comment": "great service"}


def test_fill_with_a_bad_answer_names_the_field_and_stores_nothing_of_that_call() -> None:
    form = _offer_form()
    form.fill({"recipient": "alice_1"}, T0, TTL)
    with pytest.raises(FormValidationError) as caught:
        form.fill({"denomination": "ZWG", "amount": "lots"}, T0 + timedelta(minutes=1), TTL)
    assert set(caught.value.errors) == {"amount"}
    assert "amount:" in str(caught.value)
    assert "100, USD 100 or 100 USD" in caught.value.errors["amount"]
    # The good answer of the failed call is not stored; the earlier answer is kept.
    assert form.values == {"recipient": "alice_1"}


def test_fill_with_a_bad_answer_does_not_slide_the_deadline() -> None:
    form = _offer_form()
    with pytest.raises(FormValidationError):
        form.fill({"recipient": "bob-1"}, T0 + timedelta(minutes=5), TTL)
    assert form.expires_at == T0 + TTL


def test_fill_reports_every_bad_field_at_once() -> None:
    form = _offer_form()
    with pytest.raises(FormValidationError) as caught:
        form.fill({"amount": "-5", "recipient": "a b", "denomination": "EUR"}, T0, TTL)
    assert set(caught.value.errors) == {"amount", "recipient", "denomination"}
    assert form.values == {}


@pytest.mark.parametrize(
    ("answers", "field"),
    [
        ({"comment": ""}, "comment"),
        ({"comment": "x" * 501}, "comment"),
        ({"comment": None}, "comment"),
        ({"comment": ["a"]}, "comment"),
        ({"Bad Field": "x"}, "Bad Field"),
    ],
)
def test_fill_rejects_empty_oversized_non_text_and_badly_named_answers(
    answers: dict[str, object], field: str
) -> None:
    form = Form.start("feedback", ["comment"], T0, TTL)
    with pytest.raises(FormValidationError) as caught:
        form.fill(answers, T0, TTL)
    assert field in caught.value.errors
    assert form.values == {}


def test_fill_limits_the_number_of_fields() -> None:
    form = Form.start("survey", ["q0"], T0, TTL)
    form.fill({f"q{i}": "yes" for i in range(MAX_FIELDS)}, T0, TTL)
    with pytest.raises(FormValidationError, match="at most"):
        form.fill({"one_more": "yes"}, T0, TTL)
    assert "one_more" not in form.values


def test_fill_slides_the_deadline_from_the_last_answer() -> None:
    form = _offer_form()
    later = T0 + timedelta(minutes=7)
    form.fill({"recipient": "alice_1"}, later, TTL)
    assert form.expires_at == later + TTL
    assert form.started_at == T0


def test_missing_lists_required_fields_without_values_in_order() -> None:
    form = _offer_form()
    assert form.missing() == ["amount", "denomination", "recipient"]
    form.fill({"recipient": "alice_1"}, T0, TTL)
    assert form.missing() == ["amount", "denomination"]
    assert not form.is_complete


def test_result_of_an_incomplete_form_raises_form_incomplete_naming_missing_fields() -> None:
    form = _offer_form()
    form.fill({"recipient": "alice_1"}, T0, TTL)
    with pytest.raises(FormIncomplete) as caught:
        form.result()
    assert caught.value.missing == ["amount", "denomination"]
    assert caught.value.name == "offer"
    assert "amount" in str(caught.value) and "denomination" in str(caught.value)


def test_result_of_a_complete_form_returns_a_copy_of_every_value() -> None:
    form = _offer_form()
    form.fill({"amount": "ZWG 5", "recipient": "alice_1"}, T0, TTL)
    assert form.is_complete
    result = form.result()
    assert result == {"amount": "5", "denomination": "ZWG", "recipient": "alice_1"}
    result["amount"] = "999"
    assert form.values["amount"] == "5"


def test_form_is_expired_exactly_at_its_deadline_and_not_a_microsecond_before() -> None:
    form = _offer_form()
    assert not form.is_expired(T0 + TTL - timedelta(microseconds=1))
    assert form.is_expired(T0 + TTL)
    assert form.is_expired(T0 + TTL + timedelta(seconds=1))


@pytest.mark.parametrize("text", ["\u0661\u0660\u0660", "\uff11\uff10\uff10", "USD \u0967\u0966"])
def test_amounts_in_non_ascii_digits_are_refused(text: str) -> None:
    # Like phone numbers: only ASCII digits, so what is stored is what the user can read back.
    with pytest.raises(InvalidInput):
        parse_amount(text)
