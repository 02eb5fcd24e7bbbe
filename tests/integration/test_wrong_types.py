"""Keys of the library's schema holding another Redis type (written by hand, or by another
program sharing the server): the user's calls must not fail with WRONGTYPE for ever. The part
reads as damaged (the user is told, ``state_lost``) and the next write replaces it.

Each test runs on one Redis and on a cluster, with the sync and with the asyncio service: each
pair has its own scripts' callers and its own handling of a reply that is an error."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fakes import TOKEN_KEY
from redis.cluster import RedisCluster
from service_kinds import KINDS, service_of

from vimbiso_state.domain.conversation import Notice
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("redis_url" if backend == "redis" else "cluster_url"))


@pytest.fixture(params=KINDS)
def service(backend: str, url: str, request: pytest.FixtureRequest) -> Iterator[StateService]:
    container = Container.from_settings(
        Settings(backend=backend, redis_url=url, token_keys=(TOKEN_KEY,))
    )
    with service_of(container, request.param) as service:
        yield service


@pytest.fixture
def admin(backend: str, url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(url) if backend == "redis" else RedisCluster.from_url(url)
    yield client
    client.close()


@pytest.fixture
def digits() -> str:
    return f"2637{random.randrange(10**7, 10**8)}"


Spoil = Callable[[Any, str], object]
SPOILED: dict[str, Spoil] = {
    "user key a list": lambda r, key: r.rpush(key, "x"),
    "session key a hash": lambda r, key: r.hset(key, "x", "y"),
    "form key a set": lambda r, key: r.sadd(key, "x"),
    "handled ids a string": lambda r, key: r.set(key, "x"),
    "lease a list": lambda r, key: r.rpush(key, "x"),
}
KEYS = {
    "user key a list": "user:{%s}:state",
    "session key a hash": "session:{%s}:data",
    "form key a set": "form:{%s}:data",
    "handled ids a string": "handled:{%s}",
    "lease a list": "lease:{%s}",
}


@pytest.mark.parametrize("spoiled", list(SPOILED))
def test_a_key_of_the_wrong_type_is_treated_as_damaged_then_replaced(
    service: StateService, admin: Any, digits: str, spoiled: str
) -> None:
    service.set_profile(digits, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    service.navigate(digits, OFFER)
    service.form_start(digits, "offer", ["amount"])
    key = KEYS[spoiled] % digits
    admin.delete(key)
    SPOILED[spoiled](admin, key)

    conv = service.start(digits)
    if spoiled in ("user key a list", "form key a set"):
        assert Notice.STATE_LOST in conv.notices
    elif spoiled == "session key a hash":
        # It is read as damaged; the unit of work that stores the outcome reads the parts with
        # MGET, which answers nil for a key of another type: a session gone, as expired.
        assert conv.notices[0] in (Notice.STATE_LOST, Notice.SESSION_EXPIRED)
        assert conv.stage == "handle_action_menu"
    # Every kind of call works again, and the spoiled key is replaced.
    service.update(digits, lambda c: c.context.update(after=True))
    assert service.handle_once(digits, "wamid.after", lambda c: None) is not None
    with service.message(digits, "wamid.message") as msg:
        msg.conversation.navigate(OFFER)
    assert service.start(digits).stage == OFFER
    kind = admin.type(key).decode()
    assert kind in {"none", "string", "zset"}, kind
    assert service.handle_once(digits, "wamid.after", lambda c: None) is None


def test_a_token_key_of_the_wrong_type_reads_as_no_token_and_is_replaced(
    service: StateService, admin: Any, digits: str
) -> None:
    key = f"token:{{{digits}}}"
    admin.rpush(key, "not a token")
    assert service.token(digits) is None
    service.save_token(digits, "jwt")
    assert service.token(digits) == "jwt"
