"""The storage codec (msgspec) and dataclasses-json read what the other writes, for every type.

Domain objects keep the dataclasses-json API for their users while the storage path uses the
fast codec; a field that one side writes differently from the other (a datetime as an epoch
float, a Decimal as a float, an enum as its name) would silently corrupt stored state.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from fakes import T0
from hypothesis import given, settings
from hypothesis import strategies as st

from vimbiso_state.adapters import codec
from vimbiso_state.domain.conversation import Conversation, CriticalData, Direction, Notice, Session
from vimbiso_state.domain.errors import StateFromNewerRelease, StateTooLarge
from vimbiso_state.domain.form import Form
from vimbiso_state.domain.offer import Denomination, Offer, OfferStatus
from vimbiso_state.domain.schema import SCHEMA_VERSION

# Aware UTC datetimes with microseconds, across a wide range of years.
utc_datetimes = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
amounts = st.one_of(
    *(
        st.decimals(
            min_value=Decimal("0.01"),
            max_value=Decimal("999999999999.99"),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
        for places in (0, 1, 2)
    )
)
texts = st.text(max_size=20)
optional_texts = st.none() | texts
# What the codec accepts as a stage, option or menu entry (the domain's check_step).
steps = st.from_regex(r"\A[A-Za-z0-9_]{1,64}\Z")
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
details = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
# Credex dicts: any JSON object that carries its identifier.
identifiers = st.text(min_size=1, max_size=12).filter(str.strip)
member_dicts = st.builds(lambda d, i: {**d, "memberID": i}, details, identifiers)
account_dicts = st.builds(lambda d, i: {**d, "accountID": i}, details, identifiers)
account_lists = st.lists(account_dicts, max_size=3, unique_by=lambda a: a["accountID"].strip())

# Every init field of every stored type, with an explicit strategy (checked below, so that a
# field added to the domain cannot go untested by accident).
FIELDS: dict[type[Any], dict[str, st.SearchStrategy[Any]]] = {}
STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {}


def _builds(kind: type[Any], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    FIELDS[kind] = fields
    STRATEGIES[kind] = st.builds(kind, **fields)
    return STRATEGIES[kind]


schema_versions = st.integers(min_value=0, max_value=2**31)
offers = _builds(
    Offer,
    amount=amounts,
    denomination=st.sampled_from(Denomination),
    recipient=texts,
    created_at=utc_datetimes,
    status=st.sampled_from(OfferStatus),
    signed_by=optional_texts,
)
forms = _builds(
    Form,
    schema_version=schema_versions,
    name=texts,
    required=st.lists(texts, max_size=4),
    values=st.dictionaries(texts, st.text(max_size=40), max_size=4),
    started_at=utc_datetimes,
    expires_at=utc_datetimes,
    id=texts,
)
sessions = _builds(
    Session,
    schema_version=schema_versions,
    id=texts,
    started_at=utc_datetimes,
    last_seen_at=utc_datetimes,
    stage=steps,
    option=st.none() | steps,
    direction=st.sampled_from(Direction),
    menu=st.lists(steps, max_size=5),
    offer=st.none() | offers,
    context=details,
)
criticals = _builds(
    CriticalData,
    schema_version=schema_versions,
    member=st.none() | member_dicts,
    accounts=account_lists,
    current_account_id=st.none() | texts,
    created_at=utc_datetimes,
    last_seen_at=utc_datetimes,
    form_expires_at=st.none() | utc_datetimes,
    inbound_at=st.none() | utc_datetimes,
)
# Accounts come with their member (set_profile), never alone.
STRATEGIES[CriticalData] = criticals = criticals.map(
    lambda c: c if c.member is not None else dataclasses.replace(c, accounts=[])
)
conversations = _builds(
    Conversation,
    phone=st.from_regex(r"\A[1-9][0-9]{7,14}\Z"),
    critical=criticals,
    session=sessions,
    form=st.none() | forms,
    version=st.integers(min_value=0, max_value=2**53),
    notices=st.lists(st.sampled_from(Notice), max_size=3),
)


@pytest.mark.parametrize("kind", list(FIELDS), ids=lambda k: k.__name__)
def test_strategies_give_every_field_of_every_stored_type(kind: type[Any]) -> None:
    declared = {f.name for f in dataclasses.fields(kind) if f.init}
    assert set(FIELDS[kind]) == declared, "update the strategy for the new or removed field(s)"


def assert_same(left: Any, right: Any, path: str = "$") -> None:
    """Equal and of the same types all the way down.

    ``==`` alone is too forgiving: a StrEnum equals its text, ``Decimal(1) == 1`` and
    ``True == 1``, so a decoder that drops a type would still compare equal.
    """
    assert type(left) is type(right), f"{path}: {type(left).__name__} != {type(right).__name__}"
    if dataclasses.is_dataclass(left):
        for f in dataclasses.fields(left):
            assert_same(getattr(left, f.name), getattr(right, f.name), f"{path}.{f.name}")
    elif isinstance(left, dict):
        assert list(left) == list(right), path
        for key in left:
            assert_same(left[key], right[key], f"{path}[{key!r}]")
    elif isinstance(left, list):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(left, datetime):
        assert left == right and left.utcoffset() == right.utcoffset(), path
    elif isinstance(left, Decimal):
        # The same value with the same exponent: "12.50" stays "12.50".
        assert left.as_tuple() == right.as_tuple(), f"{path}: {left!r} != {right!r}"
    else:
        assert left == right, f"{path}: {left!r} != {right!r}"


def _check_round_trips(kind: type[Any], obj: Any) -> None:
    # dataclasses-json writes, the codec reads.
    from_library = codec.decode(kind, obj.to_json().encode())
    assert from_library == obj
    assert_same(from_library, obj)
    # The codec writes, dataclasses-json reads.
    from_codec = kind.from_json(codec.encode(obj))
    assert from_codec == obj
    assert_same(from_codec, obj)
    # The codec on its own.
    round_trip = codec.decode(kind, codec.encode(obj))
    assert round_trip == obj
    assert_same(round_trip, obj)
    # dataclasses-json on its own.
    assert_same(kind.from_json(obj.to_json()), obj)
    # Both write the same document (modulo whitespace and datetime offset spelling).
    assert _normalised(json.loads(codec.encode(obj))) == _normalised(json.loads(obj.to_json()))


def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, str) and value.endswith(("Z", "+00:00")):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


@pytest.mark.parametrize("kind", list(STRATEGIES), ids=lambda k: k.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_codec_and_dataclasses_json_read_what_the_other_writes(
    kind: type[Any], data: st.DataObject
) -> None:
    _check_round_trips(kind, data.draw(STRATEGIES[kind], label=kind.__name__))


@pytest.mark.parametrize("kind", [Conversation, Offer])
def test_codec_builds_a_decoder_for_types_it_does_not_preload(kind: type[Any]) -> None:
    example = {
        Conversation: Conversation.new("263771234567", datetime(2025, 1, 1, tzinfo=UTC)),
        Offer: Offer(
            amount=Decimal("12.50"),
            denomination=Denomination.XAU,
            recipient="alice_1",
            created_at=datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        ),
    }[kind]
    assert_same(codec.decode(kind, codec.encode(example)), example)


def test_decoded_datetimes_are_aware_utc_and_decimals_keep_their_places() -> None:
    offer = Offer(
        amount=Decimal("12.50"),
        denomination=Denomination.USD,
        recipient="bob",
        created_at=datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=UTC),
    )
    for decoded in (
        codec.decode(Offer, offer.to_json().encode()),
        Offer.from_json(codec.encode(offer)),
    ):
        assert decoded.created_at.utcoffset() is not None
        assert decoded.created_at.microsecond == 123456
        assert str(decoded.amount) == "12.50"
        assert decoded.denomination is Denomination.USD


def test_codec_refuses_a_document_of_the_wrong_shape() -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(Session, b'{"id": 5}')
    with pytest.raises(codec.DecodeError):
        codec.decode(
            Offer,
            b'{"amount": "1", "denomination": "EUR", "recipient": "x",'
            b' "created_at": "2025-01-01T00:00:00Z"}',
        )


def test_codec_refuses_to_encode_an_oversized_document() -> None:
    member = {"memberID": "m", "blob": "x" * codec.MAX_DOCUMENT_BYTES}
    with pytest.raises(StateTooLarge):
        codec.encode(CriticalData(created_at=T0, last_seen_at=T0, member=member))


def test_msgspec_is_the_codec_in_use() -> None:
    # Guards the premise of this module: the storage path is not dataclasses-json.
    assert codec.DecodeError is msgspec.DecodeError


# Stored documents from older releases, or damaged ones
def test_decode_stored_migrates_a_version_1_document() -> None:
    # Version 1 kept a full copy of the current account; version 2 keeps its id.
    data = (
        b'{"schema_version": 1, "created_at": "2025-01-01T00:00:00Z",'
        b' "last_seen_at": "2025-01-01T00:00:00Z",'
        b' "profile": {"member": {"member_id": "m-1"},'
        b' "accounts": [{"account_id": "a-1"}, {"account_id": "a-2"}]},'
        b' "current_account": {"account_id": "a-2", "name": "Farm"}}'
    )
    critical = codec.decode_stored(CriticalData, data)
    assert critical is not None
    assert critical.schema_version == SCHEMA_VERSION
    assert critical.current_account_id == "a-2"
    assert critical.current_account is not None
    assert critical.current_account.account_id == "a-2"
    assert critical.created_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_a_current_document_is_not_migrated_again() -> None:
    critical = CriticalData(created_at=T0, last_seen_at=T0, current_account_id="a-1")
    assert codec.decode_stored(CriticalData, codec.encode(critical)) == critical


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        b"[1, 2]",
        b'{"schema_version": -1}',
        b'{"name": 5}',
    ],
)
def test_decode_stored_drops_an_undecodable_document_instead_of_raising(data: bytes) -> None:
    assert codec.decode_stored(Form, data) is None


def test_a_document_of_a_newer_schema_is_not_dropped_but_refused() -> None:
    """A newer release wrote it (a rolling deploy): dropping it would let this release's next
    write replace it (see tests/contract/test_rolling_deploys.py)."""
    with pytest.raises(StateFromNewerRelease, match="newer release"):
        codec.decode_stored(Form, b'{"schema_version": 99, "name": "offer", "required": []}')


def test_stored_parts_flags_a_dropped_part_as_damaged() -> None:
    parts = codec.StoredParts()
    session = Session.begin(datetime(2025, 1, 1, tzinfo=UTC))
    assert parts.read(Session, codec.encode(session)) == session
    assert parts.read(Session, None) is None
    assert not parts.damaged
    assert parts.read(Form, b"{not json") is None
    assert parts.damaged


def test_decode_stored_migrates_a_version_2_profile_to_the_credex_dicts() -> None:
    # Version 2 reshaped the Credex dicts (tier as text, names merged, ids renamed) and kept
    # the rest under "details"; version 3 stores the dicts as given, in Credex's spelling.
    data = json.dumps(
        {
            "schema_version": 2,
            "created_at": "2025-01-01T00:00:00Z",
            "last_seen_at": "2025-01-01T00:00:00Z",
            "profile": {
                "member": {
                    "member_id": "mem-1",
                    "name": "Tendai Moyo",
                    "tier": "3",
                    "details": {"memberHandle": "tendai", "remainingAvailableUSD": 20.0},
                },
                "accounts": [
                    {
                        "account_id": "acc-1",
                        "name": "Tendai Personal",
                        "handle": "tendai",
                        "details": {"accountType": "PERSONAL", "pendingInData": []},
                    },
                    {"account_id": "acc-2", "name": "", "handle": "", "details": {}},
                ],
            },
            "current_account_id": "acc-2",
        }
    ).encode()
    critical = codec.decode_stored(CriticalData, data)
    assert critical is not None and critical.schema_version == SCHEMA_VERSION
    assert critical.member == {
        "memberHandle": "tendai",
        "remainingAvailableUSD": 20.0,
        "memberID": "mem-1",
        "memberTier": 3,
        "firstname": "Tendai",
        "lastname": "Moyo",
    }
    assert critical.accounts == [
        {
            "accountType": "PERSONAL",
            "pendingInData": [],
            "accountID": "acc-1",
            "accountName": "Tendai Personal",
            "accountHandle": "tendai",
        },
        {"accountID": "acc-2"},
    ]
    profile = critical.profile
    assert profile is not None and profile.member.tier == 3 and profile.member.firstname == "Tendai"
    assert critical.current_account is not None
    assert critical.current_account.account_id == "acc-2"
    # Migrated once: what is written back is a current document that reads the same.
    assert codec.decode_stored(CriticalData, codec.encode(critical)) == critical


def test_decode_stored_migrates_a_version_2_document_without_a_profile() -> None:
    data = (
        b'{"schema_version": 2, "created_at": "2025-01-01T00:00:00Z",'
        b' "last_seen_at": "2025-01-01T00:00:00Z", "profile": null}'
    )
    critical = codec.decode_stored(CriticalData, data)
    assert critical is not None and critical.member is None and critical.accounts == []


PROFILE_DAMAGE = [
    pytest.param({"member": 5}, id="member-not-an-object"),
    pytest.param({"member": {"memberID": "m"}, "accounts": {"a": 1}}, id="accounts-not-a-list"),
    pytest.param({"member": {"memberID": "m"}, "accounts": [7]}, id="account-not-an-object"),
    pytest.param({"member": {"firstname": "Rudo"}}, id="member-without-id"),
    pytest.param({"member": {"memberID": "m"}, "accounts": [{"x": 1}]}, id="account-without-id"),
    pytest.param({"member": None, "accounts": [{"accountID": "a"}]}, id="accounts-alone"),
    pytest.param(
        {"member": {"memberID": "m"}, "accounts": [{"accountID": "a"}, {"accountID": "a"}]},
        id="repeated-account-id",
    ),
]


@pytest.mark.parametrize("damage", PROFILE_DAMAGE)
def test_a_damaged_profile_is_dropped_as_damage_and_the_rest_is_kept(
    damage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    stored = json.loads(
        codec.encode(
            CriticalData(created_at=T0, last_seen_at=T0, current_account_id="a", form_expires_at=T0)
        )
    )
    document = json.dumps({**stored, **damage}).encode()
    parts = codec.StoredParts()
    critical = parts.read(CriticalData, document)
    assert parts.damaged  # resume() turns this into a state_lost notice
    assert critical is not None and critical.form_expires_at == T0
    assert critical.member is None and critical.accounts == []
    assert critical.profile is None and critical.current_account_id is None
    assert "dropping" in caplog.text


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"stage": "menu; DROP"}, id="stage-with-punctuation"),
        pytest.param({"stage": "x" * 65}, id="stage-too-long"),
        pytest.param({"stage": 7}, id="stage-not-text"),
        pytest.param({"option": "user:{263}"}, id="option-with-key-syntax"),
        pytest.param({"menu": ["handle_action_menu", "two words"]}, id="menu-entry-with-space"),
    ],
)
def test_a_stored_session_whose_steps_are_not_identifiers_is_dropped_as_damage(
    change: dict[str, Any],
) -> None:
    session = json.loads(codec.encode(Session.begin(T0)))
    parts = codec.StoredParts()
    assert parts.read(Session, json.dumps({**session, **change}).encode()) is None
    assert parts.damaged


def test_a_stored_session_with_the_live_bots_step_names_is_read() -> None:
    session = Session.begin(T0)
    session.stage, session.option = "AmountInput", "offer_secured"
    session.menu.extend(["handle_action_menu", "ConfirmOfferSecured"])
    parts = codec.StoredParts()
    assert parts.read(Session, codec.encode(session)) == session
    assert not parts.damaged


# What the storage path costs the bot's process and objects
def test_documents_remembered_as_sound_hold_a_bounded_number_of_bytes() -> None:
    """The codec remembers the documents it found sound, by their bytes; many large profiles
    read once each must not keep more than a few MiB alive in the process (an entry count
    alone let 2,048 documents of up to 64 KiB stay: 128 MiB)."""

    def profile(n: int) -> CriticalData:
        notes = f"{n:06d}" * 8_000  # a 48 KB field: large, within MAX_DOCUMENT_BYTES
        return CriticalData(created_at=T0, last_seen_at=T0, member={"memberID": "m", "n": notes})

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(200):  # each document is made, read and let go, as a store does
            assert codec.StoredParts().read(CriticalData, codec.encode(profile(n))) is not None
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Holding them all would cost 200 x 48 KB, over 9 MiB.
    assert held < 5 * 1024 * 1024


def test_encoding_a_part_never_changes_the_domain_object_even_for_a_moment() -> None:
    """Bot code may read a conversation from another thread while the store encodes it: the
    stores pin the fields they keep beside a document (last-seen, the form's deadline, the
    last inbound message) in the JSON, never on the object itself."""
    later = T0 + timedelta(minutes=3)
    critical = CriticalData(
        created_at=T0, last_seen_at=later, form_expires_at=later, inbound_at=later
    )
    session = Session(id="s1", started_at=T0, last_seen_at=later)
    stored = codec.encode_stored(critical).data

    def fields() -> tuple[Any, ...]:
        return (
            critical.last_seen_at,
            critical.form_expires_at,
            critical.inbound_at,
            session.last_seen_at,
        )

    seen = {fields()}

    def watch(frame: Any, event: str, arg: Any) -> None:
        seen.add(fields())  # at every call and return inside the codec, C calls included

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        assert codec.encode_stored(critical, None, stored).unchanged
        codec.encode_stored(critical)
        codec.encode_stored(session)
    finally:
        sys.setprofile(previous)
    assert seen == {(later, later, later, later)}
