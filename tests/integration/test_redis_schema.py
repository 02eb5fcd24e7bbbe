"""The Redis backend on a real server: key names, TTLs, sliding refresh, restarts."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
import redis
from cryptography.fernet import Fernet
from redis_servers import RedisProcess

from vimbiso_state.domain.conversation import Notice
from vimbiso_state.domain.schema import SCHEMA_VERSION
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import StateUnavailable
from vimbiso_state.services.state_service import StateService

KEY = Fernet.generate_key().decode()


def _service(url: str, **settings: object) -> tuple[Container, StateService]:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=url, token_keys=(KEY,)), **settings
    )
    return container, container.state_service()


@pytest.fixture
def digits() -> str:
    return str(263_780_000_000 + random.randrange(10_000_000))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_keys_follow_the_schema_with_the_phone_as_hash_tag(
    redis_url: str, client: redis.Redis, digits: str
) -> None:
    _, state = _service(redis_url)
    state.start(f"+{digits}")
    state.form_start(digits, "offer", required=["amount"])
    state.save_token(digits, "jwt")
    keys = sorted(k.decode() for k in client.scan_iter(match=f"*{digits}*"))
    assert keys == [
        f"form:{{{digits}}}:data",
        f"handled:{{{digits}}}",
        f"session:{{{digits}}}:data",
        f"token:{{{digits}}}",
        f"user:{{{digits}}}:state",
    ]
    # One hash tag, hence one Redis Cluster slot, for every key of the user.
    assert {k[k.index("{") : k.index("}") + 1] for k in keys} == {f"{{{digits}}}"}
    state.reset(digits)
    # The handled ids outlive a reset (a redelivered message stays a duplicate) and expire
    # on their own.
    assert list(client.scan_iter(match=f"*{digits}*")) == [f"handled:{{{digits}}}".encode()]


def test_every_key_has_the_configured_ttl(redis_url: str, client: redis.Redis, digits: str) -> None:
    _, state = _service(redis_url, session_ttl=120, form_ttl=240, token_ttl=900, state_ttl=3600)
    state.start(digits)
    state.form_start(digits, "offer", required=["amount"])
    state.save_token(digits, "jwt")
    ttl = {k.decode().split(":")[0]: client.pttl(k) / 1000 for k in client.scan_iter(f"*{digits}*")}
    # A TTL is never shorter than the domain's deadline, and only a little longer.
    assert 120 <= ttl["session"] <= 123
    # A form is kept past its deadline for its expiry event, never past the critical data.
    assert 3600 <= ttl["form"] <= 3603
    assert 900 <= ttl["token"] <= 903
    # The critical data's TTL is extended with a slide step of slack (3600 s / 300), so that
    # most writes move no TTL.
    assert 3600 <= ttl["user"] <= 3600 + 12 + 3
    # Every unit of work's id, kept for dedupe_ttl (with a slide step of slack: 86400 / 300).
    assert 86400 <= ttl["handled"] <= 86400 + 288 + 3
    state.reset(digits)


def test_reading_slides_the_session_ttl(redis_url: str, client: redis.Redis, digits: str) -> None:
    _, state = _service(redis_url, session_ttl=60)  # slide step: 60 s / 300 = 0.2 s
    state.start(digits)
    session = f"session:{{{digits}}}:data"
    client.pexpire(session, 5_000)  # as if most of the session had passed
    before = client.get(session)
    state.start(digits)  # within the step: a read that writes nothing
    assert client.pttl(session) <= 5_000 and client.get(session) == before
    time.sleep(0.25)
    state.start(digits)
    assert client.pttl(session) > 55_000
    assert (client.get(session) or b"")[:16] > (before or b"")[:16]  # last seen moved on
    state.reset(digits)


def test_stored_documents_are_json_and_hold_no_token(
    redis_url: str, client: redis.Redis, digits: str
) -> None:
    _, state = _service(redis_url)
    state.start(digits)
    state.save_token(digits, "eyJ.very-secret.sig")
    for key in client.scan_iter(f"*{digits}*"):
        raw = client.dump(key) or b""
        assert b"very-secret" not in raw
    state.reset(digits)


def test_state_survives_a_server_restart(private_redis: RedisProcess, digits: str) -> None:
    container, state = _service(private_redis.url)
    state.start(digits)
    state.set_profile(digits, {"memberID": "m-9"}, [{"accountID": "a-9"}])
    state.navigate(digits, "handle_action_offer_credex")
    state.save_token(digits, "jwt-9")
    time.sleep(1.2)  # appendfsync everysec
    private_redis.restart()
    conv = state.start(digits)  # the same container: it reconnects by itself
    assert conv.stage == "handle_action_offer_credex"
    assert conv.profile is not None and conv.profile.member.member_id == "m-9"
    assert state.token(digits) == "jwt-9"
    container.redis_client().close()


def test_a_stopped_server_gives_state_unavailable_quickly(private_redis: RedisProcess) -> None:
    _, state = _service(private_redis.url)
    private_redis.stop()
    began = time.monotonic()
    with pytest.raises(StateUnavailable):
        state.start("+263771234567")
    assert time.monotonic() - began < 0.5


NOW = b"%016d" % int(time.time() * 1_000_000)


@pytest.mark.parametrize(
    "garbage",
    [
        NOW + b"\x00\xffnot json",
        # (A newer schema version is not damage but a newer release's: it is left alone, see
        # tests/contract/test_rolling_deploys.py.)
        NOW + b"[]",
        NOW + b'{"id": 5}',
        b"no header at all",
        b"",
    ],
)
def test_undecodable_session_returns_to_menu_with_a_notice(
    redis_url: str,
    client: redis.Redis,
    digits: str,
    garbage: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, state = _service(redis_url)
    state.start(digits)
    state.set_profile(digits, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    state.navigate(digits, "handle_action_offer_credex")
    client.set(f"session:{{{digits}}}:data", garbage)
    with caplog.at_level("WARNING", logger="vimbiso_state"):
        conv = state.start(digits)
    assert conv.stage == "handle_action_menu"
    assert Notice.STATE_LOST in conv.notices
    assert conv.profile is not None  # the readable parts are kept
    assert "undecodable Session" in caplog.text
    assert state.start(digits).notices == []  # the clean state was written back
    state.reset(digits)


def test_undecodable_critical_data_starts_over_with_a_notice(
    redis_url: str, client: redis.Redis, digits: str
) -> None:
    _, state = _service(redis_url)
    state.start(digits)
    key = f"user:{{{digits}}}:state"
    header = (client.get(key) or b"")[:80]
    for damaged in (header + b"{broken", b"12345"):
        client.set(key, damaged)
        conv = state.start(digits)
        assert conv.notices == [Notice.STATE_LOST]
        assert conv.profile is None
    state.reset(digits)


# Versions 1 and 2 reshaped the Credex dicts: {member_id, name, tier, details}.
LEGACY_PROFILE = {
    "member": {
        "member_id": "m-1",
        "name": "Rudo Dube",
        "tier": "3",
        "details": {"memberHandle": "rudo", "remainingAvailableUSD": 20.5},
    },
    "accounts": [
        {"account_id": "a-1", "name": "Rudo", "handle": "rudo", "details": {}},
        {"account_id": "a-2", "name": "Farm", "handle": "dube_farm", "details": {"x": [1]}},
    ],
}


def _legacy(client: redis.Redis, digits: str, **fields: object) -> None:
    """Replace the stored critical data with an older release's document."""
    key = f"user:{{{digits}}}:state"
    value = client.get(key) or b""
    header, current = value[:80], json.loads(value[80:])
    legacy = {
        k: v for k, v in current.items() if k not in ("member", "accounts", "current_account_id")
    }
    legacy.update(profile=LEGACY_PROFILE, **fields)
    client.set(key, header + json.dumps(legacy).encode())


