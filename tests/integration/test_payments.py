"""A payment runs at most once per intent on a real Redis, as the library is deployed: a worker
SIGKILLed inside the Credex call, the server evicting any subset of the member's keys
(allkeys-lru, the seed's policy), a reply lost after the server ran the commit, and an AOF
rewrite that caught a lease before a crash of the server."""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fakes import TOKEN_KEY
from redis.cluster import RedisCluster
from redis_servers import RedisProcess

from vimbiso_state.adapters.redis.scripts import COMMIT
from vimbiso_state.domain.conversation import DEFAULT_STAGE, Notice
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import EffectInDoubt, StateUnavailable, UserBusy
from vimbiso_state.services.state_service import StateService

pytestmark = pytest.mark.redis

OFFER = "handle_action_offer_credex"
CONFIRM = "ConfirmOfferSecured"
PARTS = ("user", "session", "form", "handled", "effects", "token")
KEYS = {
    "user": "user:{%s}:state",
    "session": "session:{%s}:data",
    "form": "form:{%s}:data",
    "handled": "handled:{%s}",
    "effects": "effects:{%s}",
    "token": "token:{%s}",
}


class Crash(BaseException):
    """The worker dies: not an Exception, so no component of the bot catches it."""


class Credex:
    """createCredex, counting every call in a file (a forked worker's calls count too)."""

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger

    def calls(self) -> int:
        return len(self.ledger.read_text().splitlines()) if self.ledger.exists() else 0

    def create(self, values: dict[str, str], then: Callable[[], None] | None = None) -> Any:
        with self.ledger.open("a") as ledger:
            ledger.write(f"{values}\n")
        if then is not None:
            then()
        return {"credexID": f"c-{self.calls()}"}


def bot(state: StateService, credex: Credex, then: Callable[[], None] | None = None) -> Any:
    """The live bot's shape: a component a stage, each catching every Exception; it pays only
    at the confirm step, keyed by the offer's form id. ``then`` runs inside the Credex call,
    after the offer was created (a crash before the answer came back)."""

    def on_message(phone: str, message_id: str, text: str) -> str:
        with state.message(phone, message_id, text) as msg:
            if msg.duplicate:
                return "duplicate"
            conv = msg.conversation
            try:
                if text == "offer":
                    conv.navigate(OFFER)
                    msg.form_start("offer", required=["amount", "recipient"])
                    conv.stage = "AmountInput"
                elif conv.stage == "AmountInput":
                    msg.form_fill(amount=text)
                    conv.stage = "HandleInput"
                elif conv.stage == "HandleInput":
                    msg.form_fill(recipient=text)
                    conv.stage = CONFIRM
                elif conv.stage == CONFIRM and text == "1" and conv.form is not None:
                    form = conv.form
                    offer = msg.effect(
                        "create_credex",
                        lambda: credex.create(dict(form.values), then),
                        key=form.id,
                    )
                    msg.form_complete()
                    conv.stage = DEFAULT_STAGE
                    return f"Sent {offer['credexID']}"
            except Exception as error:  # as the live bot's components do
                return f"error: {type(error).__name__}"
            return conv.stage

    return on_message


def _phone() -> str:
    return f"+2637{random.randrange(10**7, 10**8)}"


def _to_confirm(state: StateService, credex: Credex, phone: str) -> None:
    handle = bot(state, credex)
    for n, text in enumerate(["offer", "USD 25", "bob_shop"]):
        handle(phone, f"wamid.setup.{n}", text)
    assert state.start(phone).stage == CONFIRM


@pytest.fixture(params=["redis", pytest.param("redis-cluster", marks=pytest.mark.cluster)])
def deployment(request: pytest.FixtureRequest) -> Iterator[tuple[Container, Any]]:
    """A container on one Redis or on a Redis Cluster (short leases), and an admin client."""
    backend = request.param
    url = request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url")
    settings = Settings(
        backend=backend, redis_url=url, token_keys=(TOKEN_KEY,), lease_ttl=1, lease_wait=2
    )
    container = Container.from_settings(settings)
    admin = redis.Redis.from_url(url) if backend == "redis" else RedisCluster.from_url(url)
    yield container, admin
    container.close()
    admin.close()


