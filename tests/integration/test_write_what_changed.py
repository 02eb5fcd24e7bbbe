"""A message rewrites only what it changed: the profile, most of a user's bytes, stays out of
the append-only file (and the replication stream) unless the message changed it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fakes import TOKEN_KEY
from redis_servers import RedisProcess

from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

PHONE = "+263771234567"
MEMBER = {"memberID": "m-1", "memberTier": 3, "firstname": "Tendai", "lastname": "Moyo"}
ACCOUNTS = [
    {
        "accountID": f"acc-{n}",
        "accountName": f"Tendai Moyo {n}",
        "accountHandle": f"tendai_{n}",
        "accountType": "PERSONAL",
        "defaultDenom": "USD",
        "isOwnedAccount": True,
        "balanceData": {
            "securedNetBalancesByDenom": ["150.00 USD", "3000.00 ZWG"],
            "netCredexAssetsInDefaultDenom": "150.00 USD",
        },
        "pendingInData": [],
        "pendingOutData": [],
    }
    for n in range(3)
]


@pytest.fixture
def server(redis_server_bin: str) -> Iterator[tuple[RedisProcess, StateService]]:
    # fsync always: the append is written before the reply. Under everysec a busy disk may
    # postpone it by up to two seconds, and a write would then seem to append nothing.
    with RedisProcess(("--appendfsync", "always"), executable=redis_server_bin) as process:
        container = Container.from_settings(
            Settings(backend="redis", redis_url=process.url, token_keys=(TOKEN_KEY,))
        )
        yield process, container.state_service()
        container.close()


def _aof_growth(client: redis.Redis, act: object) -> int:
    before = int(client.info("persistence")["aof_current_size"])
    act()  # type: ignore[operator]
    return int(client.info("persistence")["aof_current_size"]) - before


def test_a_message_that_leaves_the_profile_alone_does_not_rewrite_it(
    server: tuple[RedisProcess, StateService],
) -> None:
    process, state = server
    client = process.client()
    state.set_profile(PHONE, MEMBER, ACCOUNTS)
    state.form_start(PHONE, "offer", ["amount", "recipient"])
    profile_bytes = len(client.get("user:{263771234567}:state") or b"")
    form_bytes = len(client.get("form:{263771234567}:data") or b"")
    assert profile_bytes > 1000

    def message(n: int) -> None:
        with state.message(PHONE, f"wamid.aof.{n}", "1") as msg:
            msg.conversation.navigate("handle_action_offer_credex")
            msg.conversation.context["n"] = n

    message(0)  # the first write after set_profile may still store the pinned document
    grown = _aof_growth(client, lambda: message(1))
    session_bytes = len(client.get("session:{263771234567}:data") or b"")
    # The session is rewritten; the profile and the form are not (their header and TTL move).
    assert grown < session_bytes + profile_bytes // 2, (grown, session_bytes, profile_bytes)
    assert grown < session_bytes + form_bytes + 600

    def change_profile() -> None:
        with state.message(PHONE, "wamid.aof.profile") as msg:
            msg.conversation.select_account("acc-2")

    # Control: a message that changes the profile does write it.
    assert _aof_growth(client, change_profile) > profile_bytes
    stored = state.start(PHONE)
    assert stored.current_account is not None and stored.current_account.account_id == "acc-2"
    assert stored.context == {"n": 1} and stored.form is not None
    client.close()
