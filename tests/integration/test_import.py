"""``vimbiso-state import``: the VimbisoPay bot's channel:{wa_id} keys, moved into the store.

The bot's Redis and the state Redis are two private servers; the bot's is filled with keys
shaped as the bot writes them (app/core/state/manager.py: one JSON document per user, SETEX
300 s), good and malformed.
"""

from __future__ import annotations

import io
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_output import one_error_line
from cryptography.fernet import Fernet
from fakes import jwt
from redis_servers import RedisProcess
from vimbiso_bot_double import MEMBER, account

from vimbiso_state.entrypoints.cli import main
from vimbiso_state.integrations.vimbiso_bot import JWT_SHAPED, BotState
from vimbiso_state.integrations.vimbiso_import import (
    ImportReport,
    Skip,
    import_channels,
)
from vimbiso_state.services.config import ENVIRONMENT, Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.message import Message

KEY = Fernet.generate_key().decode()
UNREACHABLE = "redis://127.0.0.1:1/0"
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adopting.md"
HOUR = 3600


def _token(seconds: int) -> str:
    return jwt({"sub": "mem-1", "exp": int(time.time()) + seconds})


def _document(wa_id: str, **extra: Any) -> dict[str, Any]:
    """A logged-in member's document, as the bot stores it after its login (the JWT twice)."""
    token = _token(HOUR)
    login = {"memberID": "mem-1", "phone": wa_id, "token": token}
    document: dict[str, Any] = {
        "channel": {"type": "whatsapp", "identifier": wa_id},
        "mock_testing": False,
        "auth": {"token": token},
        "dashboard": {"member": dict(MEMBER), "accounts": [account("150.00 USD")]},
        "active_account_id": "acc-1",
        "action": {"id": "mem-1", "type": "MEMBER_LOGIN", "details": login},
        "component_data": {
            "path": "account",
            "component": "AccountDashboard",
            "component_result": None,
            "awaiting_input": True,
            "data": {},
        },
    }
    document.update(extra)
    return document


MID_OFFER = {
    "path": "offer_secured",
    "component": "AmountInput",
    "component_result": None,
    "awaiting_input": True,
    "data": {},
    "incoming_message": {"type": "interactive", "text": {"interactive_type": "list"}},
}
TIER_5 = {
    "member": {**MEMBER, "memberTier": 5},
    "accounts": [account("1.00 USD"), {**account("2.00 USD"), "accountID": "acc-2"}],
}
GOOD = {
    "263771000001": _document("263771000001"),
    "263771000002": _document("263771000002", mock_testing=True, component_data=MID_OFFER),
    # A tier-5 member who has not chosen an account yet: imported without one.
    "263771000003": {
        k: v
        for k, v in _document("263771000003", dashboard=TIER_5).items()
        if k != "active_account_id"
    },
}
BAD: dict[str, tuple[Any, Skip]] = {
    "channel:263772000001": (b"{not json", Skip.MALFORMED),
    "channel:263772000002": (b'{"dashboard": NaN}', Skip.MALFORMED),
    "channel:263772000003": (b"\xff\xfe\x00garbage", Skip.MALFORMED),
    "channel:263772000004": (b"[1, 2]", Skip.NOT_AN_OBJECT),
    "channel:": (_document(""), Skip.NO_PHONE),
    "channel:12": (_document("12"), Skip.INVALID_PHONE),
    "channel:{263772000007}*": (_document("263772000007"), Skip.INVALID_PHONE),
    "channel:263772000008": (
        {"channel": {"type": "whatsapp", "identifier": "263772000008"}, "mock_testing": True},
        Skip.NO_DASHBOARD,
    ),
    "channel:263772000009": (_document("263772000009", auth={}), Skip.NO_TOKEN),
    "channel:263772000010": (
        _document("263772000010", auth={"token": _token(-60)}),
        Skip.EXPIRED_TOKEN,
    ),
    "channel:263772000011": (
        _document("263772000011", channel={"type": "sms", "identifier": "263772000011"}),
        Skip.NOT_WHATSAPP,
    ),
    "channel:263772000012": (
        _document("263772000012", channel={"type": "whatsapp", "identifier": "263779999999"}),
        Skip.OTHER_NUMBER,
    ),
    "channel:263772000013": (
        _document("263772000013", dashboard={"member": {"firstname": "No id"}, "accounts": []}),
        Skip.REFUSED,
    ),
    "channel:263772000014": (
        _document("263772000014", active_account_id="acc-gone"),
        Skip.REFUSED,
    ),
    "channel:263772000015": (
        _document("263772000015", component_data={**MID_OFFER, "path": "offer secured!"}),
        Skip.REFUSED,
    ),
}
WRONG_TYPE = "channel:263772000016"  # a hash, not the bot's JSON string
ALREADY_HERE = "263773000001"  # the new bot served this member first


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("STATE_TOKEN_KEYS", KEY)


