"""Faults on a real Redis: a stalled server under a short socket timeout.

``DEBUG SLEEP`` freezes the server's event loop. A command sent during the stall waits in the
server's socket buffer and runs when the stall ends, after the client has timed out: its reply
is lost, so the client cannot know whether the write happened. The adapter's RetryPolicy
(adapters/redis/connection.py; redis-py itself is built to retry nothing) sends the same
command again on a fresh connection: a begin sent again finds the user held by its own lease
and keeps its fence; a commit sent again finds its id recorded with its fence and answers
``applied`` without applying it again. The tests prove that a timeout really happened and that
the change was applied exactly once.

Each stall test runs its own redis-server with DEBUG enabled (redis 7 refuses DEBUG by
default): stalling the shared server would disturb every other test.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_servers import RedisProcess

from vimbiso_state.adapters.redis.scripts import COMMIT
from vimbiso_state.adapters.redis.store import RedisConversationRepository
from vimbiso_state.domain.conversation import Conversation, Notice
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import StateUnavailable
from vimbiso_state.services.state_service import StateService

KEY = Fernet.generate_key().decode()
PHONE = "+263771234567"
SOCKET_TIMEOUT = 0.2
STALL = 0.6  # three socket timeouts: the first attempt and at least one retry time out


class Stall:
    """Freezes the server for STALL seconds from a connection of its own."""

    def __init__(self, server: RedisProcess) -> None:
        # Connected before the test measures anything, so they do not count as reconnects.
        self.admin = server.client(single_connection_client=True)
        self._sleeper = server.client(single_connection_client=True, socket_timeout=5)
        # No retries on the probe: its first timeout is the signal that the server is asleep.
        self._probe = server.client(
            single_connection_client=True, socket_timeout=0.05, retry=Retry(NoBackoff(), 0)
        )
        for client in (self.admin, self._sleeper, self._probe):
            client.ping()
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Return once the server is asleep, so the next command is certain to be queued."""
        self._thread = threading.Thread(
            target=self._sleeper.execute_command, args=("DEBUG", "SLEEP", STALL), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                self._probe.ping()
            except redis.TimeoutError:
                return  # the server stopped answering: it is sleeping
            time.sleep(0.005)
        raise AssertionError("DEBUG SLEEP never stalled the server")

    def wait(self) -> None:
        assert self._thread is not None
        self._thread.join(5)

    def connections(self) -> int:
        return int(self.admin.info("stats")["total_connections_received"])

    def calls(self, *commands: str) -> int:
        stats = self.admin.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands)

    def close(self) -> None:
        for client in (self.admin, self._sleeper, self._probe):
            client.close()


def _service(server: RedisProcess, retries: int) -> tuple[Container, StateService]:
    container = Container.from_settings(
        Settings(
            backend="redis",
            redis_url=server.url,
            token_keys=(KEY,),
            socket_timeout=SOCKET_TIMEOUT,
            redis_retries=retries,
        )
    )
    return container, container.state_service()


def _count(conv: Conversation) -> None:
    # A function of the conversation it is given: running it again on fresh state is correct.
    conv.context["count"] = conv.context.get("count", 0) + 1


class _Hooked:
    """The repository's client, with a hook before its first commit (the commit script) or
    its first begin (the pipeline that holds the user and reads), and the raw reply of each
    such call recorded."""

    def __init__(self, client: Any, step: str, before_first_call: Callable[[], None]) -> None:
        self._client = client
        self._step = step
        self._hooks = [before_first_call]
        self.replies: list[Any] = []

    def _first(self, call: Callable[..., Any], *args: Any) -> Any:
        while self._hooks:
            self._hooks.pop()()
        reply = call(*args)
        self.replies.append(reply)
        return reply

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if self._step == "commit" and name == "evalsha":
            return lambda *args: self._first(call, *args) if args[0] == COMMIT.sha else call(*args)
        if self._step == "begin" and name == "pipeline":

            def pipeline(*args: Any, **kwargs: Any) -> Any:
                pipe = call(*args, **kwargs)
                execute = pipe.execute
                pipe.execute = lambda *a: self._first(execute, *a)
                return pipe

            return pipeline
        return call


def _instrument(
    repo: RedisConversationRepository, step: str, before_first_call: Callable[[], None]
) -> list[Any]:
    """Wrap the repository's begin or commit: run a hook before its first call and record
    each raw reply."""
    hooked = _Hooked(repo._client, step, before_first_call)
    repo._client = hooked  # type: ignore[assignment]
    return hooked.replies


