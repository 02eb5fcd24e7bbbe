"""The CLI against real, private Redis servers (never the machine's own 6379).

Most tests call ``main(argv)`` in-process; a few run the installed ``vimbiso-state`` entry point
as a subprocess, to check what an operator really sees (exit codes, stderr, no traceback).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_output import one_error_line
from cryptography.fernet import Fernet
from fakes import FakeClock, jwt
from redis_servers import RedisProcess
from stored_documents import rewrite

from vimbiso_state.entrypoints.cli import main
from vimbiso_state.entrypoints.demo import ACCOUNTS, MEMBER
from vimbiso_state.integrations.vimbiso_bot import JWT_SHAPED
from vimbiso_state.services.config import ENVIRONMENT, Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.operations.keyspace import keyspace_stats
from vimbiso_state.services.state_service import StateService

KEY = Fernet.generate_key().decode()
TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-member-token.signature"
UNREACHABLE = "redis://127.0.0.1:1/0"
EXE = Path(sys.executable).with_name("vimbiso-state")
OFFER_FLOW = "hi\n1\nUSD 100\nbob_store\n1\n1\n250 ZWG\nquit\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("STATE_TOKEN_KEYS", KEY)


def environment(**extra: str) -> dict[str, str]:
    """The subprocess environment: this one without STATE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT.values()}
    env.pop("STATE_DEBUG", None)
    env.pop("VIMBISO_STATE_DEBUG", None)
    return {**env, "STATE_TOKEN_KEYS": KEY, **extra}


def cli(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(**env),
        timeout=60,
    )


@pytest.fixture
def service(private_redis: RedisProcess) -> Iterator[StateService]:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=private_redis.url, token_keys=(KEY,))
    )
    yield container.state_service()
    container.redis_client().close()


def converse(state: StateService, phone: str, *, form: bool = True, token: bool = True) -> None:
    state.start(phone, "hi")
    state.set_profile(phone, MEMBER, ACCOUNTS, selection="personal")  # as the bot logs in
    if token:
        state.save_token(phone, TOKEN)
    if form:
        state.navigate(phone, "handle_action_offer_credex")
        state.form_start(phone, "offer", required=["amount", "recipient"])
        state.form_fill(phone, amount="USD 100")