@pytest.fixture
def bot_redis(redis_server_bin: str) -> Iterator[RedisProcess]:
    """The bot's own Redis, filled as the live bot leaves it."""
    with RedisProcess(executable=redis_server_bin) as server:
        client = server.client()
        for wa_id, document in GOOD.items():
            client.set(f"channel:{wa_id}", json.dumps(document), ex=300)
        for key, (value, _) in BAD.items():
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            client.set(key, raw, ex=300)
        client.set(f"channel:{ALREADY_HERE}", json.dumps(_document(ALREADY_HERE)), ex=300)
        client.hset(WRONG_TYPE, "dashboard", "{}")
        client.set(":1:vimbiso:health_check", "ok")  # the bot's Django cache: not a member
        client.close()
        yield server


@pytest.fixture
def target(private_redis: RedisProcess) -> Iterator[Container]:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=private_redis.url, token_keys=(KEY,))
    )
    yield container
    container.redis_client().close()


def _every_value(client: Any) -> bytes:
    """Every key's value in the store, whatever its type."""
    values: list[bytes] = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            values.append(client.get(key) or b"")
        elif kind == b"hash":
            values += [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == b"zset":
            values += client.zrange(key, 0, -1)
        else:
            raise AssertionError(f"{key!r} is a {kind!r}, which this test does not read")
    return b"\n".join(values)


def _import(bot_redis: RedisProcess, target: Container, *extra: str) -> int:
    """``vimbiso-state import --from BOT --redis TARGET ...``: its exit code."""
    return main(["import", "--from", bot_redis.url, "--redis", target.settings().redis_url, *extra])


def _served_by_the_new_bot(target: Container) -> int:
    state = target.state_service()
    other = {**MEMBER, "memberID": "mem-new", "firstname": "Rufaro"}
    return state.set_profile("+" + ALREADY_HERE, other, [account("9.00 USD")]).version


def test_import_moves_logged_in_members_and_says_why_it_skipped_the_rest(
    bot_redis: RedisProcess, target: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    kept_version = _served_by_the_new_bot(target)
    assert _import(bot_redis, target) == 0
    out = capsys.readouterr().out
    assert f"channel:{{wa_id}} keys of {bot_redis.url} into redis" in out
    assert "scanned 21 keys, 20 of them channel keys" in out
    assert "imported: 3 member(s), logged in and on their account" in out
    assert "skipped: 17" in out
    expected = {why for _, why in BAD.values()} | {Skip.NOT_A_STRING, Skip.ALREADY_HERE}
    for why in expected:
        assert why.value in out, why
    assert "  3  malformed JSON: channel:26377200000" in out
    # The first refusal's reason, whichever SCAN met first.
    assert re.search(r"\(the member has no id|\(active_account_id 'acc-gone'|\(component_data", out)

    state = target.state_service()
    for wa_id, document in GOOD.items():
        phone = "+" + wa_id
        conv = state.start(phone)
        assert conv.profile is not None
        assert conv.critical.member == document["dashboard"]["member"]  # exactly, tier an int
        assert conv.critical.accounts == document["dashboard"]["accounts"]
        assert conv.critical.current_account_id == document.get("active_account_id")
        assert state.token(phone) == document["auth"]["token"]
        flow = document["component_data"]
        assert (conv.option, conv.stage) == (flow["path"], flow["component"])
        assert conv.context["component_data"] == flow
        assert conv.context["mock_testing"] is document["mock_testing"]
        with state.message(phone, "wamid.after-import") as msg:
            assert BotState(msg).get_state_value("action") == document["action"]  # token too
    stored = _every_value(target.redis_client())
    assert not JWT_SHAPED.search(stored.decode("utf-8", "replace"))
    here = state.start("+" + ALREADY_HERE)
    assert here.version == kept_version
    assert here.profile is not None and here.profile.member.member_id == "mem-new"


def test_a_second_import_changes_nothing(
    bot_redis: RedisProcess, target: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    _served_by_the_new_bot(target)
    assert _import(bot_redis, target) == 0
    capsys.readouterr()
    state = target.state_service()
    before = {wa_id: state.start("+" + wa_id).version for wa_id in GOOD}
    keys = sorted(target.redis_client().keys("*"))
    assert _import(bot_redis, target) == 0
    out = capsys.readouterr().out
    assert "imported: 0 member(s)" in out
    assert "unchanged: 3 (imported by an earlier run)" in out
    assert "skipped: 17" in out
    assert sorted(target.redis_client().keys("*")) == keys
    assert {wa_id: state.start("+" + wa_id).version for wa_id in GOOD} == before


def test_a_dry_run_checks_everything_and_writes_nothing(
    bot_redis: RedisProcess, target: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    kept_version = _served_by_the_new_bot(target)
    keys = sorted(target.redis_client().keys("*"))
    assert _import(bot_redis, target, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was written" in out
    assert "would import: 3 member(s)" in out
    assert "skipped: 17" in out and Skip.REFUSED.value in out
    assert sorted(target.redis_client().keys("*")) == keys
    assert target.state_service().start("+" + ALREADY_HERE).version == kept_version


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_import_draws_a_progress_bar_on_a_terminal(
    bot_redis: RedisProcess,
    target: Container,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert _import(bot_redis, target) == 0
    drawn = terminal.getvalue()
    assert "\rimporting [" in drawn and "21/21 keys" in drawn
    assert drawn.endswith("\r")  # erased before the report
    assert "imported: 4" in capsys.readouterr().out


def test_an_interrupted_import_goes_on_from_its_cursor(
    bot_redis: RedisProcess, target: Container
) -> None:
    source = bot_redis.client()
    calls = 0

    def interrupt_after_the_first_batch(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt

    first = ImportReport()
    with pytest.raises(KeyboardInterrupt):
        import_channels(
            source, target, batch=4, progress=interrupt_after_the_first_batch, report=first
        )
    assert 0 < first.scanned < 21 and first.cursor != 0
    rest = import_channels(source, target, batch=4, cursor=first.cursor)
    again = import_channels(source, target, batch=4)
    source.close()
    assert rest.cursor == 0 and first.scanned + rest.scanned >= 21
    # Each member once, whichever run did it (the four logged-in members here).
    assert first.imported + rest.imported == 4
    assert again.imported == 0 and again.unchanged == 4


def test_ctrl_c_reports_what_was_done_and_the_cursor(
    bot_redis: RedisProcess,
    target: Container,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Interrupting:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.calls = 0

        def __call__(self, done: int, total: int) -> None:
            self.calls += 1
            if done:
                raise KeyboardInterrupt

        def close(self) -> None:
            pass

    monkeypatch.setattr("vimbiso_state.entrypoints.commands.import_bot.ProgressBar", Interrupting)
    assert _import(bot_redis, target) == 130
    out = capsys.readouterr().out
    assert "scanned 21 keys" in out  # one batch: the whole small keyspace
    match = re.search(r"run again with --cursor (\d+)", out)
    assert match is not None


def test_import_errors_are_one_line(
    bot_redis: RedisProcess, target: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    url = target.settings().redis_url
    assert main(["import", "--from", UNREACHABLE, "--redis", url]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "the bot's Redis: Redis is unreachable" in line
    assert main(["import", "--from", "mysql://x/0", "--redis", url]) == 2
    assert "bad Redis URL" in one_error_line(capsys.readouterr().err)
    assert main(["import", "--redis", url]) == 2
    assert "--from" in one_error_line(capsys.readouterr().err)
    assert main(["import", "--from", bot_redis.url]) == 2  # no --redis: the memory backend
    assert "shared store" in one_error_line(capsys.readouterr().err)
    assert main(["import", "--from", bot_redis.url, "--redis", url, "--cursor", "-1"]) == 2
    assert "--cursor" in one_error_line(capsys.readouterr().err)


def test_import_needs_the_token_key(
    bot_redis: RedisProcess,
    target: Container,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATE_TOKEN_KEYS")
    assert _import(bot_redis, target, "--dry-run") == 2
    assert "STATE_TOKEN_KEYS" in one_error_line(capsys.readouterr().err)


def test_the_guides_switch_over_script_runs_as_written(
    bot_redis: RedisProcess, target: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    scope: dict[str, Any] = {}
    exec(compile(blocks[-1], str(GUIDE), "exec"), scope)
    report = scope["switch_over"](bot_redis.url, target)
    assert report.imported == 4  # the three members, and the one nobody served yet
    assert f"skipped 3: {Skip.MALFORMED}" in capsys.readouterr().out
    again = scope["switch_over"](bot_redis.url, target)
    assert (again.imported, again.unchanged) == (0, 4)  # imported once, by its message id


def _counts(out: str) -> dict[str, int]:
    """The report's figures: scanned, channels, imported, unchanged, skipped."""
    scanned, channels = re.search(r"scanned (\d+) keys, (\d+) of them channel keys", out).groups()  # type: ignore[union-attr]
    found = {"scanned": int(scanned), "channels": int(channels)}
    for name in ("imported", "unchanged", "skipped"):
        match = re.search(rf"^{name}: (\d+)", out, re.MULTILINE)
        found[name] = int(match.group(1)) if match else 0
    return found


def _held(target: Container) -> list[bytes]:
    return list(target.redis_client().scan_iter(match="lease:*"))


def test_ctrl_c_while_a_member_is_held_stops_after_storing_that_member(
    bot_redis: RedisProcess,
    target: Container,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interrupted: list[str] = []
    opened = Message._opened

    def held_then_ctrl_c(self: Message, begun: Any) -> None:
        opened(self, begun)  # the member is held: begin took the lease
        if not interrupted and self.phone in GOOD:
            interrupted.append(self.phone)
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, now

    monkeypatch.setattr(Message, "_opened", held_then_ctrl_c)
    # Ctrl-C as in a terminal: a run started in the background (nohup, `&` in a script)
    # inherits SIGINT ignored, and Python then leaves it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert _import(bot_redis, target) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    out = capsys.readouterr().out
    assert _held(target) == []  # nobody is left held for lease_ttl
    assert "interrupted before the end, after the last key counted above" in out
    [phone] = interrupted
    assert target.state_service().start("+" + phone).profile is not None  # stored, whole
    counts = _counts(out)
    assert counts["imported"] >= 1  # the member interrupted, and any before it
    assert counts["imported"] + counts["skipped"] == counts["channels"] <= counts["scanned"]
    assert counts["scanned"] < 21
    cursor = re.search(r"run again with --cursor (\d+)", out).group(1)  # type: ignore[union-attr]
    monkeypatch.setattr(Message, "_opened", opened)
    assert _import(bot_redis, target, "--cursor", cursor) == 0
    rest = _counts(capsys.readouterr().out)
    assert rest["imported"] + rest["unchanged"] == 4
    assert rest["unchanged"] == counts["imported"]  # each member imported once


def test_ctrl_c_inside_a_members_change_counts_only_the_keys_handled(
    bot_redis: RedisProcess,
    target: Container,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    update = BotState.update_state

    def second_member_interrupted(self: BotState, updates: Any) -> None:
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt  # raised inside the member's message
        update(self, updates)

    monkeypatch.setattr(BotState, "update_state", second_member_interrupted)
    assert _import(bot_redis, target) == 130
    counts = _counts(capsys.readouterr().out)
    assert _held(target) == []
    # The interrupted member is neither imported nor skipped: it is not counted at all.
    assert counts["imported"] + counts["skipped"] == counts["channels"]
    assert counts["channels"] <= counts["scanned"] < 21
    monkeypatch.setattr(BotState, "update_state", update)
    assert _import(bot_redis, target) == 0
    again = _counts(capsys.readouterr().out)
    assert again["imported"] + again["unchanged"] == 4
    assert again["unchanged"] == counts["imported"]  # the interrupted member was not stored