@pytest.mark.parametrize("stalled", ["commit", "begin"])
def test_a_write_retried_after_a_timeout_is_applied_exactly_once(
    debug_redis: RedisProcess, stalled: str
) -> None:
    container, state = _service(debug_redis, retries=3)
    writer, writer_state = _service(debug_redis, retries=3)
    stall = Stall(debug_redis)
    try:
        writer_state.update(PHONE, _count)  # the server knows every script before the fault
        before = writer_state.start(PHONE)
        assert before.context["count"] == 1
        state.start("+263771234568")  # the service under test has connected
        replies = _instrument(container.conversations(), stalled, stall.begin)
        connections, commands = stall.connections(), stall.calls("mget", "evalsha")

        started = time.monotonic()
        calls: list[int] = []
        conv = state.update(PHONE, lambda c: calls.append(1) or _count(c))
        elapsed = time.monotonic() - started
        stall.wait()
        reconnects = stall.connections() - connections
        commands_run = stall.calls("mget", "evalsha") - commands

        # The change ran once and was applied once, under the version its commit wrote...
        assert calls == [1] and conv.context["count"] == 2
        after = state.start(PHONE)
        assert after.context["count"] == 2 and after.version == conv.version > before.version

        # ...after a real fault: the call outlasted the socket timeout, the client dropped its
        # connection and reconnected, and the server ran the begin (script and read) and the
        # commit of an undisturbed update, plus the stalled step sent again.
        assert elapsed > SOCKET_TIMEOUT
        assert reconnects >= 1
        assert commands_run == (4 if stalled == "commit" else 5)
        if stalled == "commit":
            # The first commit ran when the stall ended and its reply was lost; the only
            # reply the client saw is the retry's, answered from the id recorded with its
            # fence.
            assert [status for status, *_ in replies] == [b"applied"]
    finally:
        stall.close()
        container.redis_client().close()
        writer.redis_client().close()


def test_a_timed_out_write_that_is_not_retried_raises_state_unavailable(
    debug_redis: RedisProcess,
) -> None:
    """Without transport retries the outcome is unknown: StateUnavailable, never silence.

    The queued write still runs when the stall ends, so the caller must not assume "failed";
    it may have been applied (exactly once, never twice, never half).
    """
    container, state = _service(debug_redis, retries=0)
    stall = Stall(debug_redis)
    try:
        state.update(PHONE, _count)
        before = state.start(PHONE)
        replies = _instrument(container.conversations(), "commit", stall.begin)

        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            state.update(PHONE, _count)
        elapsed = time.monotonic() - started
        stall.wait()

        # Gave up after one timeout and one try to free the user, not after the stall.
        assert SOCKET_TIMEOUT < elapsed < STALL + SOCKET_TIMEOUT
        assert replies == []  # no reply ever reached the caller
        after = state.start(PHONE)
        assert after.context["count"] - before.context["count"] in (0, 1)
    finally:
        stall.close()
        container.redis_client().close()


def test_handle_once_makes_the_callers_retry_after_state_unavailable_safe(
    debug_redis: RedisProcess,
) -> None:
    """A retry inside one call is recognised by the commit's fence; across calls the
    WhatsApp message id does the job.

    A bot that retries a message after StateUnavailable (or WhatsApp redelivering it) goes
    through handle_once, which applies it if the lost write did not happen and returns None
    if it did: exactly once either way.
    """
    container, state = _service(debug_redis, retries=0)
    stall = Stall(debug_redis)
    try:
        state.update(PHONE, _count)
        before = state.start(PHONE)
        _instrument(container.conversations(), "commit", stall.begin)

        with pytest.raises(StateUnavailable):
            state.handle_once(PHONE, "wamid.stalled", _count)
        stall.wait()
        retried = state.handle_once(PHONE, "wamid.stalled", _count)

        after = state.start(PHONE)
        assert after.context["count"] == before.context["count"] + 1
        # Applied once either way: by the queued commit (the retry is then a duplicate) or,
        # if the try to free the user ran first, by the retry.
        assert retried is None or retried.context["count"] == after.context["count"]
    finally:
        stall.close()
        container.redis_client().close()


def test_a_form_evicted_before_its_deadline_is_reported_lost(redis_url: str) -> None:
    """allkeys-lru may evict the form key alone; the critical data remembers the form's
    deadline, so the user is told it was lost instead of finding it silently gone."""
    digits = str(263_760_000_000 + random.randrange(10_000_000))
    container = Container.from_settings(
        Settings(backend="redis", redis_url=redis_url, token_keys=(KEY,))
    )
    state = container.state_service()
    client = redis.Redis.from_url(redis_url)
    try:
        state.form_start(digits, "offer", required=["amount"])
        state.form_fill(digits, amount="100")
        assert client.delete(f"form:{{{digits}}}:data") == 1  # what an eviction does
        conv = state.start(digits)
        assert conv.form is None
        assert conv.notices == [Notice.STATE_LOST]
        assert state.start(digits).notices == []  # told once
    finally:
        state.reset(digits)
        client.close()
        container.redis_client().close()
