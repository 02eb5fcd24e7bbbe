"""PhoneNumber: the only way a user's identity becomes part of a storage key."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vimbiso_state.domain.errors import InvalidPhoneNumber
from vimbiso_state.domain.phone import PhoneNumber

E164_DIGITS = r"^[1-9][0-9]{7,14}$"


@pytest.mark.parametrize(
    "text",
    [
        "+263 77 123 4567",
        "00263771234567",
        "263-77-123-4567",
        "(263) 771234567",
        "263771234567",
        "+263.77.123.4567",
        "  +263771234567\n",
    ],
)
def test_parse_accepts_common_spellings_and_gives_canonical_digits(text: str) -> None:
    number = PhoneNumber.parse(text)
    assert number.digits == "263771234567"
    assert number.e164 == "+263771234567"
    assert str(number) == "263771234567"


def test_parse_returns_an_existing_phone_number_unchanged() -> None:
    number = PhoneNumber.parse("+263771234567")
    assert PhoneNumber.parse(number) is number


def test_numbers_with_the_same_digits_are_equal_whatever_the_spelling() -> None:
    assert PhoneNumber.parse("+263 77 123 4567") == PhoneNumber.parse("00263771234567")
    assert hash(PhoneNumber.parse("263-77-123-4567")) == hash(PhoneNumber("263771234567"))


def test_parse_accepts_the_shortest_and_longest_e164_numbers() -> None:
    assert PhoneNumber.parse("12345678").digits == "12345678"
    assert PhoneNumber.parse("+123456789012345").digits == "123456789012345"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="whitespace-only"),
        pytest.param("\t\n", id="tabs-and-newlines"),
        pytest.param("abc", id="letters"),
        pytest.param("+263 77 ABC 4567", id="letters-inside"),
        pytest.param("263771234567*", id="star"),
        pytest.param("*", id="star-alone"),
        pytest.param("263:771234567", id="colon"),
        pytest.param("{263771234567}", id="braces"),
        pytest.param("263771234567}", id="closing-brace"),
        pytest.param("263771234567?", id="question-mark"),
        pytest.param("[263771234567]", id="bracket"),
        pytest.param("2637712", id="seven-digits"),
        pytest.param("+1234567", id="too-short-with-plus"),
        pytest.param("1234567890123456", id="sixteen-digits"),
        pytest.param("0771234567", id="leading-zero"),
        pytest.param("+0263771234567", id="plus-then-zero"),
        pytest.param("000263771234567", id="three-zeros"),
        pytest.param("++263771234567", id="double-plus"),
        pytest.param(
            "\u0662\u0666\u0663\u0667\u0667\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
            id="arabic-indic",
        ),
        pytest.param(
            "\uff12\uff16\uff13\uff17\uff17\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
            id="fullwidth",
        ),
        pytest.param("263\u0967\u0968\u0969456789", id="devanagari-mixed"),
        pytest.param("263771234567\x00", id="nul"),
        pytest.param("263 77 123 4567 ext 2", id="extension"),
        pytest.param("1" * 1000, id="1000-chars"),
        pytest.param(" " * 40 + "263771234567", id="padded-beyond-limit"),
    ],
)
def test_parse_rejects_text_that_is_not_an_e164_number(text: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        PhoneNumber.parse(text)


@pytest.mark.parametrize("value", [None, 263771234567, 2.63e11, b"263771234567", ["263771234567"]])
def test_parse_rejects_values_that_are_not_text(value: object) -> None:
    with pytest.raises(InvalidPhoneNumber, match="must be text"):
        PhoneNumber.parse(value)


def test_invalid_phone_number_is_a_state_error_and_a_value_error() -> None:
    from vimbiso_state.services.exceptions import StateError

    with pytest.raises(StateError):
        PhoneNumber.parse("x")
    with pytest.raises(ValueError):
        PhoneNumber.parse("x")


@pytest.mark.parametrize("digits", ["+263771234567", "0263771234567", "2637 71234567", "١٢٣٤٥٦٧٨٩"])
def test_constructor_refuses_anything_but_canonical_digits(digits: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        PhoneNumber(digits)


def test_error_message_shows_the_expected_format() -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"E\.164"):
        PhoneNumber.parse("hello")


def _parses_to_canonical_digits_or_refuses(text: object) -> None:
    try:
        number = PhoneNumber.parse(text)
    except InvalidPhoneNumber:
        return
    assert isinstance(number, PhoneNumber)
    assert re.fullmatch(E164_DIGITS, number.digits), number.digits
    assert number.digits.isascii()


@given(st.text())
@example("+263 77 123 4567")
@example("{263771234567}")
@example("\u0662\u0666\u0663\u0667\u0667\u0661\u0662\u0663\u0664")
def test_parse_of_any_text_gives_canonical_digits_or_invalid_phone_number(text: str) -> None:
    _parses_to_canonical_digits_or_refuses(text)


@given(st.from_regex(r"\A[+0]{0,3}[0-9 ()\-.+*:{}?\[\]]{0,20}\Z"))
def test_parse_of_digit_and_separator_soup_gives_canonical_digits_or_refuses(text: str) -> None:
    _parses_to_canonical_digits_or_refuses(text)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(list("0123456789")),
            st.sampled_from([" ", "-", ".", "(", ")", "+"]),
            st.characters(categories=["Nd"]),
        ),
        max_size=24,
    ).map("".join)
)
def test_parse_of_unicode_digit_mixtures_never_lets_a_non_ascii_digit_through(text: str) -> None:
    _parses_to_canonical_digits_or_refuses(text)


@given(st.from_regex(r"\A\+?[1-9][0-9]{7,14}\Z"))
def test_parse_accepts_every_well_formed_number(text: str) -> None:
    assert PhoneNumber.parse(text).digits == text.lstrip("+")
