"""The Django app without a server: configuration, system checks and the health view.

Django runs in this process with the minimal project of tests/django_site.py, whose
settings, URLs and views include docs/django.md's blocks as written. Each test starts with
no STATE_* variable and no built service.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django_site import GUIDE, PACKAGE, setup_in_process, write_site
from fakes import TOKEN_KEY
from redis_servers import free_port

from vimbiso_state import ConfigurationError, StateService
from vimbiso_state.domain.health import HEALTH_DEADLINE
from vimbiso_state.services import config
from vimbiso_state.services.config import ENVIRONMENT

setup_in_process()

from django.core.management import call_command  # noqa: E402 - needs the settings above
from django.core.management.base import SystemCheckError  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from vimbiso_state.integrations import django as integration  # noqa: E402


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    integration.close()
    yield
    integration.close()


def _refused() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def check(*, deploy: bool = False) -> str:
    """What ``manage.py check`` prints when it passes (warnings included)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("check", deploy=deploy, tags=["vimbiso_state"], stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def check_fails(*, deploy: bool = False) -> str:
    with pytest.raises(SystemCheckError) as failed:
        check(deploy=deploy)
    return str(failed.value)


def health(path: str = "/health/state/") -> tuple[int, dict[str, object]]:
    response = Client().get(path)
    return response.status_code, json.loads(response.content)


# Configuration and checks
def test_a_memory_backend_chosen_on_purpose_passes_the_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_BACKEND", "memory")
    assert "no issues" in check()


def test_no_backend_chosen_is_a_warning_w001(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_implicit_memory_warned", None)
    output = check()
    assert "(vimbiso_state.W001) no state backend chosen in the environment" in output
    assert "not shared between gunicorn workers" in output


def test_redis_state_url_without_token_keys_fails_with_e001(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", _refused())
    output = check_fails()
    assert "(vimbiso_state.E001) the redis backend stores auth tokens encrypted" in output
    assert "HINT: set STATE_TOKEN_KEYS" in output


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"STATE_BACKEND": "mongo"}, "backend must be one of"),
        ({"REDIS_STATE_URL": "http://cache:6379"}, "redis_url must start with"),
        ({"STATE_BACKEND": "memory", "STATE_SESSION_TTL": "soon"}, "session_ttl"),
        ({"REDIS_STATE_URL": "redis://h:6379/0", "STATE_TOKEN_KEYS": "XYZZY"}, "Fernet"),
    ],
)
def test_an_invalid_configuration_fails_with_e002(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], message: str
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    output = check_fails()
    assert "(vimbiso_state.E002) the environment: " in output and message in output
    assert "XYZZY" not in output  # a key is never echoed


def test_vimbiso_state_that_is_not_a_dict_fails_with_e002() -> None:
    with override_settings(VIMBISO_STATE="redis://cache:6379/0"):
        output = check_fails()
    assert "(vimbiso_state.E002) settings.VIMBISO_STATE: settings.VIMBISO_STATE must be" in output


def test_vimbiso_state_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_BACKEND", "mongo")  # not read: the settings define the store
    with override_settings(VIMBISO_STATE={"backend": "memory", "phone_region": "ZW"}):
        assert "no issues" in check()
        assert integration.configured_settings().phone_region == "ZW"
    with override_settings(VIMBISO_STATE={"redis_url": _refused()}):
        output = check_fails()
    assert "(vimbiso_state.E001)" in output and "settings.VIMBISO_STATE gives no key" in output


def test_the_deploy_checks_ask_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", _refused())
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    assert "no issues" in check()  # plain check: no network
    output = check_fails(deploy=True)
    assert "(vimbiso_state.E003) the state store cannot serve: " in output
    assert "unreachable" in output


