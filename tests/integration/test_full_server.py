"""A full server under ``noeviction``: every write is refused before it writes anything, the
caller gets StateUnavailable saying the server is full, and memory stays at maxmemory.

Redis skips its memory check for the rest of a script once the script has written; a script
whose first command writes (0.1's save script started with ZREMRANGEBYSCORE) therefore ran whole
on a full server. The scripts declare themselves with a ``#!lua`` shebang, so Redis 7 refuses
any script that may write before it runs, while the server is over maxmemory.

Each test runs with the sync and with the asyncio service, on one Redis started for the test
alone and on a Redis Cluster of this module's own, emptied before each test (their memory
settings are changed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest
import redis
from fakes import TOKEN_KEY
from redis.cluster import RedisCluster
from redis_cluster import LocalCluster
from redis_servers import RedisProcess
from service_kinds import KINDS, service_of

from vimbiso_state.entrypoints.cli import main
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import StateUnavailable
from vimbiso_state.services.state_service import StateService

MEMBER = {"memberID": "m-full", "firstname": "Tendai", "lastname": "Moyo", "memberTier": 3}
ACCOUNTS = [
    {"accountID": f"acc-{n}", "accountName": f"Account {n}", "accountHandle": f"tendai_{n}"}
    for n in range(3)
]
HEADROOM = 400_000  # bytes of maxmemory above what an empty server uses
USERS = 2000


def _used(node: redis.Redis) -> int:
    return int(node.info("memory")["used_memory"])


def _maxmemory(node: redis.Redis) -> int:
    return int(node.config_get("maxmemory")["maxmemory"])


class Deployment:
    """A private Redis, or a private cluster's masters, under noeviction. Memory is a limit
    of each server: on a cluster each master is limited, filled and checked on its own."""

    def __init__(self, backend: str, url: str, nodes: list[redis.Redis]) -> None:
        self.backend = backend
        self.url = url
        self.nodes = nodes
        self.admin: redis.Redis | RedisCluster = (
            RedisCluster.from_url(url) if backend == "redis-cluster" else nodes[0]
        )
        for node in nodes:
            node.config_set("maxmemory-policy", "noeviction")
            node.config_set("appendonly", "no")

    def node_of(self, key: str) -> redis.Redis:
        """The server that holds ``key``."""
        if isinstance(self.admin, RedisCluster):
            port = self.admin.get_node_from_key(key).port
            return next(n for n in self.nodes if n.get_connection_kwargs()["port"] == port)
        return self.nodes[0]

    def limit(self, headroom: int = HEADROOM) -> None:
        for node in self.nodes:
            node.config_set("maxmemory", _used(node) + headroom)

    def unlimit(self) -> None:
        for node in self.nodes:
            node.config_set("maxmemory", 0)

    def state(self, kind: str) -> AbstractContextManager[StateService]:
        container = Container.from_settings(
            Settings(backend=self.backend, redis_url=self.url, token_keys=(TOKEN_KEY,))
        )
        return service_of(container, kind)

    def close(self) -> None:
        if isinstance(self.admin, RedisCluster):
            self.admin.close()
        for node in self.nodes:
            node.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def own_cluster(redis_server_bin: str, redis_cli_bin: str) -> Iterator[LocalCluster]:
    """A cluster of three masters for this module alone (forming one takes seconds): each
    test empties it first and sets its own limits."""
    with LocalCluster(masters=3, executable=redis_server_bin, cli=redis_cli_bin) as cluster:
        yield cluster


@pytest.fixture(
    params=["redis", pytest.param("redis-cluster", marks=[pytest.mark.redis, pytest.mark.cluster])]
)
def full(request: pytest.FixtureRequest, redis_server_bin: str) -> Iterator[Deployment]:
    """A Redis or a cluster of three masters of this module's own: never the shared servers,
    whose maxmemory must not be touched. Each test starts on empty servers without limits and
    without cached scripts, as on servers started for it alone."""
    if request.param == "redis":
        server: RedisProcess = request.getfixturevalue("private_redis")
        deployment = Deployment("redis", server.url, [server.client()])
        yield deployment
        deployment.close()
        return
    cluster: LocalCluster = request.getfixturevalue("own_cluster")
    nodes = [cluster.client(node, decode_responses=False) for node in cluster.nodes]
    for node in nodes:
        node.config_set("maxmemory", 0)
        node.flushall()
        node.script_flush()
    deployment = Deployment("redis-cluster", cluster.url, nodes)
    yield deployment
    deployment.close()


def test_writes_are_refused_whole_and_memory_stays_at_maxmemory(
    full: Deployment, kind: str
) -> None:
    full.limit()  # every server: the users spread over all of a cluster's masters
    written: list[str] = []
    refusals: list[str] = []
    with full.state(kind) as state:
        for n in range(USERS):
            phone = f"+2637790{n:05d}"
            try:
                state.set_profile(phone, MEMBER, ACCOUNTS)
            except StateUnavailable as exc:
                refusals.append(str(exc))
            else:
                written.append(phone)
        assert written and refusals, (len(written), len(refusals))
        assert all("Redis is full" in reason for reason in refusals), refusals[:3]
        # Each accepted write may take a server a few KB past maxmemory, never further.
        for node in full.nodes:
            assert _used(node) <= _maxmemory(node) + 64 * 1024

        # Nothing half-written: a user has all of its conversation or none of it.
        for n in range(USERS):
            digits = f"2637790{n:05d}"
            parts = full.admin.exists(f"user:{{{digits}}}:state", f"session:{{{digits}}}:data")
            assert parts in (0, 2), digits
        assert sum(1 for node in full.nodes for _ in node.scan_iter("user:*")) == len(written)

        # Every kind of write is refused cleanly: a message, a token, a one-call write.
        with pytest.raises(StateUnavailable, match="Redis is full"):
            state.save_token(written[0], "jwt")
        with pytest.raises(StateUnavailable, match="Redis is full"):
            state.navigate(written[0], "handle_action_offer_credex")
        with (
            pytest.raises(StateUnavailable, match="Redis is full"),
            state.message(written[0], "wamid.full", "1"),
        ):
            pytest.fail("a message began on a full server")
        # What was stored is still there, and reads still work.
        assert state.token(written[0]) is None
        assert full.admin.exists(f"user:{{{written[0][1:]}}}:state") == 1

        # Memory freed: writes go through again.
        full.unlimit()
        assert state.navigate(written[0], "handle_action_offer_credex").stage == (
            "handle_action_offer_credex"
        )


def _fill(full: Deployment, *digits: str) -> None:
    """Write filler beside each of these users (in its hash slot) until the server holding
    it refuses, then set that server's maxmemory below what it uses: it stays over maxmemory
    whatever small allocations come and go."""
    filled: list[redis.Redis] = []
    for tag in digits:
        node = full.node_of(f"filler:{{{tag}}}")
        if node in filled:
            continue
        node.config_set("maxmemory", _used(node) + HEADROOM)
        for n in range(10_000):
            try:
                node.set(f"filler:{{{tag}}}:{n}", b"x" * 10_000)
            except redis.exceptions.OutOfMemoryError:
                node.config_set("maxmemory", _used(node) - 50_000)
                filled.append(node)
                break
        else:
            pytest.fail("the server never filled up")


def test_a_message_refused_on_a_full_server_frees_its_user_and_a_reset_runs(
    full: Deployment, kind: str
) -> None:
    """A commit refused by a full server stored nothing: the message frees its user at once
    (a release only deletes, and is allowed on a full server) instead of leaving the user's
    next messages to wait out lease_ttl. A reset, which only deletes, frees memory."""
    held, reset = "+263779200001", "+263779200002"
    with full.state(kind) as state:
        for phone in (held, reset):
            state.set_profile(phone, MEMBER, ACCOUNTS)
        full_server = pytest.raises(StateUnavailable, match="Redis is full")
        with full_server, state.message(held, "wamid.1") as msg:
            msg.conversation.context["kept"] = False
            _fill(full, held[1:], reset[1:])
        assert full.admin.exists("lease:{263779200001}") == 0

        state.reset(reset)
        assert full.admin.exists("user:{263779200002}:state", "session:{263779200002}:data") == 0
        full.unlimit()
        with state.message(held, "wamid.1") as again:  # WhatsApp's redelivery, with room again
            assert not again.duplicate and "kept" not in again.conversation.context


def test_a_script_is_refused_whole_though_its_first_write_is_allowed_on_a_full_server(
    full: Deployment, kind: str
) -> None:
    """Without the ``#!lua`` shebang Redis checks memory only before a script's first write:
    a DEL (allowed on a full server) then lets every write after it through. A damaged
    lease key makes begin.lua's first write such a DEL."""
    phone = "+263779300001"
    digits = phone[1:]
    with full.state(kind) as state:
        full.admin.rpush(f"lease:{{{digits}}}", "not a lease")
        _fill(full, digits)
        with pytest.raises(StateUnavailable, match="Redis is full"):
            state.set_profile(phone, MEMBER, ACCOUNTS)
        assert full.admin.exists(f"user:{{{digits}}}:state", f"session:{{{digits}}}:data") == 0
        assert full.admin.type(f"lease:{{{digits}}}") == b"list"  # not even the DEL