# doctor
def test_doctor_on_the_seed_settings_warns_about_eviction_only(
    private_redis: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"vimbiso-state doctor: redis ({private_redis.url})"
    for verdict, name in [
        ("ok  ", "version"),
        ("warn", "maxmemory-policy"),
        ("ok  ", "appendonly"),
        ("ok  ", "appendfsync"),
        ("ok  ", "maxmemory"),
        ("ok  ", "used memory"),
        ("ok  ", "evicted keys"),
        ("ok  ", "latency"),
        ("ok  ", "scripting"),
        ("ok  ", "token keys"),
    ]:
        assert any(line.startswith(f"{verdict}  {name} ") for line in lines), (name, out)
    assert "allkeys-lru" in out
    assert "256.0 MiB" in out
    assert lines[-1].startswith("verdict: WARN")


def test_doctor_fails_a_server_without_aof(
    redis_server_bin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisProcess(extra_args=("--appendonly", "no"), executable=redis_server_bin) as server:
        assert main(["doctor", "--redis", server.url]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("FAIL  appendonly") for line in out.splitlines()), out
    assert "restart loses every conversation" in out
    assert out.splitlines()[-1].startswith("verdict: FAIL")


def test_doctor_as_a_restricted_acl_user_says_what_it_cannot_read(
    private_redis: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = private_redis.client()
    admin.acl_setuser(
        "bot",
        enabled=True,
        passwords=["+botpass"],
        keys=[
            "user:{*}:state",
            "session:{*}:data",
            "form:{*}:data",
            "handled:{*}",
            "effects:{*}",
            "token:{*}",
        ],
        commands=["+@all", "-config", "-info"],
    )
    admin.close()
    url = f"redis://bot:botpass@127.0.0.1:{private_redis.port}/0"
    assert main(["doctor", "--redis", url]) == 0
    out = capsys.readouterr().out
    assert "botpass" not in out
    assert "redis://bot:***@" in out
    for name in ("version", "maxmemory-policy", "appendfsync", "maxmemory", "evicted keys"):
        assert any(
            line.startswith(f"warn  {name} ") and line.endswith("cannot read (ACL)")
            for line in out.splitlines()
        ), (name, out)
    assert "ok    scripting" in out
    assert out.splitlines()[-1].startswith("verdict: WARN")


def test_doctor_sees_a_changed_policy_and_unbounded_memory(
    private_redis: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = private_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "0")
    admin.close()
    assert main(["doctor", "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    assert "ok    maxmemory-policy  noeviction" in out
    assert "warn  maxmemory         0 (unbounded)" in out


# chat, inspect, reset
def test_chat_from_piped_stdin_then_inspect_what_it_stored(private_redis: RedisProcess) -> None:
    chat = cli(
        "chat",
        "--fresh",
        "--phone",
        "+263 77 100 2000",
        stdin=OFFER_FLOW,
        STATE_BACKEND="redis",
        REDIS_STATE_URL=private_redis.url,
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stderr == ""
    out = chat.stdout
    assert f"chat as +263771002000 on redis ({private_redis.url})" in out
    assert "bot > Offer 100 USD to bob_store from tendai_m? 1. Sign and send  2. Cancel" in out
    assert "bot > Signed with your member id (mem_7f3a) and sent." in out
    assert "bot > Who to?" in out  # the second offer stops half way

    shown = cli("inspect", "263771002000", STATE_BACKEND="redis", REDIS_STATE_URL=private_redis.url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "member           Tendai Moyo (mem_7f3a)" in out
    assert "stage            handle_action_offer_credex" in out
    assert "offer            100 USD to bob_store (confirmed)" in out
    assert "form             offer: amount=250, denomination=ZWG; missing recipient" in out
    assert "token            present, value ******** (48 characters)" in out
    assert "chat-member-token" not in out
    for key in (
        "user:{263771002000}:state",
        "session:{263771002000}:data",
        "form:{263771002000}:data",
        "handled:{263771002000}",
        "token:{263771002000}",
    ):
        assert any(line.strip().startswith(key) and " ttl " in line for line in out.splitlines())


def test_inspect_reads_without_sliding_or_writing(
    private_redis: RedisProcess, service: StateService, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = "+263 77 300 4000"
    converse(service, phone)
    admin = private_redis.client()
    keys = ["user:{263773004000}:state", "session:{263773004000}:data"]
    before = [admin.get(key) for key in keys]
    ttl_before = admin.pttl("session:{263773004000}:data")
    time.sleep(0.05)
    assert main(["inspect", phone, "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    assert [admin.get(key) for key in keys] == before  # last seen did not move
    assert admin.pttl("session:{263773004000}:data") < ttl_before  # nor did the TTL
    admin.close()
    assert f"version          {int(before[0][16:32])}" in out
    assert "current account  tendai_m: Tendai Personal (acc_1), 2 account(s)" in out
    assert "form             offer: amount=100, denomination=USD; missing recipient" in out
    assert f"({len(TOKEN)} characters), expires in 29m" in out
    assert TOKEN not in out
    assert "next message     resumes as stored" in out
    # Every unit of work's id is kept (for dedupe_ttl, the newest 128): six writes, six ids.
    assert "(6 handled id(s))" in out


def test_inspect_without_token_keys_still_reports_the_token(
    private_redis: RedisProcess,
    service: StateService,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    converse(service, "+263773004001", form=False)
    monkeypatch.delenv("STATE_TOKEN_KEYS")
    assert main(["inspect", "+263773004001", "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    assert "present, value ******** [cannot check: no STATE_TOKEN_KEYS configured]" in out
    assert "form             none" in out


def test_inspect_of_an_unknown_number_and_reset(
    private_redis: RedisProcess, service: StateService, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "+263779999999", "--redis", private_redis.url]) == 0
    assert "nothing stored for this number" in capsys.readouterr().out

    converse(service, "+263773005000")
    assert main(["reset", "+263 77 300 5000", "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    assert "reset +263773005000: deleted 4 key(s)" in out
    admin = private_redis.client()
    # The handled ids stay (a redelivered message is still a duplicate after a reset).
    assert list(admin.scan_iter(match="*263773005000*")) == [b"handled:{263773005000}"]
    admin.close()
    assert main(["reset", "+263773005000", "--redis", private_redis.url]) == 0
    assert "reset +263773005000: nothing was stored" in capsys.readouterr().out
    admin.close()


# stats
def test_stats_counts_conversations_keys_and_memory(
    private_redis: RedisProcess, service: StateService, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(3):
        converse(service, f"+26377400500{n}", form=n == 0, token=n < 2)
    admin = private_redis.client()
    admin.set("unrelated-key", "x")
    admin.close()
    assert main(["stats", "--redis", private_redis.url]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no progress bar when stderr is not a terminal
    out = captured.out
    assert "conversations: 3 known (critical data kept), 3 active (a live session)" in out
    keys = out.split("keys by kind:\n")[1].split("expiry events")[0]
    counts = {line.split()[0]: int(line.split()[1]) for line in keys.splitlines()}
    assert counts == {
        "user": 3,
        "session": 3,
        "form": 1,
        "handled": 3,
        "token": 2,
        "lease": 0,
        "effects": 0,
        "expiry": 1,
        "other": 1,
    }
    assert "scanned 14 keys" in out
    # Each user's session, and the one form, is pending in the expiry index.
    assert "expiry events: 4 pending (deadline not reached), 0 overdue" in out
    assert "on average (MEMORY USAGE of every key of 3 sampled user(s))" in out


def _population(private_redis: RedisProcess) -> None:
    """Six users: three talking now, two silent for 400 s (sessions expired, one mid-form),
    and one whose session was damaged."""
    settings = Settings(backend="redis", redis_url=private_redis.url, token_keys=(KEY,))
    for seconds_ago, users in ((0, ("0", "1", "2")), (400, ("3", "4"))):
        container = Container.from_settings(settings)
        container.clock.override(FakeClock(datetime.now(UTC) - timedelta(seconds=seconds_ago)))
        state = container.state_service()
        for n in users:
            phone = f"+26377400600{n}"
            state.start(phone, "hi")
            if n in "123":
                state.navigate(phone, "handle_action_offer_credex")
                state.form_start(phone, "offer", required=["amount", "recipient"])
            if n in "13":
                state.form_fill(phone, amount="USD 100")
        container.close()
    admin = private_redis.client()
    admin.set("user:{263774006005}:state", b"%016d%016d{}" % (0, 1))
    admin.set("session:{263774006005}:data", b"%016d{not json" % 0)
    admin.close()


def test_stats_shows_where_conversations_stand_and_where_forms_are_abandoned(
    private_redis: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    _population(private_redis)
    assert main(["stats", "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    funnel = out.split("where conversations stand")[1]
    assert [line.split()[:2] for line in funnel.splitlines()[1:4]] == [
        ["handle_action_offer_credex", "2"],
        ["handle_action_menu", "1"],
        ["(no", "live"],
    ]
    assert "(no live session)           3   50.0%" in funnel
    assert "offer / recipient                 1 in progress, 1 abandoned" in funnel
    assert "offer / amount                    1 in progress, 0 abandoned" in funnel
    assert "unreadable sessions or forms (damaged, skipped): 1" in funnel


def test_stats_json_has_the_same_figures(
    private_redis: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    _population(private_redis)
    assert main(["stats", "--redis", private_redis.url, "--json", "--sample", "2"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["conversations"] == {"known": 6, "active": 6}  # keys, whatever their deadline
    assert report["keys"]["form"] == 3 and report["keys"]["other"] == 0
    assert report["memory"]["sampled_users"] == 2
    assert report["stages"] == {"handle_action_offer_credex": 2, "handle_action_menu": 1}
    assert report["without_live_session"] == 3
    assert report["forms"] == [
        {"form": "offer", "missing": "recipient", "in_progress": 1, "abandoned": 1},
        {"form": "offer", "missing": "amount", "in_progress": 1, "abandoned": 0},
    ]
    assert report["unreadable"] == 1
    assert report["redis_url"] == private_redis.url and captured.err == ""


def test_the_funnel_reads_the_documents_with_one_pipeline_per_scan_batch(
    private_redis: RedisProcess,
) -> None:
    settings = Settings(backend="redis", redis_url=private_redis.url, token_keys=(KEY,))
    container = Container.from_settings(settings)
    state = container.state_service()
    for n in range(60):
        state.navigate(f"+2637740070{n:02d}", "handle_action_offer_credex")
    now = container.clock().now()
    container.close()

    class Counting:
        def __init__(self, client: redis.Redis) -> None:
            self.client, self.scans, self.pipelines = client, 0, 0

        def scan(self, *args: Any, **kwargs: Any) -> Any:
            self.scans += 1
            return self.client.scan(*args, **kwargs)

        def pipeline(self, *args: Any, **kwargs: Any) -> Any:
            self.pipelines += 1
            return self.client.pipeline(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    admin = Counting(private_redis.client())
    stats = keyspace_stats(admin, batch=40, sample=0, timeouts=settings.timeouts, now=now)
    admin.client.close()
    assert stats.funnel is not None
    assert stats.funnel.stages == {"handle_action_offer_credex": 60}
    assert 1 < admin.scans < 10
    assert admin.pipelines <= admin.scans  # at most one per batch, never one per user


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stats_shows_a_progress_bar_while_scanning_a_large_keyspace(
    private_redis: RedisProcess,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = private_redis.client()
    pipe = admin.pipeline(transaction=False)
    for n in range(5000):
        digits = f"26378{n:07d}"
        pipe.set(f"user:{{{digits}}}:state", b"%016d%012d{}" % (0, 1))
        if n % 5 == 0:
            pipe.set(f"session:{{{digits}}}:data", b"%016d{}" % 0)
    pipe.execute()
    admin.close()
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["stats", "--redis", private_redis.url, "--sample", "50"]) == 0
    out = capsys.readouterr().out
    assert "conversations: 5,000 known (critical data kept), 1,000 active" in out
    assert "50 sampled user(s)" in out
    drawn = terminal.getvalue()
    assert "\rscanning [" in drawn
    assert "6,000/6,000 keys" in drawn
    assert drawn.endswith("\r")  # erased before the report


def test_keyspace_stats_reports_progress_up_to_the_total(private_redis: RedisProcess) -> None:
    admin = private_redis.client()
    admin.mset({f"token:{{26377{n:07d}}}": b"x" for n in range(2500)})
    calls: list[tuple[int, int]] = []
    stats = keyspace_stats(admin, batch=500, sample=0, progress=lambda d, t: calls.append((d, t)))
    admin.close()
    assert stats.by_kind["token"] == 2500
    assert calls[0] == (0, 2500)
    assert calls[-1] == (2500, 2500)
    assert len(calls) > 3  # several batches, several redraws
    assert stats.bytes_per_conversation is None


# bad input through the real entry point (each kind of bad input, in-process: test_cli_memory.py)
@pytest.mark.parametrize("command", ["demo", "chat", "inspect", "reset", "stats", "doctor"])
def test_an_unreachable_server_is_one_line_and_exit_3(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "--redis", UNREACHABLE]
    if command in ("inspect", "reset"):
        argv.insert(1, "+263771234567")
    started = time.monotonic()
    assert main(argv) == 3
    assert time.monotonic() - started < 5
    line = one_error_line(capsys.readouterr().err)
    assert "Redis is unreachable" in line and "127.0.0.1:1" in line


@pytest.mark.parametrize(
    ("args", "env", "code", "expected"),
    [
        (("doctor", "--redis", UNREACHABLE), {}, 3, "Redis is unreachable"),
        (
            ("stats",),
            {"STATE_BACKEND": "redis", "REDIS_STATE_URL": "redis://h:port/0"},
            2,
            "bad Redis URL",
        ),
    ],
)
@pytest.mark.slow
def test_bad_input_through_the_entry_point_never_shows_a_traceback(
    args: tuple[str, ...], env: dict[str, str], code: int, expected: str
) -> None:
    done = cli(*args, **env)
    assert done.returncode == code, done
    assert expected in one_error_line(done.stderr)
    assert done.stdout == ""


def test_demo_against_a_private_server(private_redis: RedisProcess) -> None:
    done = cli("demo", "--redis", private_redis.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"backend: redis ({private_redis.url})\n")
    assert "done: every step above was stored and read back" in done.stdout
    client = redis.Redis.from_url(private_redis.url)
    assert client.exists("user:{263770000001}:state")
    client.close()


# expirations
def test_expirations_prints_due_events_and_consumes_them_only_with_ack(
    private_redis: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=private_redis.url, token_keys=(KEY,), form_ttl=1)
    )
    state = container.state_service()
    with state.message("+263774007000", "wamid.1", "offer") as msg:
        msg.form_start("offer", required=["amount", "recipient"])
        msg.form_fill(amount="USD 25")
    container.close()
    time.sleep(1.3)

    def lines(*flags: str) -> list[dict[str, Any]]:
        assert main(["expirations", "--redis", private_redis.url, *flags]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        return [json.loads(line) for line in captured.out.splitlines()]

    [event] = [e for e in lines() if e["kind"] == "form"]
    assert event["phone"] == "+263774007000" and event["name"] == "offer"
    assert event["answers"] == {"amount": "25", "denomination": "USD"}
    assert datetime.fromisoformat(event["window_closes_at"]) > datetime.now(UTC)
    assert [e for e in lines() if e["kind"] == "form"] == [event]  # nothing was consumed
    assert [e for e in lines("--ack") if e["kind"] == "form"] == [event]
    assert [e for e in lines() if e["kind"] == "form"] == []


def test_inspect_masks_anything_token_shaped_wherever_it_is(
    private_redis: RedisProcess, service: StateService, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = "+263773004002"
    converse(service, phone)
    planted = jwt({"sub": "mem-1", "planted": "by hand"})
    container = Container.from_settings(
        Settings(backend="redis", redis_url=private_redis.url, token_keys=(KEY,))
    )

    def plant_in_context(session: dict[str, Any]) -> dict[str, Any]:
        session["context"] = {
            "action": {"details": {"token": planted}},
            "note": f"see {planted} here",
        }
        return session

    def plant_in_member(user: dict[str, Any]) -> dict[str, Any]:
        user["member"]["lastname"] = planted
        return user

    rewrite(container, "redis", phone, "session", plant_in_context)  # raw Redis writes
    rewrite(container, "redis", phone, "user", plant_in_member)
    container.redis_client().close()
    assert main(["inspect", phone, "--redis", private_redis.url]) == 0
    out = capsys.readouterr().out
    assert planted not in out and not JWT_SHAPED.search(out)
    assert "action={'details': {'token': '********'}}, note='see ******** here'" in out
    assert "member           Tendai ******** (mem_7f3a)" in out
