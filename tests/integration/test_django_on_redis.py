"""The Django app on a real private Redis: the health view and deploy checks in this process,
and the project served by gunicorn as the VimbisoPay bot is deployed (two sync workers;
``--preload``, which copies what the master built into each worker)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django_site import GUIDE, PACKAGE, setup_in_process, write_site
from doc_examples import block_after, run_block
from fakes import TOKEN_KEY
from redis_servers import RedisProcess, free_port

from vimbiso_state.domain.health import HEALTH_DEADLINE
from vimbiso_state.services.config import ENVIRONMENT

setup_in_process()

from django.core.management import call_command  # noqa: E402 - needs the settings above
from django.core.management.base import SystemCheckError  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from vimbiso_state.integrations import django as integration  # noqa: E402

NOT_SHARED = "state is not shared between workers"


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    integration.close()
    yield
    integration.close()


def _deploy_check() -> str:
    out = io.StringIO()
    call_command("check", deploy=True, tags=["vimbiso_state"], stdout=out, stderr=out)
    return out.getvalue()


def test_the_guides_settings_dict_serves_from_redis(
    monkeypatch: pytest.MonkeyPatch, private_redis: RedisProcess
) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", private_redis.url)
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    scope = run_block(block_after(GUIDE, "define `VIMBISO_STATE`"), "django.md")
    monkeypatch.delenv("REDIS_STATE_URL")  # read by the block, never by the library
    with override_settings(VIMBISO_STATE=scope["VIMBISO_STATE"]):
        response = Client().get("/health/state/")
        assert response.status_code == 200
        body = json.loads(response.content)
        assert body["status"] == "healthy" and body["backend"] == "redis"
        assert integration.state_service().start("077 123 4567").version > 0  # region ZW
        # The seed's allkeys-lru is a deploy warning; noeviction is not.
        assert "(vimbiso_state.W003) maxmemory-policy allkeys-lru" in _deploy_check()
        private_redis.client().config_set("maxmemory-policy", "noeviction")
        assert "no issues" in _deploy_check()


def test_the_view_and_deploy_check_see_redis_go_down_and_come_back(
    monkeypatch: pytest.MonkeyPatch, private_redis: RedisProcess
) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", private_redis.url)
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    client = Client()
    assert client.get("/health/state/").status_code == 200
    private_redis.stop()
    started = time.monotonic()
    response = client.get("/health/state/")
    assert time.monotonic() - started < HEALTH_DEADLINE
    assert response.status_code == 503
    assert "unreachable" in json.loads(response.content)["reason"]
    with pytest.raises(SystemCheckError, match=r"vimbiso_state\.E003"):
        _deploy_check()
    private_redis.start()
    assert client.get("/health/state/").status_code == 200


# gunicorn
@contextmanager
def gunicorn(directory: Path, environ: dict[str, str], wsgi: str = "wsgi") -> Iterator[str]:
    """The site served by gunicorn with two sync workers and --preload; its base URL. The
    server's stderr (its log and the library's) is in ``directory / "gunicorn.log"``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT.values()}
    env.update(
        environ,
        PYTHONPATH=str(directory),
        DJANGO_SETTINGS_MODULE=f"{PACKAGE}.settings",
        SITE_LOGS_TO_STDERR="1",
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers=2",
        "--worker-class=sync",
        "--timeout=30",
        "--preload",
        f"--bind=127.0.0.1:{port}",
        f"{PACKAGE}.{wsgi}:application",
    ]
    with (directory / "gunicorn.log").open("wb") as log:
        server = subprocess.Popen(command, cwd=directory, env=env, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_serving(base, server)
            yield base
        finally:
            server.terminate()
            server.wait(30)


def _wait_until_serving(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn exited"
        try:
            httpx.get(f"{base}/health/state/", timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("gunicorn did not serve within 30 s")


def _counts(base: str, requests: int = 10) -> list[dict[str, int]]:
    """``requests`` concurrent calls of the counting view, each holding its worker 0.2 s:
    both workers serve some."""
    with ThreadPoolExecutor(requests) as pool:
        responses = list(
            pool.map(lambda _: httpx.get(f"{base}/count/?hold=0.2", timeout=30), range(requests))
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json() for r in responses]


@pytest.mark.slow
@pytest.mark.parametrize("wsgi", ["wsgi", "wsgi_prebuilt"])
def test_two_gunicorn_workers_share_state_on_redis_from_the_url_alone(
    tmp_path: Path, private_redis: RedisProcess, wsgi: str
) -> None:
    """Built at each worker's first request, or in the master and copied by the fork."""
    write_site(tmp_path)
    environ = {"REDIS_STATE_URL": private_redis.url, "STATE_TOKEN_KEYS": TOKEN_KEY}
    with gunicorn(tmp_path, environ, wsgi) as base:
        response = httpx.get(f"{base}/health/state/", timeout=5)
        assert response.status_code == 200 and response.json()["backend"] == "redis"
        counts = _counts(base)
        assert len({c["pid"] for c in counts}) == 2  # both workers served
        assert sorted(c["n"] for c in counts) == list(range(1, 11))  # one count, shared
        private_redis.stop()
        started = time.monotonic()
        response = httpx.get(f"{base}/health/state/", timeout=5)
        assert time.monotonic() - started < HEALTH_DEADLINE
        assert response.status_code == 503 and response.json()["status"] == "unhealthy"
        private_redis.start()
        assert httpx.get(f"{base}/health/state/", timeout=5).status_code == 200
    log = (tmp_path / "gunicorn.log").read_text()
    assert NOT_SHARED not in log and "no state backend chosen" not in log


@pytest.mark.slow
def test_a_memory_store_built_in_the_gunicorn_master_warns_in_each_worker(tmp_path: Path) -> None:
    write_site(tmp_path)
    with gunicorn(tmp_path, {"STATE_BACKEND": "memory"}, wsgi="wsgi_prebuilt") as base:
        counts = _counts(base)
    served = {c["pid"] for c in counts}
    assert len(served) == 2
    # Each worker counted on its own copy: neither saw all ten.
    assert max(c["n"] for c in counts) < 10
    log = (tmp_path / "gunicorn.log").read_text()
    warned = [line for line in log.splitlines() if NOT_SHARED in line]
    assert len(warned) == 2, log
    assert {int(line.split("forked child ")[1].split(":")[0]) for line in warned} == served
