"""PhoneNumber: the only way a user's identity becomes part of a storage key."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat

from vimbiso_state.domain.errors import ConfigurationError, InvalidPhoneNumber
from vimbiso_state.domain.phone import PhoneNumber

E164_DIGITS = r"^[1-9][0-9]{6,14}$"


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
        "+263 (0) 77 123 4567",
        "+263 (0)77-123-4567",
        "tel:+263-77-123-4567",
        "+2630771234567",
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


def test_a_national_trunk_zero_after_the_country_code_is_the_same_user() -> None:
    # "+263 (0) 77 ..." used to become 2630771234567: a second user for one person.
    assert PhoneNumber.parse("+263 (0) 77 123 4567") == PhoneNumber.parse("+263771234567")


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("+44 20 7946 0958", "442079460958"),  # London
        ("+1 415 555 2671", "14155552671"),  # San Francisco
        ("+27 82 123 4567", "27821234567"),  # South Africa
        ("+49 30 901820", "4930901820"),  # Berlin: a shorter national number
        ("27821234567", "27821234567"),  # a WhatsApp wa_id: international without the "+"
    ],
)
def test_parse_accepts_possible_numbers_of_other_countries(text: str, digits: str) -> None:
    assert PhoneNumber.parse(text).digits == digits
    assert PhoneNumber.parse(text, "ZW").digits == digits


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("12345678", id="too-short-for-its-country"),
        pytest.param("+123456789012345", id="too-long-for-its-country"),
        pytest.param("+263 77 123", id="too-short-for-zimbabwe"),
        pytest.param("+1 415 555 2671 2", id="too-long-for-the-us"),
    ],
)
def test_parse_refuses_digits_that_are_not_a_possible_number(text: str) -> None:
    # Length alone is not enough: libphonenumber knows each country's number lengths.
    with pytest.raises(InvalidPhoneNumber):
        PhoneNumber.parse(text)


@pytest.mark.parametrize(
    "text", ["0771234567", "077 123 4567", "077-123-4567", "(077) 123 4567", "00263771234567"]
)
def test_a_default_region_reads_national_numbers(text: str) -> None:
    assert PhoneNumber.parse(text, "ZW").digits == "263771234567"
    assert PhoneNumber.parse(text, "zw").digits == "263771234567"


def test_without_a_region_a_national_number_is_refused_and_says_what_is_expected() -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"E\.164"):
        PhoneNumber.parse("077 123 4567")
    with pytest.raises(InvalidPhoneNumber, match="nor a possible national number of ZW"):
        PhoneNumber.parse("077 123", "ZW")


def test_a_region_reads_its_own_national_numbers_not_anothers() -> None:
    # In South Africa "082 123 4567" is +27821234567; read as Zimbabwean it is not possible.
    assert PhoneNumber.parse("082 123 4567", "ZA").digits == "27821234567"
    assert PhoneNumber.parse("082 123 4567", "ZA") != PhoneNumber.parse("0821234567", "ZW")


@pytest.mark.parametrize("region", ["XX", "Zimbabwe", "263", 5])
def test_an_unknown_region_is_a_configuration_error(region: object) -> None:
    with pytest.raises(ConfigurationError, match="region"):
        PhoneNumber.parse("0771234567", region)  # type: ignore[arg-type]


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


def _possible(number: phonenumbers.PhoneNumber) -> bool:
    return (
        phonenumbers.is_possible_number_with_reason(number)
        == phonenumbers.ValidationResult.IS_POSSIBLE
    )


@given(st.from_regex(r"\A\+?[1-9][0-9]{7,14}\Z"))
def test_parse_accepts_every_possible_international_number_and_only_those(text: str) -> None:
    try:
        expected = phonenumbers.parse("+" + text.lstrip("+"))
    except phonenumbers.NumberParseException:
        expected = None
    if expected is None or not _possible(expected):
        with pytest.raises(InvalidPhoneNumber):
            PhoneNumber.parse(text)
        return
    canonical = phonenumbers.format_number(expected, PhoneNumberFormat.E164)
    assert PhoneNumber.parse(text).e164 == canonical


# Regions and example numbers libphonenumber ships for them (mobile and fixed line).
EXAMPLES = [
    (region, number)
    for region in sorted(phonenumbers.SUPPORTED_REGIONS)
    for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
    if (number := phonenumbers.example_number_for_type(region, kind)) is not None
    and _possible(number)
]
separators = st.sampled_from([" ", "  ", "-", ".", " - "])


def _respaced(text: str, separator: str, every: int) -> str:
    # Extra separators between digits, as people type them (never inside "tel:" or after "+").
    head = "tel:+" if text.startswith("tel:+") else "+" if text.startswith("+") else ""
    body = text[len(head) :].replace(" ", separator).replace("-", separator)
    digits = [c + (separator if i % every == every - 1 else "") for i, c in enumerate(body)]
    return head + "".join(digits).strip(" -.")


@given(
    example=st.sampled_from(EXAMPLES),
    separator=separators,
    every=st.integers(min_value=1, max_value=5),
)
def test_every_format_of_one_number_is_the_same_user(
    example: tuple[str, phonenumbers.PhoneNumber], separator: str, every: int
) -> None:
    region, number = example
    user = PhoneNumber.parse(phonenumbers.format_number(number, PhoneNumberFormat.E164))
    formats = [
        phonenumbers.format_number(number, PhoneNumberFormat.E164),
        phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        phonenumbers.format_number(number, PhoneNumberFormat.RFC3966),
        phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:],  # WhatsApp's wa_id
    ]
    for text in formats:
        for spelling in (text, _respaced(text, separator, every)):
            if len(spelling) <= 32:  # the input cap
                assert PhoneNumber.parse(spelling) == user, spelling
                assert PhoneNumber.parse(spelling, region) == user, spelling
    # National formats that start with the trunk 0 (Zimbabwe's "077 123 4567", most of the
    # world's) cannot be mistaken for international digits; see the next test for the others.
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    for spelling in (national, _respaced(national, separator, every)):
        if len(spelling) <= 32 and re.fullmatch(r"\(?0[0-9 ()\-./]+", spelling):
            assert PhoneNumber.parse(spelling, region) == user, (region, spelling)


@given(separator=separators, every=st.integers(min_value=1, max_value=5))
def test_every_format_of_a_zimbabwean_number_is_the_same_user(separator: str, every: int) -> None:
    number = phonenumbers.parse("+263771234567")
    for kind in PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.RFC3966:
        text = phonenumbers.format_number(number, kind)
        for spelling in (text, _respaced(text, separator, every)):
            if len(spelling) <= 32:  # the input cap
                assert PhoneNumber.parse(spelling).digits == "263771234567", spelling
                assert PhoneNumber.parse(spelling, "ZW").digits == "263771234567", spelling
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    for spelling in (national, _respaced(national, separator, every)):
        if len(spelling) <= 32:
            assert PhoneNumber.parse(spelling, "ZW").digits == "263771234567", spelling


def test_a_national_number_without_a_leading_zero_is_read_as_international_first() -> None:
    # WhatsApp's sender ids are international digits without the "+", so that reading wins.
    # North American national numbers have no trunk 0: with their "+1" they are unambiguous.
    assert PhoneNumber.parse("(415) 555-2671", "US").digits == "14155552671"  # no other reading
    assert PhoneNumber.parse("+1 664 492 3456", "MS").digits == "16644923456"
    assert PhoneNumber.parse("664 492 3456", "MS").digits == "6644923456"  # Thailand's +66
