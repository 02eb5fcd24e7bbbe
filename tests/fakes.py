"""Test doubles that are not backends (the fake clock) and constants the unit tests share."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet


class FakeClock:
    """A clock that only moves when told to, so expiry is tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        # Near the real time by default: Redis-side scores and TTLs then stay meaningful.
        self._now = start or datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self._now += timedelta(seconds=seconds, **kwargs)
        return self._now


# A fixed instant (with microseconds) keeps every expiry test exact and repeatable.
T0 = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+263 77 123 4567"
DIGITS = "263771234567"
OTHER_PHONE = "+263 71 999 8888"
# A token key for containers on a shared store, which refuse to start without one.
TOKEN_KEY = Fernet.generate_key().decode()


def jwt(claims: dict[str, Any]) -> str:
    """A JWT with these claims (its signature is never checked: the library only reads exp)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@contextmanager
def _accepting(handle: Callable[[socket.socket, list[socket.socket]], None]) -> Iterator[str]:
    """Listens on a free local port and gives each connection, from one thread, to ``handle``
    with the list of sockets closed at the end (it holds the connection; ``handle`` may add).

    Yields the address as host:port (no scheme, so callers can build either URL kind).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection = listener.accept()[0]
            except TimeoutError:
                continue
            held.append(connection)
            handle(connection, held)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


@contextmanager
def hung_server() -> Iterator[str]:
    """Accepts connections and never answers: what a stalled or half-dead Redis looks like.
    Yields its address as host:port."""
    with _accepting(lambda connection, held: None) as address:
        yield address


@contextmanager
def stalls_once(target: str) -> Iterator[str]:
    """A front for the server at ``target`` (host:port) that stalls its first connection,
    accepted and never answered, as a node on an overloaded host can, and relays every later
    one to the server. Yields its own address as host:port."""
    host, port = target.rsplit(":", 1)
    stalled: list[socket.socket] = []

    def relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass  # the other direction closed both
        finally:
            for side in (source, sink):
                side.close()

    def handle(client: socket.socket, held: list[socket.socket]) -> None:
        if not stalled:
            stalled.append(client)
            return
        server = socket.create_connection((host, int(port)))
        held.append(server)
        for pair in ((client, server), (server, client)):
            threading.Thread(target=relay, args=pair, daemon=True).start()

    with _accepting(handle) as address:
        yield address


@contextmanager
def stops_reading(target: str, after: int = 65536) -> Iterator[str]:
    """A front for the server at ``target`` (host:port) that relays both ways until a client
    has sent ``after`` bytes, then stops reading from that client (a peer whose host froze):
    what the client writes next piles up in its own buffers. Yields its address as host:port.
    """
    host, port = target.rsplit(":", 1)

    def relay(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while (limit is None or sent < limit) and (chunk := source.recv(4096)):
                sink.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # closed at the end

    def handle(client: socket.socket, held: list[socket.socket]) -> None:
        server = socket.create_connection((host, int(port)))
        held.append(server)
        threading.Thread(target=relay, args=(client, server, after), daemon=True).start()
        threading.Thread(target=relay, args=(server, client, None), daemon=True).start()

    with _accepting(handle) as address:
        yield address