def test_a_version_1_document_is_migrated(redis_url: str, client: redis.Redis, digits: str) -> None:
    _, state = _service(redis_url)
    state.start(digits)
    _legacy(client, digits, schema_version=1, current_account=LEGACY_PROFILE["accounts"][1])
    conv = state.start(digits)
    assert conv.notices == []
    assert conv.current_account is not None and conv.current_account.account_id == "a-2"
    state.reset(digits)


@pytest.mark.parametrize("release", ["0.1", "0.2"])
def test_a_user_value_written_by_an_earlier_release_is_read_and_rewritten_in_the_new_layout(
    redis_url: str, client: redis.Redis, digits: str, release: str
) -> None:
    """0.1 wrote a 12-digit version after the last-seen time, 0.2 a 16-digit one and the
    form's deadline; a stored conversation survives the upgrade, and its next write moves it
    to the 80-byte header with a higher version."""
    _, state = _service(redis_url)
    state.set_profile(digits, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    key = f"user:{{{digits}}}:state"
    value = client.get(key) or b""
    old_header = b"%012d" % 7 if release == "0.1" else b"%016d" % 7 + b"0" * 16
    client.set(key, value[:16] + old_header + value[80:])
    conv = state.start(digits)
    assert conv.notices == [] and conv.version == 7
    assert conv.profile is not None and conv.profile.member.member_id == "m-1"
    version = state.navigate(digits, "handle_action_offer_credex").version
    assert version > 7
    value = client.get(key) or b""
    assert int(value[16:32]) == version and value[80:81] == b"{"
    assert state.start(digits).profile is not None
    state.reset(digits)


def test_a_version_2_document_is_migrated_to_the_credex_dicts(
    redis_url: str, client: redis.Redis, digits: str
) -> None:
    _, state = _service(redis_url)
    state.navigate(digits, "handle_action_offer_credex")
    _legacy(client, digits, schema_version=2, current_account_id="a-2")
    conv = state.start(digits)
    assert conv.notices == [] and conv.stage == "handle_action_offer_credex"
    assert conv.profile is not None
    assert conv.profile.member.data == {
        "memberHandle": "rudo",
        "remainingAvailableUSD": 20.5,
        "memberID": "m-1",
        "memberTier": 3,
        "firstname": "Rudo",
        "lastname": "Dube",
    }
    assert conv.profile.member.tier == 3
    assert [a.data for a in conv.profile.accounts] == [
        {"accountID": "a-1", "accountName": "Rudo", "accountHandle": "rudo"},
        {"x": [1], "accountID": "a-2", "accountName": "Farm", "accountHandle": "dube_farm"},
    ]
    assert conv.current_account is not None and conv.current_account.handle == "dube_farm"
    # The next write stores the current schema, which reads back the same.
    state.navigate(digits, "AmountInput")
    stored = json.loads((client.get(f"user:{{{digits}}}:state") or b"")[80:])
    assert stored["schema_version"] == SCHEMA_VERSION and "profile" not in stored
    assert stored["member"] == conv.profile.member.data
    state.reset(digits)


def test_values_are_strings_with_a_last_seen_and_version_header(
    redis_url: str, client: redis.Redis, digits: str
) -> None:
    _, state = _service(redis_url)
    first = state.start(digits).version
    second = state.navigate(digits, "handle_action_offer_credex").version
    user = client.get(f"user:{{{digits}}}:state") or b""
    session = client.get(f"session:{{{digits}}}:data") or b""
    assert user[:16].isdigit() and int(user[16:32]) == second > first
    # The form's deadline, the effect records' epoch and the last inbound message.
    assert user[32:80].isdigit()
    assert json.loads(user[80:])["schema_version"] == SCHEMA_VERSION
    assert session[:16].isdigit()
    assert json.loads(session[16:])["stage"] == "handle_action_offer_credex"
    # Strings stay compact: no hashtable encoding for kilobyte-sized documents.
    assert client.object("encoding", f"user:{{{digits}}}:state") in (b"raw", b"embstr")
    state.reset(digits)
