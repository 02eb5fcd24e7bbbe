"""A full server under ``noeviction``: every write is refused before it writes anything, the
caller gets StateUnavailable saying the server is full, and memory stays at maxmemory.

Redis skips its memory check for the rest of a script once the script has written; a script
whose first command writes (save.lua used to start with ZREMRANGEBYSCORE) therefore ran whole
on a full server. The scripts declare themselves with a ``#!lua`` shebang, so Redis 7 refuses
any script that may write before it runs, while the server is over maxmemory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fakes import TOKEN_KEY
from redis_servers import RedisProcess

from vimbiso_state.adapters.redis.connection import close
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import StateUnavailable
from vimbiso_state.services.state_service import StateService

MEMBER = {"memberID": "m-full", "firstname": "Tendai", "lastname": "Moyo", "memberTier": 3}
ACCOUNTS = [
    {"accountID": f"acc-{n}", "accountName": f"Account {n}", "accountHandle": f"tendai_{n}"}
    for n in range(3)
]
HEADROOM = 400_000  # bytes of maxmemory above what the empty server uses
USERS = 2000


@pytest.fixture
def full_server(redis_server_bin: str) -> Iterator[tuple[RedisProcess, redis.Redis]]:
    with RedisProcess(
        extra_args=("--maxmemory-policy", "noeviction", "--appendonly", "no"),
        executable=redis_server_bin,
    ) as server:
        admin = server.client()
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", used + HEADROOM)
        yield server, admin
        admin.close()


def _state(server: RedisProcess) -> tuple[Container, StateService]:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=server.url, token_keys=(TOKEN_KEY,))
    )
    return container, container.state_service()


def test_writes_are_refused_whole_and_memory_stays_at_maxmemory(
    full_server: tuple[RedisProcess, redis.Redis],
) -> None:
    server, admin = full_server
    container, state = _state(server)
    maxmemory = int(admin.config_get("maxmemory")["maxmemory"])
    written: list[str] = []
    refusals: list[str] = []
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
    # Each accepted write may take the server a few KB past maxmemory, never further.
    assert int(admin.info("memory")["used_memory"]) <= maxmemory + 64 * 1024

    # Nothing half-written: a user has all of its conversation or none of it.
    for n in range(USERS):
        digits = f"2637790{n:05d}"
        parts = admin.exists(f"user:{{{digits}}}:state", f"session:{{{digits}}}:data")
        assert parts in (0, 2), digits
    assert sum(1 for _ in admin.scan_iter("user:*")) == len(written)

    # Every kind of write is refused cleanly: a message, a token, a one-call write.
    with pytest.raises(StateUnavailable, match="Redis is full"):
        state.save_token(written[0], "jwt")
    with pytest.raises(StateUnavailable, match="Redis is full"):
        state.navigate(written[0], "handle_action_offer_credex")
    with pytest.raises(StateUnavailable, match="Redis is full"), state.message(
        written[0], "wamid.full", "1"
    ):
        pytest.fail("a message began on a full server")
    # What was stored is still there, and reads still work.
    assert state.token(written[0]) is None
    assert admin.exists(f"user:{{{written[0][1:]}}}:state") == 1

    # Memory freed: writes go through again.
    admin.config_set("maxmemory", 0)
    assert state.navigate(written[0], "handle_action_offer_credex").stage == (
        "handle_action_offer_credex"
    )
    close(container.redis_client())


def _fill(admin: redis.Redis) -> None:
    """Write filler until the server refuses, then set maxmemory below what it uses: it stays
    over maxmemory whatever small allocations come and go."""
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + HEADROOM)
    for n in range(10_000):
        try:
            admin.set(f"filler:{n}", b"x" * 10_000)
        except redis.exceptions.OutOfMemoryError:
            admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 50_000)
            return
    pytest.fail("the server never filled up")


def test_a_message_refused_on_a_full_server_frees_its_user_and_a_reset_runs(
    full_server: tuple[RedisProcess, redis.Redis],
) -> None:
    """A commit refused by a full server stored nothing: the message frees its user at once
    (a release only deletes, and is allowed on a full server) instead of leaving the user's
    next messages to wait out lease_ttl. A reset, which only deletes, frees memory."""
    server, admin = full_server
    container, state = _state(server)
    held, reset = "+263779200001", "+263779200002"
    admin.config_set("maxmemory", 0)  # room for the users and the first scripts
    for phone in (held, reset):
        state.set_profile(phone, MEMBER, ACCOUNTS)
    full = pytest.raises(StateUnavailable, match="Redis is full")
    with full, state.message(held, "wamid.1") as msg:
        msg.conversation.context["kept"] = False
        _fill(admin)
    assert admin.exists("lease:{263779200001}") == 0

    state.reset(reset)
    assert admin.exists("user:{263779200002}:state", "session:{263779200002}:data") == 0
    admin.config_set("maxmemory", 0)
    with state.message(held, "wamid.1") as again:  # WhatsApp's redelivery, with room again
        assert not again.duplicate and "kept" not in again.conversation.context
    close(container.redis_client())
