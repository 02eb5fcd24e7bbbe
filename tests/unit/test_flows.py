"""The flows driven without I/O, as h11 is tested: each request a flow yields is answered (or
failed) by the test, so every path of begin, commit, effects and waits is reached with no
backend, no thread and no clock but a fake one."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fakes import DIGITS, PHONE, T0, FakeClock

from vimbiso_state.adapters.token_cipher import FernetTokenCipher
from vimbiso_state.domain.conversation import Conversation, Notice
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.errors import (
    CalledInsideOwnMessage,
    ConcurrencyConflict,
    LeaseLost,
    StateUnavailable,
    UserBusy,
)
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    EffectRecord,
    EffectStatus,
    Holder,
    StoredConversation,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services.flows import (
    Begin,
    Commit,
    EffectStart,
    Flows,
    Forget,
    Load,
    Noticed,
    Release,
)

NUMBER = PhoneNumber(DIGITS)
FENCE = 1_741_944_413_589_793


class Elapsed:
    """Real time as the flows measure a wait, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _flows(elapsed: Elapsed | None = None) -> Flows:
    cipher = FernetTokenCipher([Fernet.generate_key().decode()])
    return Flows(FakeClock(T0), Timeouts(), cipher, elapsed=elapsed or Elapsed())


def _stored(**context: Any) -> StoredConversation:
    conversation = Conversation.new(DIGITS, T0)
    conversation.context.update(context)
    return StoredConversation(conversation.critical, conversation.session, None, version=7)


def _begun(stored: StoredConversation | None = None, **fields: Any) -> Begun:
    return Begun(stored or _stored(), fence=FENCE, **fields)


Flow = Generator[Any, Any, Any]


def _next(flow: Flow, answer: object = None) -> Any:
    return flow.send(answer)


def _finish(flow: Flow, answer: object = None) -> Any:
    with pytest.raises(StopIteration) as ended:
        flow.send(answer)
    return ended.value.value


# One-call writes: a unit of work each
def test_a_write_holds_the_user_changes_once_and_commits_against_what_it_read() -> None:
    calls: list[Conversation] = []
    flow = _flows().update(PHONE, calls.append)
    begin = _next(flow)
    assert isinstance(begin, Begin) and begin.message_id is None and begin.wait == timedelta(0)
    commit = _next(flow, _begun())
    assert isinstance(commit, Commit)
    assert commit.holder == Holder(begin.lease, FENCE, 0)
    assert commit.write is not None and commit.token is None and commit.message_id is None
    conversation = _finish(flow, WriteResult(WriteStatus.APPLIED, FENCE))
    assert len(calls) == 1 and conversation.version == FENCE


def test_an_exception_in_the_change_stores_nothing_and_frees_the_user() -> None:
    def change(conversation: Conversation) -> None:
        raise KeyError("the bot's own bug")

    flow = _flows().update(PHONE, change)
    lease = _next(flow).lease
    assert _next(flow, _begun()) == Release(NUMBER, lease)
    with pytest.raises(KeyError):
        flow.send(None)


def test_a_lost_hold_stores_nothing_and_the_change_does_not_run_again() -> None:
    calls: list[Conversation] = []
    flow = _flows().update(PHONE, calls.append)
    _next(flow)
    _next(flow, _begun())
    with pytest.raises(ConcurrencyConflict, match="reset"):
        flow.send(WriteResult(WriteStatus.LEASE_LOST, 0))
    assert len(calls) == 1


def test_a_busy_user_is_waited_for_then_given_up_on_after_lease_wait() -> None:
    elapsed = Elapsed()
    flow = _flows(elapsed).navigate(PHONE, "handle_action_offer_credex")
    _next(flow)
    wait = _next(flow, Begun(None, busy_for=timedelta(seconds=2)))
    assert isinstance(wait, Begin) and wait.wait == timedelta(seconds=2, milliseconds=50)
    elapsed.now = 4.0  # one second of patience left: the next wait is no longer than that
    wait = _next(flow, Begun(None, busy_for=timedelta(seconds=30)))
    assert wait.wait == timedelta(seconds=1)
    elapsed.now = 5.0
    with pytest.raises(UserBusy, match="non-2xx"):
        flow.send(Begun(None, busy_for=timedelta(seconds=30)))


def test_a_write_from_the_holders_own_block_fails_at_once_instead_of_waiting() -> None:
    flows = _flows()
    held = flows.hold(NUMBER)
    flow = flows.update(PHONE, lambda c: None)
    _next(flow)
    with pytest.raises(CalledInsideOwnMessage):
        flow.send(Begun(None, busy_for=timedelta(seconds=30)))
    flows.let_go(held)


@pytest.mark.parametrize("step", ["begin", "commit"])
def test_a_failed_step_gives_the_user_back_before_the_error_goes_on(step: str) -> None:
    flow = _flows().update(PHONE, lambda c: None)
    lease = _next(flow).lease
    if step == "commit":
        _next(flow, _begun())
    assert flow.throw(StateUnavailable("Redis went away")) == Release(NUMBER, lease)
    with pytest.raises(StateUnavailable):
        flow.send(None)


def test_a_failed_give_back_does_not_hide_the_error_that_caused_it() -> None:
    flow = _flows().update(PHONE, lambda c: None)
    _next(flow)
    flow.throw(StateUnavailable("first"))
    with pytest.raises(StateUnavailable, match="first"):
        flow.throw(StateUnavailable("second"))


