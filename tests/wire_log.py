"""What a block of code sends to Redis, one entry per round trip: for tests that assert round
trips and for the benchmark that reports them.

Every packed command redis-py sends is one round trip (a pipeline is one send); the recorder
wraps Connection.send_packed_command, so a health-check PING or a SCRIPT LOAD counts too. The
Redis Cluster clients, sync and asyncio, send through their nodes' connections of the same
classes, so a cluster's round trips are counted as well (tests/cluster/test_round_trips_cluster.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio.connection
from redis.connection import AbstractConnection

_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")
_Async = redis.asyncio.connection.AbstractConnection


@contextmanager
def every_send(record: Callable[[Any], None]) -> Iterator[None]:
    """Calls ``record`` with each packed command redis-py sends, sync or asyncio, before
    sending it."""
    original = AbstractConnection.send_packed_command
    original_async = _Async.send_packed_command

    def recorded(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        record(command)
        original(self, command, check_health)

    async def recorded_async(self: Any, command: Any, check_health: bool = True) -> None:
        record(command)
        await original_async(self, command, check_health)

    AbstractConnection.send_packed_command = recorded  # type: ignore[method-assign]
    _Async.send_packed_command = recorded_async  # type: ignore[method-assign]
    try:
        yield
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        _Async.send_packed_command = original_async  # type: ignore[method-assign]


@contextmanager
def wire() -> Iterator[list[str]]:
    """Collects one entry per round trip, sync or asyncio: the (first) command name of each
    send."""
    sent: list[str] = []

    def name(command: Any) -> str:
        first = command if isinstance(command, bytes | str) else command[0]
        match = _COMMAND.match(first.encode() if isinstance(first, str) else bytes(first))
        return match[1].decode().upper() if match else "?"

    with every_send(lambda command: sent.append(name(command))):
        yield sent
