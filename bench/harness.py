"""What every benchmark here starts from: a server (a private one by default), the library's
container on it, stock redis-py clients, and blocks of fresh users that are cleaned up after.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # the wire log and the private redis-server

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from redis_servers import RedisProcess  # noqa: E402

from vimbiso_state.domain.phone import PhoneNumber  # noqa: E402
from vimbiso_state.services.config import Settings  # noqa: E402
from vimbiso_state.services.container import Container  # noqa: E402

BLOCK_SIZE = 10_000  # users per run: one block of numbers sharing their first eight digits


@dataclass
class Users:
    """Fresh phone numbers from one random block, so that a run on a shared server meets
    nobody else's keys and can find all of its own with one pattern."""

    base: int = field(default_factory=lambda: 263_770_000_000 + random.randrange(0, 900) * 10_000)
    taken: int = 0

    def take(self, count: int) -> list[str]:
        if self.taken + count > BLOCK_SIZE:
            raise RuntimeError("the benchmark ran out of numbers in its block")
        start, self.taken = self.taken, self.taken + count
        return [f"+{self.base + i}" for i in range(start, start + count)]

    @property
    def patterns(self) -> list[str]:
        """Every key of every user of this block: the phone is each key's hash tag; the raw
        baseline's keys end with it; aiogram's keys hold it as chat and user id."""
        user = str(self.base)[:8] + "????"
        return [f"*{{{user}}}*", f"bench:raw:{user}", f"fsm:{user}:{user}:*"]


@dataclass
class Bench:
    """One server and what the benchmarks use on it."""

    url: str
    private: bool  # a server of our own: CONFIG RESETSTAT, BGREWRITEAOF, reading its AOF
    token_key: str
    users: Users
    probe: redis.Redis  # stock redis-py, for the raw baseline and the server's statistics

    def container(self, **settings: Any) -> Container:
        """A container of the library as a bot builds one (a new one per process);
        ``settings`` override the defaults (a server under valgrind needs longer timeouts)."""
        return Container.from_settings(
            Settings(backend="redis", redis_url=self.url, token_keys=(self.token_key,), **settings)
        )

    def raw_client(self) -> redis.Redis:
        """Stock redis-py, as a bot would create it: the baseline's client."""
        return redis.Redis.from_url(self.url)

    def raw_async_client(self) -> redis.asyncio.Redis:
        """The same on redis.asyncio (bind it to one event loop)."""
        return redis.asyncio.Redis.from_url(self.url)

    def header(self) -> str:
        server = self.probe.info("server")
        where = "a private redis-server (seed flags)" if self.private else self.url
        return (
            f"redis {server['redis_version']} on {where}; redis-py {redis.__version__} "
            f"(parser: {'hiredis' if _hiredis() else 'Python'}); Python "
            f"{sys.version.split()[0]}; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} (other work on the machine moves the wall times)"
        )


def digits(phone: str) -> str:
    return PhoneNumber.parse(phone).digits


def _hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def bench(redis_url: str | None) -> Iterator[Bench]:
    """A private redis-server with the seed's flags (stopped at the end), or the server at
    ``redis_url``, whose keys of this run's users are deleted at the end."""
    with ExitStack() as stack:
        if redis_url is None:
            url, private = stack.enter_context(RedisProcess()).url, True
        else:
            url, private = redis_url, False
        probe = redis.Redis.from_url(url)
        stack.callback(probe.close)
        users = Users()
        if not private:
            for pattern in users.patterns:
                stack.callback(_delete_matching, probe, pattern)
            stack.callback(_forget_expiry_entries, probe, users)
        yield Bench(url, private, Fernet.generate_key().decode(), users, probe)


def _delete_matching(client: redis.Redis, pattern: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 500:
            client.delete(*batch)
            batch.clear()
    if batch:
        client.delete(*batch)


def _forget_expiry_entries(client: redis.Redis, users: Users) -> None:
    """The run's users' entries in the library's expiry index, whose partitions other users
    of a shared server share (``expiry:{...}``: ``s:<digits>`` and ``f:<digits>``)."""
    member = "?:" + str(users.base)[:8] + "????"
    for key in client.scan_iter(match="expiry:*", count=1000):
        if client.type(key) != b"zset":
            continue
        ours = [m for m, _ in client.zscan_iter(key, match=member, count=1000)]
        for chunk in range(0, len(ours), 500):
            client.zrem(key, *ours[chunk : chunk + 500])