def test_an_effect_refused_on_a_full_server_does_not_run_and_is_not_in_doubt(
    full: Deployment, kind: str
) -> None:
    """Marking an effect started is a write: refused on a full server, before the call to
    Credex. Nothing is recorded, so the redelivery runs it, once, when there is room again."""
    phone = "+263779400001"
    calls: list[int] = []
    with full.state(kind) as state:
        state.set_profile(phone, MEMBER, ACCOUNTS)
        with (
            pytest.raises(StateUnavailable, match="Redis is full"),
            state.message(phone, "wamid.pay") as msg,
        ):
            _fill(full, phone[1:])
            msg.effect("create_credex", lambda: calls.append(1), key="offer-1")
        assert calls == []
        full.unlimit()
        with state.message(phone, "wamid.pay") as again:
            assert again.in_doubt == ()
            again.effect("create_credex", lambda: calls.append(1) or {"ok": True}, key="offer-1")
        assert calls == [1]


def test_operators_can_still_read_a_full_server(
    full: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the server is full an operator needs to look most: ``inspect`` and
    ``expirations`` (without --ack) write nothing, and their scripts say so (no-writes), so
    Redis runs them over maxmemory."""
    phone = "+263779400001"
    digits = phone[1:]
    container = Container.from_settings(
        Settings(backend=full.backend, redis_url=full.url, token_keys=(TOKEN_KEY,), form_ttl=1)
    )
    state = container.state_service()
    with state.message(phone, "wamid.1", "offer") as msg:
        msg.form_start("offer", required=["amount", "recipient"])
        msg.form_fill(amount="USD 25")
    container.close()
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    monkeypatch.setenv("STATE_BACKEND", full.backend)
    monkeypatch.setenv("REDIS_STATE_URL", full.url)
    time.sleep(1.2)  # the form is past its deadline
    _fill(full, digits)
    with pytest.raises(StateUnavailable, match="Redis is full"):
        state_again = Container.from_env().state_service()
        with state_again.expirations() as batch:  # claiming writes: refused
            list(batch)

    assert main(["inspect", phone]) == 0
    assert "USD" in capsys.readouterr().out
    assert main(["expirations"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["phone"], e["kind"]) for e in lines if e["phone"] == phone] == [(phone, "form")]
