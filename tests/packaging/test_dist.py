"""The sdist and the wheel as a release builds them, and the wheel installed beside a bot.

``python -m build`` makes the sdist from a clean copy of the checkout, then the wheel from the
unpacked sdist, as a package index's users get them. The wheel goes into a fresh virtualenv
next to an app shaped like the VimbisoPay bot: its own ``services`` namespace package, a
``domain`` and a ``core`` package, none of which the library may shadow or break.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from package_layout import PACKAGE, ROOT, library_files, pyproject

import vimbiso_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VERSION = vimbiso_state.__version__
# What a developer's checkout holds and a clean clone does not.
CHECKOUT_ONLY = (
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".hypothesis",
)
PHONE = "+263771234567"


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _environment() -> dict[str, str]:
    # Nothing of this run's configuration or import path leaks into the built or installed code.
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and not k.startswith(("STATE_", "VIMBISO_STATE_", "REDIS_STATE_"))
    }
    return {**env, "STATE_BACKEND": "memory"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    work = tmp_path_factory.mktemp("dists")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*CHECKOUT_ONLY))
    _run(sys.executable, "-m", "build", "--outdir", work / "out", source)
    (sdist,) = (work / "out").glob("*.tar.gz")
    (wheel,) = (work / "out").glob("*.whl")
    return Dists(sdist, wheel)


def _pip(bin: Path, *args: str | Path) -> str:
    """This run's pip, acting on the virtualenv of ``bin``: a pip of the virtualenv's own
    would cost the seconds of ensurepip, and the checks do not depend on which pip installs."""
    return _run(sys.executable, "-m", "pip", "--python", bin / "python", *args)


@pytest.fixture(scope="module")
def venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh virtualenv with the wheel and mypy installed (not compiled
    to bytecode at install: importing compiles what runs)."""
    path = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", path)
    _pip(path / "bin", "install", "-q", "--no-compile", dists.wheel, "mypy")
    return path / "bin"


def test_the_wheel_holds_the_library_and_nothing_else(dists: Dists) -> None:
    names = zipfile.ZipFile(dists.wheel).namelist()
    dist_info = f"{PACKAGE}-{VERSION}.dist-info"
    assert {name.split("/")[0] for name in names} == {PACKAGE, dist_info}
    # Every module of every listed package, py.typed and the Lua scripts; no tests, docs,
    # README or benchmark inside the package.
    inside = {name for name in names if name.startswith(f"{PACKAGE}/")}
    assert inside == library_files()
    assert {f"{PACKAGE}/py.typed", f"{PACKAGE}/adapters/redis/commit.lua"} <= inside
    assert f"{dist_info}/licenses/LICENSE" in names


def test_the_wheel_metadata_has_the_license_range_and_links(dists: Dists) -> None:
    wheel = zipfile.ZipFile(dists.wheel)
    dist_info = f"{PACKAGE}-{VERSION}.dist-info"
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT\n" in metadata
    assert "License-File: LICENSE\n" in metadata
    assert "Requires-Dist: redis>=5.0.2\n" in metadata
    assert 'Requires-Dist: hiredis>=3.0; extra == "hiredis"\n' in metadata
    for label, url in pyproject()["project"]["urls"].items():
        assert f"Project-URL: {label}, {url}\n" in metadata
    assert "Classifier: Typing :: Typed\n" in metadata
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "vimbiso-state = vimbiso_state.entrypoints.cli:main" in entry_points


