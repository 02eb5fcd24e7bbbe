"""The two steps of ``reset(phone, keep_context=...)``, driven without I/O (as h11 is tested):
scripted answers to each request the flow yields."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import DIGITS, PHONE, T0, FakeClock

from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.errors import StateUnavailable
from vimbiso_state.domain.ports import StoredConversation, WriteResult, WriteStatus
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services.flows import Flows, Forget, Load, Save


def _stored(**context: Any) -> StoredConversation:
    conversation = Conversation.new(DIGITS, T0)
    conversation.context.update(context)
    return StoredConversation(conversation.critical, conversation.session, None, version=7)


def _flows() -> Flows:
    return Flows(FakeClock(T0), Timeouts(), cipher=None, max_retries=2)


def test_the_kept_keys_are_read_before_the_forgetting_and_written_after_it() -> None:
    flow = _flows().reset(PHONE, keep_context=["mock_testing"])
    load = flow.send(None)
    assert isinstance(load, Load) and not load.touch
    assert isinstance(flow.send(_stored(mock_testing=True, other=1)), Forget)
    reload = flow.send(None)  # the fresh conversation, loaded by the one write path
    assert isinstance(reload, Load)
    save = flow.send(StoredConversation(None, None, None, version=8))
    assert isinstance(save, Save)
    assert save.write.session.context == {"mock_testing": True}
    assert save.write.expected_version == 8
    with pytest.raises(StopIteration):
        flow.send(WriteResult(WriteStatus.APPLIED, 9))


def test_a_failure_between_the_two_steps_loses_only_the_kept_keys() -> None:
    flow = _flows().reset(PHONE, keep_context=["mock_testing"])
    flow.send(None)
    assert isinstance(flow.send(_stored(mock_testing=True)), Forget)  # the user is forgotten
    flow.send(None)
    flow.send(StoredConversation(None, None, None, version=8))
    with pytest.raises(StateUnavailable):
        flow.throw(StateUnavailable("the server went away"))


def test_nothing_to_keep_is_one_request_as_before() -> None:
    flow = _flows().reset(PHONE, keep_context=[])
    assert isinstance(flow.send(None), Forget)
    with pytest.raises(StopIteration):
        flow.send(None)
