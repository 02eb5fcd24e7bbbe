"""The CLI without a server: memory-backend commands, usage and configuration errors, output."""

from __future__ import annotations

import io
import warnings
from importlib import metadata

import pytest
from cli_output import one_error_line
from cryptography.fernet import Fernet

import vimbiso_state
from vimbiso_state.entrypoints import cli
from vimbiso_state.entrypoints.cli import main
from vimbiso_state.entrypoints.commands.output import ProgressBar
from vimbiso_state.services.config import ENVIRONMENT

OFFER_FLOW = "hi\n1\na hundred\nUSD 100\nbob store\nbob_store\n1\nquit\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's own configuration only: no STATE_* or REDIS_STATE_URL from the caller."""
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("STATE_DEBUG", raising=False)
    monkeypatch.delenv("VIMBISO_STATE_DEBUG", raising=False)


def test_keygen_prints_a_fernet_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    key = capsys.readouterr().out.strip()
    Fernet(key)  # a valid key, or this raises


def test_demo_runs_on_the_memory_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend: memory (in-memory)\n")
    assert "done: every step above was stored and read back" in out


def test_chat_plays_the_offer_flow_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(OFFER_FLOW))
    assert main(["chat"]) == 0
    out = capsys.readouterr().out
    assert "you > hi\nbot > Welcome to VimbisoPay, Tendai Moyo!" in out
    assert "bot > How much do you want to offer?" in out
    assert "Sorry, that amount did not work" in out  # a bad answer: same question
    assert "Sorry, that recipient did not work" in out
    assert "bot > Offer 100 USD to bob_store from tendai_m? 1. Sign and send  2. Cancel" in out
    assert "bot > Signed with your member id (mem_7f3a) and sent." in out
    assert out.rstrip().endswith("your profile is kept.")


def test_chat_menu_back_switch_accept_and_expiry(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = "hello\n3\n2\n2\n1\n1\n250 ZWG\nwait 6\n1\nbob_store\n2\n9\nback\nmhoro\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert main(["chat", "--phone", "+263 71 555 0000"]) == 0
    out = capsys.readouterr().out
    assert "chat as +263715550000" in out
    assert "Which account? 1. tendai_m (current)  2. moyo_hw" in out
    assert "You are now acting for moyo_hw." in out
    assert "Accepted 50 USD from alice_shop." in out
    assert "6 minute(s) pass in silence" in out
    assert "Your session timed out, so we are back at the menu." in out
    # The form outlived the session (10 min against 5): "1" resumes it at the recipient.
    assert "Let's finish your offer. Who to?" in out
    assert "Offer 250 ZWG to bob_store from moyo_hw?" in out
    assert "Offer cancelled." in out
    assert "Please choose from the menu." in out  # 9 is not a choice
    assert "bot > Mhoro Tendai!" in out


def test_inspect_and_reset_on_the_memory_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "+263 77 123 4567"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("+263771234567  memory (in-memory)\n")
    assert "nothing stored for this number" in out
    assert main(["reset", "263771234567"]) == 0
    assert "reset +263771234567" in capsys.readouterr().out


def test_doctor_on_the_memory_backend_warns_and_exits_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "warn  backend  memory" in out
    assert "verdict: WARN" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["inspect", "12"], "is not an international phone number"),
        (["inspect", "+263 77 *"], "is not an international phone number"),
        (["reset", "{263771234567}"], "is not an international phone number"),
        (["chat", "--phone", "not a phone"], "is not an international phone number"),
        (["stats"], "stats reads a Redis keyspace"),
        (["stats", "--redis", "redis://127.0.0.1:1/0", "--sample", "-1"], "cannot be negative"),
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["inspect"], "the following arguments are required: PHONE"),
        (["doctor", "--redis"], "expected one argument"),
        (["import", "--redis", "redis://127.0.0.1:1/0"], "required: --from"),
        (["import", "--from", "redis://127.0.0.1:1/0"], "import writes into a shared store"),
        (
            ["import", "--from", "redis://u:s3cret@h:99999/0", "--redis", "redis://h:1/0"],
            "bad Redis URL redis://u:***@h:99999/0",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert expected in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "command", ["demo", "chat", "inspect", "reset", "stats", "doctor", "import"]
)
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:6379/0", "must start with redis://"),
        ("redis://127.0.0.1:notaport/0", "Port could not be cast"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("redis://user:s3cret@127.0.0.1:6379/zero", "the database must be a number"),
        ("redis://user:s3cret@127.0.0.1:99999/0", "redis://user:***@127.0.0.1:99999/0"),
    ],
)
def test_a_bad_url_is_one_line_and_exit_2(
    command: str, url: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "--redis", url]
    if command in ("inspect", "reset"):
        argv.insert(1, "+263771234567")
    if command == "import":
        argv += ["--from", "redis://127.0.0.1:1/0"]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line
    assert "s3cret" not in line  # a password in the URL is never echoed


def test_bad_configuration_from_the_environment_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_BACKEND", "postgres")
    assert main(["doctor"]) == 2
    assert "backend must be one of" in one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("STATE_BACKEND", "redis")
    monkeypatch.setenv("REDIS_STATE_URL", "redis://127.0.0.1:6379/db")
    assert main(["inspect", "+263771234567"]) == 2
    assert "the database must be a number" in one_error_line(capsys.readouterr().err)


def test_an_unexpected_error_is_one_line_unless_debugging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cli.doctor, "run", broken)
    assert main(["doctor"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "internal error: RuntimeError: something broke" in line
    assert "set STATE_DEBUG=1 for the traceback" in line
    monkeypatch.setenv("STATE_DEBUG", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current name warns about nothing
        with pytest.raises(RuntimeError):
            main(["doctor"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("off", ["0", "false", "no"])
def test_state_debug_set_to_a_false_value_keeps_the_one_line(
    off: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.doctor, "run", _broken)
    monkeypatch.setenv("STATE_DEBUG", off)
    assert main(["doctor"]) == 1
    assert "internal error" in one_error_line(capsys.readouterr().err)


def test_the_old_debug_variable_still_works_with_a_deprecation_note(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.doctor, "run", _broken)
    monkeypatch.setenv("VIMBISO_STATE_DEBUG", "1")
    deprecated = "VIMBISO_STATE_DEBUG is deprecated: set STATE_DEBUG"
    with pytest.warns(DeprecationWarning, match=deprecated), pytest.raises(RuntimeError):
        main(["doctor"])
    note = one_error_line(capsys.readouterr().err)
    assert note == (
        "vimbiso-state: note: VIMBISO_STATE_DEBUG is deprecated, set STATE_DEBUG=1 instead"
    )


def _broken(*args: object, **kwargs: object) -> int:
    raise RuntimeError("broke")


def test_version_prints_the_installed_distributions_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"vimbiso-state {metadata.version('vimbiso-state')}\n"
    assert vimbiso_state.__version__ == metadata.version("vimbiso-state")


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "chat", "inspect", "reset", "stats", "doctor", "keygen"):
        assert command in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_erases_itself() -> None:
    screen = _Terminal()
    bar = ProgressBar(screen, "scanning", width=10)
    bar(0, 200)
    bar(200, 200)
    drawn = screen.getvalue()
    assert "\rscanning [----------]   0% 0/200 keys" in drawn
    assert "scanning [##########] 100% 200/200 keys" in drawn
    bar.close()
    assert screen.getvalue().endswith("\r")


def test_progress_bar_is_silent_when_piped() -> None:
    piped = io.StringIO()
    bar = ProgressBar(piped, "scanning")
    bar(5, 10)
    bar.close()
    assert piped.getvalue() == ""