def test_the_sdist_carries_the_tests_docs_benchmark_and_license(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    for required in (
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "docker-compose.yml",
        "pyproject.toml",
        ".ci/run",
        "py.typed",
        "adapters/redis/load.lua",
    ):
        assert required in names
    for folder in ("tests", "docs", "bench"):
        expected = {
            str(path.relative_to(ROOT))
            for path in (ROOT / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        }
        assert expected, folder
        assert expected <= names, sorted(expected - names)
    assert not [name for name in names if name.endswith(".pyc") or "__pycache__" in name]


BOT_FILES = {
    # A namespace package, like the VimbisoPay bot's app/services: no __init__.py.
    "services/whatsapp.py": """
SENT = []


def send(phone, text):
    SENT.append((phone, text))
    return f"sent to {phone}: {text}"
""",
    "domain/__init__.py": "",
    # The module path the library itself used before 0.2 (domain.conversation).
    "domain/conversation.py": 'class Conversation:\n    OWNER = "bot"\n',
    "core/__init__.py": "",
    "core/settings.py": 'BOT_NAME = "VimbisoPay"\n',
    "webhook.py": f'''
import asyncio
import importlib
import sys

if sys.argv[1] == "library-first":
    import vimbiso_state

import services.whatsapp
from core.settings import BOT_NAME
from domain.conversation import Conversation as BotConversation

import vimbiso_state
from vimbiso_state import (
    AsyncStateService,
    Container,
    InvalidInput,
    InvalidPhoneNumber,
    StateError,
    StateService,
    StateUnavailable,
)

container = Container.from_env()
state = container.state_service()
conv = state.start("{PHONE}", "hi")
conv = state.navigate("{PHONE}", "handle_action_offer_credex")
print("service:", isinstance(state, StateService))
print("stage:", conv.stage)
print("menu:", ",".join(conv.menu))
aio = container.async_state_service()
print("async:", isinstance(aio, AsyncStateService), asyncio.run(aio.start("{PHONE}")).stage)
try:
    state.start("12")
except InvalidPhoneNumber as exc:
    print("refused:", isinstance(exc, StateError))
print("errors:", all(issubclass(e, StateError) for e in (InvalidInput, StateUnavailable)))
print("library:", vimbiso_state.__file__)
print("domain:", BotConversation.OWNER, sys.modules["domain"].__file__)
# The app's own services/ still imports, afresh, with the library loaded.
del sys.modules["services.whatsapp"], sys.modules["services"]
whatsapp = importlib.import_module("services.whatsapp")
print("services:", whatsapp.__file__, sys.modules["services"].__file__)
print("reply:", whatsapp.send("{PHONE}", f"{{BOT_NAME}}: {{conv.stage}}"))
print("top-level:", sorted(n for n in ("adapters", "entrypoints") if n in sys.modules))
''',
}


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    app = tmp_path_factory.mktemp("bot")
    for name, text in BOT_FILES.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text.lstrip("\n"), encoding="utf-8")
    return app


@pytest.mark.parametrize("order", ["app-first", "library-first"])
def test_the_wheel_works_beside_a_bot_with_its_own_services_domain_and_core(
    venv: Path, bot: Path, order: str
) -> None:
    out = _run(venv / "python", "webhook.py", order, cwd=bot)
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["service"] == "True"
    assert lines["stage"] == "handle_action_offer_credex"
    assert lines["menu"] == "handle_action_menu"
    assert lines["async"] == "True handle_action_offer_credex"  # the same store, via asyncio
    assert lines["refused"] == "True"
    assert lines["errors"] == "True"
    # The library is the installed wheel, not the checkout; the app's packages are the app's.
    site = (venv.parent / "lib").resolve()
    assert Path(lines["library"]).resolve().is_relative_to(site)
    assert lines["domain"] == f"bot {bot / 'domain' / '__init__.py'}"
    assert lines["services"] == f"{bot / 'services' / 'whatsapp.py'} None"  # a namespace package
    assert lines["reply"] == f"sent to {PHONE}: VimbisoPay: handle_action_offer_credex"
    assert lines["top-level"] == "[]"


def test_the_installed_command_and_requirements(venv: Path, tmp_path: Path) -> None:
    assert _run(venv / "vimbiso-state", "--version", cwd=tmp_path) == f"vimbiso-state {VERSION}\n"
    _pip(venv, "check")


CHECKED = """
from vimbiso_state import Container, Conversation, StateService


def stage_after_offer(phone: str) -> str:
    state: StateService = Container.from_env().state_service()
    conv: Conversation = state.navigate(phone, "handle_action_offer_credex")
    return conv.stage
"""
WRONG = """
from vimbiso_state import StateService


def count(state: StateService) -> int:
    return state.start("+263771234567")
"""


def test_a_users_mypy_strict_checks_calls_against_the_librarys_types(
    venv: Path, tmp_path: Path
) -> None:
    """py.typed is installed: without it --strict fails on an untyped import and sees Any."""
    (tmp_path / "checked.py").write_text(CHECKED.lstrip(), encoding="utf-8")
    (tmp_path / "wrong.py").write_text(WRONG.lstrip(), encoding="utf-8")
    done = subprocess.run(
        [venv / "mypy", "--strict", "--cache-dir", tmp_path / "cache", "checked.py", "wrong.py"],
        cwd=tmp_path,  # not the repository: its pyproject.toml configures mypy for itself
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = re.findall(r"^(\S+?):\d+: error: (.*)$", done.stdout, re.MULTILINE)
    assert errors == [
        (
            "wrong.py",
            'Incompatible return value type (got "Conversation", expected "int")  [return-value]',
        )
    ], done.stdout