def test_a_worker_killed_inside_the_credex_call_never_pays_again(
    deployment: tuple[Container, Any], tmp_path: Path
) -> None:
    container, _ = deployment
    state = container.state_service()
    credex = Credex(tmp_path / "ledger")
    phone = _phone()
    _to_confirm(state, credex, phone)

    child = os.fork()
    if child == 0:  # pragma: no cover - the worker, reported by how it died
        try:
            kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
            bot(state, credex, then=kill)(phone, "wamid.tap", "1")
        finally:
            os._exit(3)  # only if the kill did not happen
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert credex.calls() == 1

    handle = bot(state, credex)
    time.sleep(1.1)  # the dead worker's lease lapses
    assert handle(phone, "wamid.tap", "1") == "error: EffectInDoubt"  # WhatsApp's redelivery
    assert handle(phone, "wamid.tap2", "1") == "error: EffectInDoubt"  # the member taps again
    assert credex.calls() == 1
    form = state.start(phone).form
    assert form is not None
    with state.message(phone, "wamid.support", "status") as msg:
        [doubt] = msg.in_doubt
        assert (doubt.name, doubt.key) == ("create_credex", form.id)
        msg.settle("create_credex", {"credexID": "c-1"}, key=form.id)  # found on the dashboard
    assert handle(phone, "wamid.tap3", "1") == "Sent c-1"
    assert credex.calls() == 1


SUBSETS = [
    subset for size in range(len(PARTS) + 1) for subset in itertools.combinations(PARTS, size)
]


@pytest.mark.parametrize("scenario", ["crashed in the call", "paid, reply failed"])
@pytest.mark.parametrize("evicted", SUBSETS, ids=lambda s: "+".join(s) or "nothing")
def test_evicting_any_subset_of_the_members_keys_never_pays_twice(
    deployment: tuple[Container, Any], tmp_path: Path, evicted: tuple[str, ...], scenario: str
) -> None:
    """After the payment's message stored nothing (its worker crashed inside the call, or the
    call succeeded and the reply failed), the server evicts these keys of the member; the
    redelivery and the member's next taps never create a second offer."""
    container, admin = deployment
    state = container.state_service()
    credex = Credex(tmp_path / "ledger")
    phone = _phone()
    state.save_token(phone, "eyJ.jwt.sig")
    _to_confirm(state, credex, phone)

    def crash() -> None:
        raise Crash("the worker died")

    with pytest.raises((Crash, ConnectionError)):
        if scenario == "crashed in the call":
            bot(state, credex, then=crash)(phone, "wamid.tap", "1")
        else:
            with state.message(phone, "wamid.tap", "1") as msg:
                form = msg.conversation.form
                assert form is not None
                msg.effect("create_credex", lambda: credex.create({}), key=form.id)
                raise ConnectionError("the reply to WhatsApp failed")
    assert credex.calls() == 1

    digits = phone.lstrip("+")
    for part in evicted:
        admin.delete(KEYS[part] % digits)
    handle = bot(state, credex)
    for message_id in ("wamid.tap", "wamid.tap2", "wamid.tap3"):
        handle(phone, message_id, "1")
    assert credex.calls() == 1, f"paid again after evicting {evicted or 'nothing'}"


def test_effect_records_outlive_the_conversation_they_guard(redis_url: str) -> None:
    """The records are kept at least as long as the critical data that names them: their own
    dedupe_ttl running out must not read as an eviction (which drops the navigation)."""
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(TOKEN_KEY,), dedupe_ttl=1)
    )
    state = container.state_service()
    admin = redis.Redis.from_url(redis_url)
    phone = _phone()
    digits = phone.lstrip("+")
    try:
        with state.message(phone, "wamid.1") as msg:
            msg.conversation.navigate(OFFER)
            msg.effect("create_credex", lambda: {"credexID": "c-1"}, key="offer-1")
        time.sleep(1.2)
        assert admin.pttl(f"effects:{{{digits}}}") >= admin.pttl(f"user:{{{digits}}}:state") - 50
        conv = state.start(phone)
        assert conv.notices == [] and conv.stage == OFFER
    finally:
        state.reset(phone)
        container.close()
        admin.close()


