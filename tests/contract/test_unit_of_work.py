"""The unit of work every write goes through, on every backend: the lease is checked before
anything is written, a commit sent again is applied once and answered "applied" only to the
holder that committed it, and the handled ids never drop a commit's own id."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from fakes import FakeClock

from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import ConversationWrite, Holder, WriteStatus
from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import LeaseLost
from vimbiso_state.services.state_service import StateService


def _write(phone: PhoneNumber, clock: FakeClock, **context: object) -> ConversationWrite:
    conversation = Conversation.new(phone.digits, clock.now())
    conversation.context.update(context)
    return ConversationWrite(conversation.critical, conversation.session, None)


def test_a_commit_sent_again_is_applied_once_and_only_for_its_own_holder(
    container: Container, phone: str, clock: FakeClock
) -> None:
    repository = container.conversations()
    number = PhoneNumber.parse(phone)
    now = clock.now()
    first = repository.begin(number, now, "wamid.1", "lease-a", timedelta(0))
    holder = Holder("lease-a", first.fence, first.effects)
    applied = repository.commit(number, holder, "wamid.1", _write(number, clock, n=1), None, now)
    assert applied.status is WriteStatus.APPLIED and applied.version == first.fence
    # The reply was lost and the same commit is sent again: "applied", nothing written twice.
    again = repository.commit(number, holder, "wamid.1", _write(number, clock, n=2), None, now)
    assert again == applied
    assert container.state_service().start(phone).context == {"n": 1}

    # A holder whose lease was taken (a reset) while a redelivery of the same message id
    # committed is told so, even though that id is recorded as committed.
    stale = repository.begin(number, clock.advance(0.001), "wamid.2", "lease-b", timedelta(0))
    repository.forget(number)
    now = clock.advance(0.001)
    redelivery = repository.begin(number, now, "wamid.2", "lease-c", timedelta(0))
    assert redelivery.fence != stale.fence
    holder_c = Holder("lease-c", redelivery.fence, redelivery.effects)
    write = _write(number, clock, n=3)
    assert repository.commit(number, holder_c, "wamid.2", write, None, now).status is (
        WriteStatus.APPLIED
    )
    holder_b = Holder("lease-b", stale.fence, stale.effects)
    lost = repository.commit(number, holder_b, "wamid.2", _write(number, clock, n=4), None, now)
    assert lost.status is WriteStatus.LEASE_LOST
    assert container.state_service().start(phone).context == {"n": 3}


def test_a_user_with_200_handled_ids_never_takes_a_first_delivery_for_a_duplicate(
    state: StateService, container: Container, phone: str, clock: FakeClock
) -> None:
    for n in range(200):
        clock.advance(0.001)
        conv = state.handle_once(phone, f"wamid.{n}", lambda c, n=n: c.context.update(last=n))
        assert conv is not None, f"first delivery {n} taken for a duplicate"
        assert state.handle_once(phone, f"wamid.{n}", lambda c: c.context.update(last=-1)) is None
    # At the bound, a commit sent again still finds its own id: applied once.
    repository = container.conversations()
    number = PhoneNumber.parse(phone)
    begun = repository.begin(number, clock.now(), "wamid.last", "lease-z", timedelta(0))
    holder = Holder("lease-z", begun.fence, begun.effects)
    write = _write(number, clock)
    for _ in range(2):
        result = repository.commit(number, holder, "wamid.last", write, None, clock.now())
        assert result.status is WriteStatus.APPLIED
    assert state.handle_once(phone, "wamid.last", lambda c: None) is None
    # The newest MAX_HANDLED_IDS commits are remembered; the one just before them is let go.
    oldest_kept = 200 - MAX_HANDLED_IDS + 1
    assert state.handle_once(phone, f"wamid.{oldest_kept}", lambda c: None) is None
    assert state.handle_once(phone, f"wamid.{oldest_kept - 1}", lambda c: None) is not None


def test_a_delivery_that_outlived_its_lease_gets_lease_lost_and_undoes_nothing(
    state_with: Callable[..., StateService], phone: str, clock: FakeClock, backend: str
) -> None:
    """The first delivery's handler ran past lease_ttl; WhatsApp's redelivery committed, and a
    second message after it. The first leaves its block with LeaseLost, and the next write of
    the same process keeps every committed message (0.2 cached the first delivery's documents
    and let that write undo them)."""
    state = state_with(lease_ttl=0.3)

    def append(entry: str) -> Callable[[Conversation], None]:
        return lambda conv: conv.context.setdefault("entries", []).append(entry)

    with pytest.raises(LeaseLost), state.message(phone, "wamid.m1") as first:
        first.conversation.context.setdefault("entries", []).append("m1-first")
        clock.advance(1)  # the memory backend's lease runs on the fake clock
        if backend != "memory":
            time.sleep(0.5)  # Redis's on real time
        with state.message(phone, "wamid.m1") as redelivery:  # on another worker
            redelivery.conversation.context.setdefault("entries", []).append("m1-redelivery")
        with state.message(phone, "wamid.m2") as second:
            second.conversation.context.setdefault("entries", []).append("m2")
    state.update(phone, append("u"))
    assert state.start(phone).context["entries"] == ["m1-redelivery", "m2", "u"]
