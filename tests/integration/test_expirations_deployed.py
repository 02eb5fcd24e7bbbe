"""Expiry events as deployments run them, on a real Redis and a Redis Cluster, in real time:
two consumer processes at once, a consumer killed mid-batch, and two hosts whose clocks are
minutes apart (``faketime``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import TOKEN_KEY

from vimbiso_state.domain.expirations import ExpiryKind
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

pytestmark = pytest.mark.redis

FORM_TTL = 1.0
POLL = 0.1


@pytest.fixture(params=["redis", pytest.param("redis-cluster", marks=pytest.mark.cluster)])
def url(request: pytest.FixtureRequest) -> tuple[str, str]:
    backend = request.param
    return backend, str(
        request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    )


def _container(url: tuple[str, str], **settings: Any) -> Container:
    backend, address = url
    return Container.from_settings(
        Settings(backend=backend, redis_url=address, token_keys=(TOKEN_KEY,), **settings)
    )


def _members(count: int) -> list[str]:
    base = 263_780_000_000 + random.randrange(9_000_000)
    return [f"+{base + n * 1009}" for n in range(count)]


def _leave_forms(state: StateService, members: list[str]) -> None:
    for phone in members:
        with state.message(phone, f"wamid.{phone}.offer", "offer") as msg:
            msg.form_start("offer", required=["amount", "recipient"])
            msg.form_fill(amount="USD 10")


def _consume(url: tuple[str, str], seconds: float, out: Path, lease: float = 30) -> None:
    """Poll every POLL seconds for ``seconds``; one line for each form event received."""
    container = _container(url, form_ttl=FORM_TTL)
    state = container.state_service()
    clock = container.clock()
    stop = time.monotonic() + seconds
    with out.open("a") as lines:
        while time.monotonic() < stop:
            with state.expirations(limit=5, lease=lease) as batch:
                for event in batch:
                    if event.kind is ExpiryKind.FORM:
                        late = (clock.now() - event.expired_at).total_seconds()
                        lines.write(json.dumps([event.phone, late, event.redelivered]) + "\n")
                        lines.flush()
            time.sleep(POLL)
    container.close()


def _forked(target: Any, *args: Any) -> int:
    child = os.fork()
    if child == 0:  # pragma: no cover - the consumer process, reported by its exit status
        status = 1
        try:
            target(*args)
            status = 0
        finally:
            os._exit(status)
    return child


def test_two_consumer_processes_deliver_each_event_once_shortly_after_its_deadline(
    url: tuple[str, str], tmp_path: Path
) -> None:
    container = _container(url, form_ttl=FORM_TTL)
    members = _members(20)
    _leave_forms(container.state_service(), members)
    container.close()
    outs = [tmp_path / "a", tmp_path / "b"]
    children = [_forked(_consume, url, 3 * FORM_TTL + 1, out) for out in outs]
    for child in children:
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    events = [
        json.loads(line) for out in outs if out.exists() for line in out.read_text().splitlines()
    ]
    assert sorted(phone for phone, _, _ in events) == sorted(m.lstrip("+") for m in members)
    assert all(0 <= late < 1.0 for _, late, _ in events), events  # the poll, and a bit
    assert not any(redelivered for _, _, redelivered in events)


def test_a_consumer_killed_mid_batch_loses_nothing(url: tuple[str, str], tmp_path: Path) -> None:
    container = _container(url, form_ttl=FORM_TTL)
    members = _members(3)
    state = container.state_service()
    _leave_forms(state, members)
    time.sleep(FORM_TTL + 0.2)

    def claim_and_die() -> None:
        dying = _container(url, form_ttl=FORM_TTL).state_service()
        with dying.expirations(limit=10, lease=1) as batch:
            assert len([e for e in batch if e.kind is ExpiryKind.FORM]) == 3
            os.kill(os.getpid(), signal.SIGKILL)

    child = _forked(claim_and_die)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with state.expirations() as batch:  # still claimed by the dead consumer
        assert [e for e in batch if e.kind is ExpiryKind.FORM] == []
    time.sleep(1.1)  # its lease passes
    with state.expirations() as batch:
        events = [e for e in batch if e.kind is ExpiryKind.FORM]
    assert sorted(e.phone for e in events) == sorted(m.lstrip("+") for m in members)
    assert all(e.redelivered for e in events)
    container.close()


def _one_member_leaves_a_form(url: tuple[str, str], **settings: Any) -> tuple[Container, str, str]:
    """A member who left a form; the container, their phone and their expiry partition."""
    container = _container(url, form_ttl=FORM_TTL, **settings)
    state = container.state_service()
    [phone] = _members(1)
    _leave_forms(state, [phone])
    partition = container.conversations()._keys.for_user(state._flows.phone(phone)).expiry
    return container, phone, partition


def test_an_idle_member_costs_no_index_entry(url: tuple[str, str]) -> None:
    container, phone, partition = _one_member_leaves_a_form(url, session_ttl=1)
    state, digits, admin = container.state_service(), phone.lstrip("+"), container.redis_client()
    assert admin.zscore(partition, f"s:{digits}") and admin.zscore(partition, f"f:{digits}")
    time.sleep(1.3)
    with state.expirations() as batch:
        assert sorted(e.kind.value for e in batch if e.phone == digits) == ["form", "session"]
    assert admin.zscore(partition, f"s:{digits}") is None
    assert admin.zscore(partition, f"f:{digits}") is None
    container.close()


def test_a_form_under_way_is_indexed_again_when_the_index_lost_it(url: tuple[str, str]) -> None:
    """allkeys-lru may evict the expiry index (or part of a cluster's): the member's next
    message puts the form under way back in it, so that its expiry is still told."""
    container, phone, partition = _one_member_leaves_a_form(url)
    state, digits, admin = container.state_service(), phone.lstrip("+"), container.redis_client()
    admin.zrem(partition, f"s:{digits}", f"f:{digits}")  # as the index's eviction leaves it
    with state.message(phone, f"wamid.{phone}.recipient", "bob_smith") as msg:
        msg.form_fill(recipient="bob_smith")
    assert admin.zscore(partition, f"f:{digits}")
    time.sleep(FORM_TTL + 0.3)
    with state.expirations() as batch:
        assert "form" in [e.kind.value for e in batch if e.phone == digits]
    container.close()


HOST = """
import json, os, sys, time
from vimbiso_state import Container
container = Container.from_env()
state = container.state_service()
clock = container.clock()
if sys.argv[1] == "leave":
    for phone in sys.argv[2:]:
        with state.message(phone, "wamid." + phone, "offer") as msg:
            msg.form_start("offer", required=["amount"])
    print(json.dumps([clock.now().isoformat(), time.time()]))
else:
    seen, stop, polled = [], time.monotonic() + 30, False
    while len(seen) < int(sys.argv[2]) and time.monotonic() < stop:
        with state.expirations(limit=100) as batch:
            for event in batch:
                if event.kind.value == "form":
                    now = clock.now().isoformat()
                    seen.append([event.phone, event.expired_at.isoformat(), now])
        if not polled:
            print("polling", flush=True)
            polled = True
        time.sleep(0.1)
    print(json.dumps(seen))
"""


def _start_host(offset: str, url: tuple[str, str], *args: str) -> subprocess.Popen[str]:
    """A process on a host whose clock is ``offset`` from this one's (faketime)."""
    backend, address = url
    env = {
        **os.environ,
        "STATE_BACKEND": backend,
        "REDIS_STATE_URL": address,
        "STATE_TOKEN_KEYS": TOKEN_KEY,
        "STATE_FORM_TTL": "2",
    }
    command = ["faketime", "-f", offset, sys.executable, "-c", textwrap.dedent(HOST), *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _host(offset: str, url: tuple[str, str], *args: str) -> Any:
    host = _start_host(offset, url, *args)
    out, err = host.communicate(timeout=60)
    assert host.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def faketime() -> Iterator[None]:
    if shutil.which("faketime") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("faketime is not installed (.ci/run installs it)", pytrace=False)
        pytest.skip("faketime is not installed (Debian: apt-get install faketime)")
    yield


@pytest.mark.usefixtures("faketime")
def test_hosts_five_minutes_apart_agree_on_every_deadline(url: tuple[str, str]) -> None:
    """A host five minutes fast starts the forms, one five minutes slow consumes: the events
    come on the server's clock, neither five minutes early nor late, nor lost."""
    members = _members(5)
    # The consumer polls before the forms start, so lateness is the poll's, not a start-up's.
    consumer = _start_host("-300s", url, "consume", str(len(members)))
    assert consumer.stdout is not None
    assert consumer.stdout.readline().strip() == "polling", consumer.communicate()[1]
    started, _ = _host("+300s", url, "leave", *members)
    out, err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, err
    events = json.loads(out.strip().splitlines()[-1])
    assert sorted(phone for phone, _, _ in events) == sorted(m.lstrip("+") for m in members)
    begun = datetime.fromisoformat(started)
    for _, expired_at, received_at in events:
        deadline, received = datetime.fromisoformat(expired_at), datetime.fromisoformat(received_at)
        assert abs((deadline - begun).total_seconds() - 2) < 1  # form_ttl from the start
        assert 0 <= (received - deadline).total_seconds() < 1.5  # neither early nor late