def test_records_a_settle_made_guard_the_conversation_it_committed(redis_url: str) -> None:
    """A message that settles an intent the member has no records of yet (the outcome found
    on the dashboard) commits a conversation that names those records: evicting them then
    drops the navigation that could pay again, as for records an effect started."""
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(TOKEN_KEY,))
    )
    state = container.state_service()
    admin = redis.Redis.from_url(redis_url)
    phone = _phone()
    digits = phone.lstrip("+")
    try:
        state.start(phone)
        with state.message(phone, "wamid.1") as msg:
            msg.conversation.navigate(OFFER)
            msg.settle("create_credex", {"credexID": "c-1"}, key="offer-1")
        assert state.start(phone).stage == OFFER
        admin.delete(f"effects:{{{digits}}}")
        conv = state.start(phone)
        assert conv.stage == DEFAULT_STAGE and Notice.STATE_LOST in conv.notices
    finally:
        state.reset(phone)
        container.close()
        admin.close()


class _LosesCommitReplies:
    """The repository's client: a commit runs on the server, then its reply is lost."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name != "evalsha":
            return call

        def evalsha(sha: str, *args: Any) -> Any:
            reply = call(sha, *args)
            if sha == COMMIT.sha and not self.lost:
                self.lost += 1
                raise redis.ConnectionError("the connection dropped before the reply came")
            return reply

        return evalsha


@pytest.mark.parametrize("retries", [2, 0])
def test_a_lost_commit_reply_never_loses_the_next_message(redis_url: str, retries: int) -> None:
    container = Container.from_settings(
        Settings(
            backend="redis", redis_url=redis_url, token_keys=(TOKEN_KEY,), redis_retries=retries
        )
    )
    state = container.state_service()
    repository = container.conversations()
    lossy = _LosesCommitReplies(repository._client)
    repository._client = lossy  # type: ignore[assignment]
    phone = _phone()
    try:

        def append(message_id: str) -> None:
            with state.message(phone, message_id) as msg:
                msg.conversation.context.setdefault("entries", []).append(message_id)

        if retries:
            append("wamid.m1")  # sent again, answered "applied" by its own fence
        else:
            with pytest.raises(StateUnavailable):  # the outcome is unknown to the bot
                append("wamid.m1")
        append("wamid.m2")
        with state.message(phone, "wamid.m1") as redelivered:
            assert redelivered.duplicate  # it was applied, once
        assert lossy.lost == 1
        assert state.start(phone).context["entries"] == ["wamid.m1", "wamid.m2"]
    finally:
        state.reset(phone)
        container.close()


def test_a_lease_an_aof_rewrite_caught_does_not_come_back_after_a_crash(
    redis_server_bin: str,
) -> None:
    """The lease is written without being logged. An AOF rewrite during a message snapshots
    it; its release must be logged, or a restart brings it back and holds the user until it
    lapses (UserBusy for every message meanwhile)."""
    with RedisProcess(executable=redis_server_bin) as server:
        settings = Settings(
            backend="redis", redis_url=server.url, token_keys=(TOKEN_KEY,), lease_wait=0.5
        )
        container = Container.from_settings(settings)
        state = container.state_service()
        admin = server.client()
        phone = _phone()
        with state.message(phone, "wamid.1") as msg:
            msg.conversation.navigate(OFFER)
            admin.bgrewriteaof()
            while admin.info("persistence")["aof_rewrite_in_progress"]:
                time.sleep(0.01)
            time.sleep(0.1)  # the rewritten file is in place
        time.sleep(1.2)  # appendfsync everysec: the commit is on disk
        admin.close()
        server.kill9()
        server.start()
        started = time.monotonic()
        try:
            with state.message(phone, "wamid.2") as msg:
                assert msg.conversation.stage == OFFER
        except UserBusy:
            pytest.fail("the lease came back with the restart")
        assert time.monotonic() - started < 0.5
        container.close()


def test_an_effect_in_doubt_is_in_doubt_for_the_asyncio_service_too(redis_url: str) -> None:
    import asyncio

    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(TOKEN_KEY,))
    )
    state = container.async_state_service()
    phone = _phone()
    calls: list[int] = []

    async def credex() -> dict[str, str]:
        calls.append(1)
        raise TimeoutError("no answer")

    async def scenario() -> list[str]:
        seen = []
        for message_id in ("wamid.1", "wamid.2"):
            async with state.message(phone, message_id) as msg:
                try:
                    await msg.effect("create_credex", credex, key="offer-1")
                except (TimeoutError, EffectInDoubt) as error:
                    seen.append(type(error).__name__)
        await state.reset(phone)
        await container.aclose()
        return seen

    assert asyncio.run(scenario()) == ["TimeoutError", "EffectInDoubt"]
    assert calls == [1]
