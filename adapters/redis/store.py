"""Redis repositories with a blocking client: they send what round_trips.py asks, one retried
round trip at a time, and return its answers. One round trip for each step of a unit of work
(begin, each effect's start and finish, commit)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from vimbiso_state.adapters.redis.connection import RedisClient, RetryPolicy, is_wrong_type
from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.round_trips import (
    ConversationRoundTrips,
    OnNode,
    Pipeline,
    ReadToken,
    RoundTrips,
    Script,
    Servers,
    queue,
    read_token,
)
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.expirations import Expiration
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    ConversationWrite,
    EffectRecord,
    Holder,
    StoredConversation,
    TokenChange,
    WriteResult,
)
from vimbiso_state.domain.timeouts import Timeouts

T = TypeVar("T")


class Sender:
    """Sends requests with a blocking client, each retried as a whole by ``retry``; waits
    block on ``waits`` (a client whose socket timeout outlasts the longest wait). The
    repositories below are senders: each method runs its round trips."""

    def __init__(self, client: RedisClient, retry: RetryPolicy, waits: RedisClient) -> None:
        self._client = client
        self._retry = retry
        self._waits = waits
        self._send: dict[type[Any], Callable[[Any], Any]] = {
            Script: self._script,
            Pipeline: self._pipeline,
            Servers: self._servers,
            OnNode: self._on_node,
            ReadToken: self._read_token,
        }

    def run(self, round_trips: RoundTrips[T]) -> T:
        """Send each request ``round_trips`` yields, and return what it returns."""
        reply = None
        while True:
            try:
                request = round_trips.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            reply = self._retry.call(partial(self._send[type(request)], request))

    def _script(self, call: Script) -> Any:
        if call.wait is not None:
            self._waits.blpop([call.wait.key], timeout=call.wait.seconds)
        return call.script(self._client, call.keys, call.args)

    def _pipeline(self, pipeline: Pipeline) -> list[Any]:
        client = self._client if pipeline.wait is None else self._waits

        def send(by_source: bool) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            queue(pipe, pipeline, by_source)
            replies: list[Any] = pipe.execute()
            return replies

        try:
            return send(by_source=False)
        except NoScriptError:
            return send(by_source=True)

    def _servers(self, servers: Servers) -> list[tuple[Any, list[str]]]:
        groups = servers.groups
        return groups.in_turn(self._client) if servers.in_turn else groups.groups(self._client)

    def _on_node(self, call: OnNode) -> Any:
        try:
            return call.script.on_node(self._client, call.node, call.keys, call.args)
        except Exception:
            call.failed()
            raise

    def _read_token(self, read: ReadToken) -> Any:
        try:
            return self._client.get(read.key)
        except ResponseError as exc:
            if not is_wrong_type(exc):
                raise
            self._client.delete(read.key)  # not a token: damaged, the member logs in again
            return None


class RedisConversationRepository(Sender):
    """Conversations under ``user:{phone}:state``, ``session:{phone}:data`` and
    ``form:{phone}:data``, with the handled ids, the effect records and the lease of the unit
    of work that holds the user (see layout.py).

    ``waits`` is the client a unit of work blocks on while it waits for the user's previous
    one (its socket timeout must outlast ``wait_slice``, the longest single block); the
    container gives it one with a long enough timeout. Without it, the main client waits in
    short slices.
    """

    def __init__(
        self,
        client: RedisClient,
        timeouts: Timeouts,
        retry: RetryPolicy | None = None,
        keys: KeySchema | None = None,
        waits: RedisClient | None = None,
        wait_slice: float = 0.2,
    ) -> None:
        super().__init__(client, retry or RetryPolicy(), waits or client)
        cluster = isinstance(client, RedisCluster)
        self._keys = keys or KeySchema(cluster=cluster)
        self._trips = ConversationRoundTrips(timeouts, self._keys, not cluster, wait_slice)

    def load(self, phone: PhoneNumber, now: datetime) -> StoredConversation:
        return self.run(self._trips.load(phone, now))

    def peek(self, phone: PhoneNumber) -> StoredConversation:
        """Read every part without sliding a deadline or writing (operators' tools)."""
        return self.run(self._trips.peek(phone))

    # The unit of work
    def begin(
        self, phone: PhoneNumber, now: datetime, message_id: str | None, lease: str, wait: timedelta
    ) -> Begun:
        return self.run(self._trips.begin(phone, now, message_id, lease, wait))

    def commit(
        self,
        phone: PhoneNumber,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> WriteResult:
        return self.run(self._trips.commit(phone, holder, message_id, write, token, now))

    def release(self, phone: PhoneNumber, lease: str) -> None:
        self.run(self._trips.release(phone, lease))

    def forget(self, phone: PhoneNumber) -> None:
        self.run(self._trips.forget(phone))

    def effect_start(
        self, phone: PhoneNumber, holder: Holder, effect: Effect, now: datetime
    ) -> EffectRecord:
        return self.run(self._trips.effect_start(phone, holder, effect, now))

    def effect_finish(
        self, phone: PhoneNumber, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> EffectRecord:
        return self.run(self._trips.effect_finish(phone, effect, result, now, settle))

    # Expiry events
    def claim(self, now: datetime, limit: int, lease: timedelta) -> list[tuple[Claim, Expiration]]:
        return self.run(self._trips.claim(now, limit, lease))

    def due(self, now: datetime, limit: int) -> list[Expiration]:
        """Up to ``limit`` due events, taken by nobody: nothing is written (operators'
        tools)."""
        return self.run(self._trips.due(now, limit))

    def expiry_counts(self, now: datetime) -> tuple[int, int]:
        """Index entries not yet due, and due ones nobody took yet (operators' tools)."""
        return self.run(self._trips.expiry_counts(now))

    def ack(self, claims: Sequence[Claim], now: datetime) -> None:
        self.run(self._trips.ack(claims, now))


class RedisTokenRepository(Sender):
    """Sealed tokens under ``token:{phone}`` (written by commits, with the token TTL)."""

    def __init__(
        self, client: RedisClient, retry: RetryPolicy | None = None, keys: KeySchema | None = None
    ) -> None:
        super().__init__(client, retry or RetryPolicy(), client)
        self._keys = keys or KeySchema()

    def get(self, phone: PhoneNumber) -> bytes | None:
        return self.run(read_token(self._keys, phone))
