"""The doctor's findings from server replies, with a fake client: every verdict, every denial."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from vimbiso_state.adapters.redis.connection import RetryPolicy
from vimbiso_state.domain.errors import StateUnavailable
from vimbiso_state.services.operations.server_checks import (
    Finding,
    Verdict,
    check_server,
    human_bytes,
    overall,
)

SEED_CONFIG = {
    "maxmemory-policy": "allkeys-lru",
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory": str(256 * 1024 * 1024),
}
SEED_INFO: dict[str, Any] = {
    "redis_version": "7.2.4",
    "redis_mode": "standalone",
    "used_memory": 2 * 1024 * 1024,
    "maxmemory": 256 * 1024 * 1024,
    "maxmemory_policy": "allkeys-lru",
    "aof_enabled": 1,
    "aof_last_write_status": "ok",
    "evicted_keys": 0,
}


class FakeServer:
    """Answers PING, INFO, CONFIG GET and EVAL like a server; ``denied`` commands raise NOPERM."""

    def __init__(self, config: dict[str, str] | None = None, **info: Any) -> None:
        self.config = {**SEED_CONFIG, **(config or {})}
        self.info_reply = {**SEED_INFO, **info}
        self.denied: set[str] = set()
        self.reachable = True

    def _check(self, command: str) -> None:
        if not self.reachable:
            raise redis.exceptions.ConnectionError("Connection refused")
        if command in self.denied:
            raise redis.exceptions.NoPermissionError(f"NOPERM no permissions to run '{command}'")

    def ping(self) -> bool:
        self._check("ping")
        return True

    def info(self) -> dict[str, Any]:
        self._check("info")
        return dict(self.info_reply)

    def config_get(self, name: str) -> dict[str, str]:
        self._check("config")
        return {name: self.config[name]} if name in self.config else {}

    def eval(self, script: str, numkeys: int) -> int:
        self._check("eval")
        return 1


def check(server: FakeServer) -> dict[str, Finding]:
    findings = check_server(server, retry=RetryPolicy(0), pings=3)  # type: ignore[arg-type]
    return {f.name: f for f in findings}


def test_the_seed_settings_warn_only_about_allkeys_lru() -> None:
    found = check(FakeServer())
    assert [f.name for f in found.values()] == [
        "version",
        "maxmemory-policy",
        "appendonly",
        "appendfsync",
        "maxmemory",
        "used memory",
        "evicted keys",
        "latency",
        "scripting",
    ]
    assert {n for n, f in found.items() if f.verdict is not Verdict.OK} == {"maxmemory-policy"}
    assert "critical state included" in found["maxmemory-policy"].advice
    assert "noeviction" in found["maxmemory-policy"].advice
    assert "1 s" in found["appendfsync"].advice
    assert found["maxmemory"].value == "256.0 MiB"
    assert "65,536 conversations" in found["maxmemory"].advice
    assert overall(list(found.values())) is Verdict.WARN


@pytest.mark.parametrize(
    ("config", "name", "verdict"),
    [
        ({"appendonly": "no"}, "appendonly", Verdict.FAIL),
        ({"appendfsync": "no"}, "appendfsync", Verdict.WARN),
        ({"appendfsync": "always"}, "appendfsync", Verdict.OK),
        ({"maxmemory": "0"}, "maxmemory", Verdict.WARN),
        ({"maxmemory-policy": "noeviction"}, "maxmemory-policy", Verdict.OK),
        ({"maxmemory-policy": "volatile-ttl"}, "maxmemory-policy", Verdict.OK),
        ({"maxmemory-policy": "volatile-lru"}, "maxmemory-policy", Verdict.WARN),
        ({"maxmemory-policy": "allkeys-lfu"}, "maxmemory-policy", Verdict.WARN),
    ],
)
def test_each_setting_gets_its_verdict(config: dict[str, str], name: str, verdict: Verdict) -> None:
    assert check(FakeServer(config))[name].verdict is verdict


def test_no_aof_fails_the_whole_check() -> None:
    found = check(FakeServer({"appendonly": "no"}))
    assert "restart loses every conversation" in found["appendonly"].advice
    assert overall(list(found.values())) is Verdict.FAIL


def test_memory_pressure_evictions_old_versions_and_failed_aof_writes() -> None:
    found = check(
        FakeServer(
            used_memory=230 * 1024 * 1024,
            evicted_keys=1234,
            redis_version="5.0.7",
            aof_last_write_status="err",
        )
    )
    assert found["used memory"].verdict is Verdict.WARN
    assert "(90%)" in found["used memory"].value
    assert found["evicted keys"].verdict is Verdict.WARN
    assert found["evicted keys"].value.startswith("1,234")
    assert found["version"].verdict is Verdict.FAIL  # no script shebangs before Redis 7.0
    assert "7.0" in found["version"].advice
    assert found["appendonly"].verdict is Verdict.FAIL


def test_redis_7_0_is_the_oldest_server_that_passes() -> None:
    assert check(FakeServer(redis_version="6.2.14"))["version"].verdict is Verdict.FAIL
    assert check(FakeServer(redis_version="7.0.0"))["version"].verdict is Verdict.OK


def test_denied_config_falls_back_to_info_where_it_can() -> None:
    server = FakeServer()
    server.denied = {"config"}
    found = check(server)
    assert found["maxmemory-policy"].value == "allkeys-lru"  # INFO memory has it
    assert found["appendonly"].verdict is Verdict.OK  # INFO persistence: aof_enabled
    assert found["appendfsync"] == Finding("appendfsync", "cannot read (ACL)", Verdict.WARN)


def test_denied_everything_gives_warnings_not_a_crash() -> None:
    server = FakeServer()
    server.denied = {"config", "info"}
    found = check(server)
    for name in ("version", "maxmemory-policy", "appendonly", "appendfsync", "maxmemory"):
        assert found[name].value == "cannot read (ACL)"
        assert found[name].verdict is Verdict.WARN
    assert found["latency"].verdict is Verdict.OK


def test_denied_eval_fails_because_the_library_needs_scripts() -> None:
    server = FakeServer()
    server.denied = {"eval"}
    found = check(server)
    assert found["scripting"].verdict is Verdict.FAIL
    assert "EVALSHA" in found["scripting"].advice


def test_an_unreachable_server_raises_state_unavailable() -> None:
    server = FakeServer()
    server.reachable = False
    with pytest.raises(StateUnavailable):
        check(server)


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(256 * 1024 * 1024) == "256.0 MiB"
    assert human_bytes(3 * 1024**4) == "3072.0 GiB"