def test_the_deploy_checks_warn_about_memory_w002(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_BACKEND", "memory")
    output = check(deploy=True)
    assert "(vimbiso_state.W002) the memory backend keeps conversation state" in output


# The service
def test_the_service_is_built_once_and_shared_by_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_BACKEND", "memory")
    services: list[StateService] = []
    threads = [
        threading.Thread(target=lambda: services.append(integration.state_service()))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(s) for s in services}) == 1
    assert integration.state_service() is services[0]
    assert integration.async_state_service() is integration.container().async_state_service()


def test_a_change_of_the_setting_builds_the_service_again() -> None:
    with override_settings(VIMBISO_STATE={"backend": "memory"}):
        first = integration.state_service()
        first.start("+263771234567")
    with override_settings(VIMBISO_STATE={"backend": "memory", "phone_region": "ZW"}):
        second = integration.state_service()
        assert second is not first
        assert second.health().users == 0
        assert second.start("077 123 4567").version > 0


def test_a_bad_configuration_raises_at_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", _refused())
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="STATE_TOKEN_KEYS"):
            integration.state_service()
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    integration.close()  # what a restart with the fixed environment does
    assert integration.state_service().health is not None


# The health view
def test_the_health_view_gives_the_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_BACKEND", "memory")
    integration.state_service().start("+263771234567")
    status, body = health()
    assert status == 200
    assert body == {
        "status": "healthy",
        "backend": "memory",
        "users": 1,
        "servers": None,
        "server_version": None,
        "maxmemory_policy": None,
        "used_memory": None,
        "maxmemory": None,
        "evicts_state": None,
        "latency_ms": None,
    }


def test_the_health_view_is_503_with_the_reason_on_a_bad_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", _refused())
    status, body = health()
    assert status == 503 and body["status"] == "unhealthy"
    assert "STATE_TOKEN_KEYS" in str(body["reason"])


def test_the_health_view_is_503_within_two_seconds_when_redis_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", _refused())
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    started = time.monotonic()
    status, body = health()
    assert time.monotonic() - started < HEALTH_DEADLINE
    assert status == 503 and "unreachable" in str(body["reason"])


def test_the_health_view_answers_get_only_and_is_never_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATE_BACKEND", "memory")
    client = Client()
    assert client.post("/health/state/").status_code == 405
    assert client.head("/health/state/").status_code == 200
    response = client.get("/health/state/")
    assert "no-store" in response.headers["Cache-Control"]


def test_the_guides_own_health_check_includes_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/django.md's views.py: the bot's /health/ is unhealthy while the store is."""
    monkeypatch.setenv("STATE_BACKEND", "memory")
    status, body = health("/health/")
    assert status == 200 and body["status"] == "healthy"
    assert body["state"] == integration.state_service().health().as_dict()
    integration.close()
    monkeypatch.setenv("STATE_BACKEND", "redis")
    status, body = health("/health/")
    assert status == 503 and body["status"] == "unhealthy"
    assert "STATE_TOKEN_KEYS" in str(body["state"])


# manage.py check, as a deployment runs it
@pytest.mark.slow
def test_manage_py_check_fails_as_the_guide_shows(tmp_path: Path) -> None:
    """A fresh process, as a start script runs it: exit status 1 and the guide's lines."""
    write_site(tmp_path)
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in ENVIRONMENT.values() and name != "DJANGO_SETTINGS_MODULE"
    }
    environ.update(
        REDIS_STATE_URL=_refused(),
        PYTHONPATH=str(tmp_path),
        DJANGO_SETTINGS_MODULE=f"{PACKAGE}.settings",
    )
    done = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    shown = _console_block_after("With `REDIS_STATE_URL` set and no key")
    for line in shown.splitlines()[1:]:  # below the command itself
        assert line in done.stderr.splitlines(), (line, done.stderr)


def _console_block_after(text: str) -> str:
    guide = GUIDE.read_text(encoding="utf-8")
    after = guide[guide.index(text) :]
    start = after.index("```\n") + len("```\n")
    return after[start : after.index("```", start)]
