"""The operator commands on Redis Cluster: doctor checks every primary, stats walks them all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vimbiso_state.entrypoints.cli import main
from vimbiso_state.services.config import ENVIRONMENT
from vimbiso_state.services.container import Container


@pytest.fixture(autouse=True)
def cluster_env(monkeypatch: pytest.MonkeyPatch, cluster_url: str) -> None:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("STATE_BACKEND", "redis-cluster")
    monkeypatch.setenv("REDIS_STATE_URL", cluster_url)


def test_doctor_checks_every_primary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) in (0, 1)  # the verdict depends on the shared cluster's flags
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if line.startswith("primary ")]
    assert len(headings) >= 3
    assert out.count(" scripting ") == len(headings)
    assert out.splitlines()[-1].startswith("verdict: ")


def test_stats_and_inspect_find_keys_on_every_shard(
    cluster_container: Callable[..., Container],
    cluster_url: str,
    new_phones: Callable[[int], list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    container = cluster_container(cluster_url)
    state = container.state_service()
    phones = new_phones(12)  # twelve hash tags: spread over the three primaries
    for phone in phones:
        state.start(phone, "hi")
    container.redis_client().close()

    assert main(["stats", "--sample", "5"]) == 0
    out = capsys.readouterr().out
    known = int(out.split("conversations: ")[1].split(" known")[0].replace(",", ""))
    assert known >= len(phones)
    assert "5 sampled user(s)" in out

    assert main(["inspect", phones[0]]) == 0
    out = capsys.readouterr().out
    assert f"{phones[0]}  redis-cluster" in out
    assert "session:{" + phones[0][1:] + "}:data" in out
    for phone in phones:
        assert main(["reset", phone]) == 0
