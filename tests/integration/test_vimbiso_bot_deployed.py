"""The VimbisoPay bot on the library as gunicorn runs it: sync workers forked from one process,
killed when they outlive the timeout or die for any reason, one Redis for all of them.

The bot is tests/vimbiso_bot_double.py with docs/adopting.md's change (tests/adopting_guide.py);
Credex's offers and the replies posted to WhatsApp are kept in the test's Redis, so that what a
killed worker did is seen by the test.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from adopting_guide import bot_on_the_library
from cryptography.fernet import Fernet
from redis_servers import RedisProcess
from vimbiso_bot_double import (
    OFFERED,
    WORKING,
    BotApp,
    FakeCredex,
    GraphApi,
    RedisRecords,
    button,
    chosen,
    rows_of,
    text,
)

from vimbiso_state.services.config import ENVIRONMENT, Settings
from vimbiso_state.services.container import Container

CHECKING = "⏳ Checking with Credex what became of your offer of 25.00 USD to Bob Store"
NOT_YET = "Credex does not show it yet. Send me any message in a minute to hear."
WAS_SENT = "✅ It was sent: it is among your pending offers."
OFFER = {
    "receiverAccountID": "acc-bob",
    "issuerAccountID": "acc-1",
    "Denomination": "USD",
    "InitialAmount": "25.0",
}


@pytest.fixture
def bot(private_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[BotApp]:
    """The bot in the process gunicorn forks its workers from (short leases: a killed
    worker's member is free again within a second)."""
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    settings = Settings(
        backend="redis",
        redis_url=private_redis.url,
        token_keys=(Fernet.generate_key().decode(),),
        lease_ttl=1,
        lease_wait=3,
    )
    container = Container.from_settings(settings)
    credex = FakeCredex(container.clock().now, RedisRecords(private_redis.url, "offers"))
    graph = GraphApi(RedisRecords(private_redis.url, "sent"))
    with bot_on_the_library(container.state_service(), container, credex, graph) as app:
        yield app
    container.close()


@pytest.fixture
def wa_id() -> str:
    return f"2637{random.randrange(10**7, 10**8)}"


def _say(bot: BotApp, wa_id: str, message_id: str, message: dict[str, Any]) -> list[str]:
    before = len(bot.bodies(wa_id))
    assert bot.deliver(wa_id, message_id, message).status == 200
    return bot.bodies(wa_id)[before:]


def _to_confirmation(bot: BotApp, wa_id: str) -> None:
    _say(bot, wa_id, "wamid.1", text("hi"))
    _say(bot, wa_id, "wamid.2", chosen("offer_secured"))
    _say(bot, wa_id, "wamid.3", text("USD 25"))
    _say(bot, wa_id, "wamid.4", text("bob_store"))


def _worker(run: Callable[[], object], setup: Callable[[], None] = lambda: None) -> int:
    """A forked sync worker running ``run``; its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the worker, reported by how it ended
        code = 3
        try:
            setup()
            run()
            code = 0
        except SystemExit as stopped:
            code = stopped.code if isinstance(stopped.code, int) else 1
        finally:
            os._exit(code)
    return pid


def _ended(pid: int) -> tuple[str, int]:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


def test_a_worker_killed_inside_createcredex_makes_one_offer_and_the_member_is_told(
    bot: BotApp, wa_id: str
) -> None:
    _to_confirmation(bot, wa_id)

    def killed_when_credex_has_made_it(moment: str) -> None:
        if moment == "after":  # the offer exists; its answer never reaches the worker
            os.kill(os.getpid(), signal.SIGKILL)

    bot.credex.on_create = killed_when_credex_has_made_it
    worker = _worker(lambda: bot.deliver(wa_id, "wamid.5", button("confirm")))
    assert _ended(worker) == ("signal", signal.SIGKILL)
    bot.credex.on_create = None
    assert len(bot.credex.offers.all()) == 1
    assert bot.bodies(wa_id)[-1] == WORKING  # sent before the call, then nothing

    # WhatsApp delivers the message again (to the other worker): it waits for the dead
    # worker's lease, then learns the offer's fate from the member's pending offers.
    told = _say(bot, wa_id, "wamid.5", button("confirm"))
    assert told[:2] == [CHECKING, WAS_SENT]
    assert rows_of(bot.sent_to(wa_id)[-1]) == ["offer_secured", "cancel_offer"]
    _say(bot, wa_id, "wamid.6", button("confirm"))  # and the member taps again
    assert len(bot.credex.offers.all()) == 1
    assert OFFERED not in bot.bodies(wa_id)


def _gunicorn_abort() -> None:
    """What gunicorn's sync worker does on SIGABRT, sent when a request outlives --timeout."""
    signal.signal(signal.SIGABRT, lambda signum, frame: sys.exit(1))


def test_a_createcredex_slower_than_the_worker_timeout_makes_one_offer_and_is_told(
    bot: BotApp, wa_id: str, tmp_path: Any
) -> None:
    _to_confirmation(bot, wa_id)
    calling = tmp_path / "calling"

    def slow_credex(moment: str) -> None:
        if moment == "before":
            calling.touch()
            time.sleep(60)  # Credex takes its time: gunicorn's 30 s come first

    bot.credex.on_create = slow_credex
    worker = _worker(lambda: bot.deliver(wa_id, "wamid.5", button("confirm")), _gunicorn_abort)
    deadline = time.monotonic() + 10
    while not calling.exists():
        assert time.monotonic() < deadline, "the worker never reached createCredex"
        time.sleep(0.01)
    os.kill(worker, signal.SIGABRT)  # the arbiter: this request has taken 30 s
    assert _ended(worker) == ("exit", 1)
    bot.credex.on_create = None
    assert bot.credex.offers.all() == []

    assert _say(bot, wa_id, "wamid.5", button("confirm")) == [CHECKING, NOT_YET]
    bot.credex.record(OFFER)  # Credex finishes the abandoned call
    told = _say(bot, wa_id, "wamid.6", text("did it go?"))
    assert told[:2] == [CHECKING, WAS_SENT]
    assert rows_of(bot.sent_to(wa_id)[-1]) == ["offer_secured", "cancel_offer"]
    assert len(bot.credex.offers.all()) == 1


def test_two_workers_handed_the_same_confirm_at_once_make_one_offer(
    bot: BotApp, wa_id: str, tmp_path: Any
) -> None:
    _to_confirmation(bot, wa_id)
    go = tmp_path / "go"

    def at_once() -> None:
        while not go.exists():
            time.sleep(0.001)
        assert bot.deliver(wa_id, "wamid.5", button("confirm")).status == 200

    workers = [_worker(at_once) for _ in range(2)]
    go.touch()
    assert [_ended(worker) for worker in workers] == [("exit", 0), ("exit", 0)]
    assert len(bot.credex.offers.all()) == 1
    assert bot.bodies(wa_id).count(OFFERED) == 1
