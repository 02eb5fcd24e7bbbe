"""One user, one hash slot: every key of a user carries the tag {phone}, so the scripts, the
duplicate check and reset run on one node, and users spread over every master."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError

from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

MEMBER = {"memberID": "m-1", "firstname": "Rudo", "lastname": "Dube"}
ACCOUNTS = [{"accountID": "a-1", "accountName": "Rudo Personal", "accountHandle": "rudo"}]
USERS = 300


def _keys(phone: str) -> list[str]:
    return KeySchema().for_user(PhoneNumber.parse(phone)).all


def _client(container: Container) -> RedisCluster:
    client = container.redis_client()
    assert isinstance(client, RedisCluster)
    return client


def _errors(client: RedisCluster, kind: str) -> int:
    """How many times the cluster's nodes have answered error `kind` since they started."""
    total = 0
    for node in client.get_nodes():
        assert node.redis_connection is not None
        stats = node.redis_connection.info("errorstats")
        total += int(stats.get(f"errorstat_{kind}", {}).get("count", 0))
    return total


def _lifecycle(state: StateService, phone: str) -> None:
    """Every operation of the public contract, ending with reset."""
    state.start(phone)
    state.set_profile(phone, MEMBER, ACCOUNTS)
    state.navigate(phone, "handle_action_offer_credex")
    state.form_start(phone, "offer_credex", ["amount", "recipient"])
    state.form_fill(phone, amount="USD 100")
    assert state.handle_once(phone, "wamid.1", lambda c: c.context.update(seen=1)) is not None
    assert state.handle_once(phone, "wamid.1", lambda c: c.context.update(seen=2)) is None
    state.save_token(phone, "jwt-" + phone)
    assert state.token(phone) == "jwt-" + phone
    state.back(phone)
    state.update(phone, lambda c: c.context.update(done=True))
    state.reset(phone)


def test_every_key_of_a_user_maps_to_one_slot(
    cluster_container_on_url: Container,
    cluster_state: StateService,
    new_phones: Callable[[int], list[str]],
) -> None:
    client = _client(cluster_container_on_url)
    for phone in new_phones(20):
        keys = _keys(phone)
        # Asked of the server (CLUSTER KEYSLOT), not computed: the braces really are the tag.
        slots = {client.cluster_keyslot(key) for key in keys}
        assert slots == {key_slot(PhoneNumber.parse(phone).digits.encode())}, keys

        # And the library writes every one of them, all on the node that owns that slot.
        state = cluster_state
        state.start(phone)
        state.form_start(phone, "offer_credex", ["amount"])
        state.handle_once(phone, "wamid.1", lambda c: None)
        state.save_token(phone, "jwt")
        with state.message(phone, "wamid.2") as msg:
            msg.effect("create_credex", lambda: {"credexID": "c-1"})
        # (The lease keys exist only while a message is handled.)
        stored = [key for key in keys if not key.startswith("lease:")]
        assert [client.exists(key) for key in stored] == [1] * len(stored)
        assert len({client.get_node_from_key(key).name for key in keys}) == 1


def test_users_on_every_master_never_cross_slot(
    cluster_container_on_url: Container,
    cluster_state: StateService,
    new_phones: Callable[[int], list[str]],
) -> None:
    client = _client(cluster_container_on_url)
    phones = new_phones(USERS)
    owners = Counter(client.get_node_from_key(_keys(p)[0]).name for p in phones)
    masters = {node.name for node in client.get_primaries()}
    assert set(owners) == masters, f"{USERS} users did not reach every master: {owners}"
    crossslot_before = _errors(client, "CROSSSLOT")

    with ThreadPoolExecutor(8) as pool:
        # list() re-raises the first failure: a CROSSSLOT (or a client-side slot check) would
        # surface as StateError or StateUnavailable here.
        list(pool.map(lambda p: _lifecycle(cluster_state, p), phones))

    assert _errors(client, "CROSSSLOT") == crossslot_before
    # reset deleted every key of every user but the handled ids (one script per user: all its
    # keys share the slot).
    leftovers = [key for phone in phones for key in _keys(phone) if client.exists(key)]
    assert [key for key in leftovers if not key.startswith("handled:")] == []


def test_keys_of_two_users_would_cross_slots(
    cluster_container_on_url: Container, new_phones: Callable[[int], list[str]]
) -> None:
    """The control: the CROSSSLOT the tests above look for is real, so their silence counts."""
    client = _client(cluster_container_on_url)
    first, second = new_phones(2)
    while client.keyslot(_keys(first)[0]) == client.keyslot(_keys(second)[0]):
        second = new_phones(1)[0]
    node = client.get_node_from_key(_keys(first)[0]).redis_connection
    assert node is not None
    with pytest.raises(ClusterCrossSlotError):  # the server's -CROSSSLOT reply
        node.delete(_keys(first)[0], _keys(second)[0])


def test_scripts_forgotten_by_the_masters_are_run_again(
    cluster_container_on_url: Container,
    cluster_state: StateService,
    new_phones: Callable[[int], list[str]],
) -> None:
    """NOSCRIPT (a restarted node, SCRIPT FLUSH, a replica promoted by a failover) costs one
    EVAL on the node that owns the keys, whichever master it is."""
    client = _client(cluster_container_on_url)
    phones = new_phones(30)
    for phone in phones:
        cluster_state.update(phone, lambda c: c.context.update(n=1))
    client.script_flush()  # every master forgets both scripts
    for phone in phones:
        conv = cluster_state.update(phone, lambda c: c.context.update(n=c.context["n"] + 1))
        assert conv.context["n"] == 2
        assert cluster_state.start(phone).context["n"] == 2