def test_handle_once_runs_nothing_for_a_duplicate() -> None:
    calls: list[Conversation] = []
    flow = _flows().handle_once(PHONE, "wamid.1", calls.append)
    assert _next(flow).message_id == "wamid.1"
    assert _next(flow, Begun(None, duplicate=True)) == Noticed(NUMBER, duplicate=True)
    assert _finish(flow) is None and calls == []


def test_handle_once_records_its_message_id_with_the_commit() -> None:
    flow = _flows().handle_once(PHONE, "wamid.1", lambda c: None)
    _next(flow)
    assert _next(flow, _begun()).message_id == "wamid.1"


def test_start_writes_nothing_when_nothing_expired() -> None:
    flow = _flows().start(PHONE, None)
    assert isinstance(_next(flow), Load)
    assert _finish(flow, _stored()).stage == "handle_action_menu"


def test_start_stores_an_expiry_and_reports_it_once_committed() -> None:
    old = Conversation.new(DIGITS, T0 - Timeouts().session * 2)
    stored = StoredConversation(old.critical, old.session, None, version=3)
    flow = _flows().start(PHONE, None)
    _next(flow)
    assert isinstance(_next(flow, stored), Begin)
    assert isinstance(_next(flow, _begun(stored)), Commit)
    event = _next(flow, WriteResult(WriteStatus.APPLIED, FENCE))
    assert event == Noticed(NUMBER, (Notice.SESSION_EXPIRED,))
    assert Notice.SESSION_EXPIRED in _finish(flow).notices


def test_lost_guards_drop_the_navigation_and_the_form_but_keep_the_profile() -> None:
    stored = _stored()._replace(guards_lost=True)
    stored.session.stage = "ConfirmOfferSecured"
    flow = _flows().start(PHONE, None)
    _next(flow)
    _next(flow, stored)
    commit = _next(flow, _begun(stored))
    assert commit.write.session.stage == "handle_action_menu" and commit.write.form is None
    assert commit.write.critical is stored.critical
    assert _next(flow, WriteResult(WriteStatus.APPLIED, FENCE)) == Noticed(
        NUMBER, (Notice.STATE_LOST,)
    )


# Reset
def test_a_plain_reset_is_one_request() -> None:
    flow = _flows().reset(PHONE, keep_context=[])
    assert _next(flow) == Forget(NUMBER)
    _finish(flow)


def test_a_reset_keeping_context_is_one_unit_of_work_with_the_token_revoked() -> None:
    flow = _flows().reset(PHONE, keep_context=["mock_testing"])
    assert isinstance(_next(flow), Begin)
    commit = _next(flow, _begun(_stored(mock_testing=True, other=1)))
    assert commit.write.session.context == {"mock_testing": True}
    assert commit.write.critical.member is None and commit.write.form is None
    assert commit.token is not None and commit.token.sealed is None
    _finish(flow, WriteResult(WriteStatus.APPLIED, FENCE))


def test_a_reset_with_nothing_to_keep_forgets_once_the_user_is_held() -> None:
    flow = _flows().reset(PHONE, keep_context=["mock_testing"])
    _next(flow)
    assert _next(flow, _begun(_stored(other=1))) == Forget(NUMBER)
    _finish(flow)


# Tokens
def test_save_token_commits_the_sealed_token_and_no_conversation() -> None:
    flow = _flows().save_token(PHONE, "a-token")
    _next(flow)
    commit = _next(flow, _begun())
    assert commit.write is None and commit.token.sealed
    _finish(flow, WriteResult(WriteStatus.APPLIED, FENCE))


def test_revoke_token_says_whether_a_token_was_there() -> None:
    for token, there in ((b"sealed", True), (None, False)):
        flow = _flows().revoke_token(PHONE)
        _next(flow)
        commit = _next(flow, _begun(token=token))
        assert commit.token.sealed is None
        assert _finish(flow, WriteResult(WriteStatus.APPLIED, FENCE)) is there


# A message's steps
def test_a_message_commit_whose_lease_lapsed_raises_lease_lost() -> None:
    flows = _flows()
    stored = _stored()
    conversation = flows.open(NUMBER, stored, None)
    holder = Holder("lease", FENCE)
    flow = flows.commit(NUMBER, holder, "wamid.1", conversation, stored, None)
    assert _next(flow).message_id == "wamid.1"
    with pytest.raises(LeaseLost):
        flow.send(WriteResult(WriteStatus.LEASE_LOST, 0))


def test_a_greeting_restarts_a_message_at_the_menu() -> None:
    stored = _stored()
    stored.session.stage = "AmountInput"
    conversation = _flows().open(NUMBER, stored, "Mhoro!")
    assert conversation.stage == "handle_action_menu" and Notice.RESTARTED in conversation.notices


def test_an_effect_starts_with_the_holder_and_its_intent() -> None:
    holder = Holder("lease", FENCE, 5)
    effect = Effect.of("create_offer", "form-1")
    flow = _flows().effect_start(NUMBER, holder, effect)
    request = _next(flow)
    assert isinstance(request, EffectStart) and (request.holder, request.effect) == (
        holder,
        effect,
    )
    assert _finish(flow, EffectRecord(EffectStatus.IN_DOUBT)).status is EffectStatus.IN_DOUBT
