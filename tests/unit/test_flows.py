"""The flows driven without I/O, as h11 is tested: each request a flow yields is answered (or
failed) by the test, so every path of begin, commit, effects, waits and expirations is reached
with no backend and no clock but a fake one.

One-call operations are driven request by request (``flow.send``); a message and a batch of
expirations, whose steps a driver carries out, run on a ``Script``: a store that answers each
call with the next scripted reply and records the requests it was sent, under both drivers
(the asyncio one behind the blocking facade of tests/service_kinds.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any, ClassVar, cast

import pytest
from cryptography.fernet import Fernet
from fakes import DIGITS, PHONE, T0, FakeClock, jwt
from service_kinds import KINDS, Blocking

from vimbiso_state.adapters.token_cipher import FernetTokenCipher
from vimbiso_state.domain.conversation import Conversation, Notice
from vimbiso_state.domain.effects import Effect, InDoubt
from vimbiso_state.domain.errors import (
    CalledInsideOwnMessage,
    ConcurrencyConflict,
    ConfigurationError,
    EffectInDoubt,
    InvalidInput,
    LeaseLost,
    NoActiveForm,
    StateUnavailable,
    UserBusy,
)
from vimbiso_state.domain.expirations import Expiration, ExpiryKind
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    EffectRecord,
    EffectStatus,
    Holder,
    StoredConversation,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.flows import (
    AckClaims,
    Begin,
    ClaimDue,
    Commit,
    EffectFinish,
    EffectStart,
    Flows,
    Forget,
    GetToken,
    Load,
    Noticed,
    Release,
)
from vimbiso_state.services.state_service import StateService

NUMBER = PhoneNumber(DIGITS)
FENCE = 1_741_944_413_589_793
APPLIED = WriteResult(WriteStatus.APPLIED, FENCE)
LOST = WriteResult(WriteStatus.LEASE_LOST, 0)
CIPHER = FernetTokenCipher([Fernet.generate_key().decode()])
TTL = Timeouts().token


class Elapsed:
    """Real time as the flows measure a wait, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _flows(elapsed: Elapsed | None = None, clock: FakeClock | None = None) -> Flows:
    return Flows(clock or FakeClock(T0), Timeouts(), CIPHER, elapsed=elapsed or Elapsed())


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


def _sealed(value: str, issued: datetime, expires: datetime) -> bytes:
    return CIPHER.seal(NUMBER, value, issued, expires)


class Script:
    """A store that answers each call with the next scripted reply (an exception is raised)
    and keeps the requests it was sent: a message or a batch driven by the real driver, with
    no backend."""

    REQUESTS: ClassVar[dict[str, Callable[..., Any]]] = {
        "load": Load,
        "begin": Begin,
        "commit": Commit,
        "release": Release,
        "forget": Forget,
        "effect_start": EffectStart,
        "effect_finish": EffectFinish,
        "get": GetToken,
        "claim": ClaimDue,
        "ack": AckClaims,
    }

    def __init__(self, *replies: object) -> None:
        self.replies = list(replies)
        self.requests: list[Any] = []

    def __getattr__(self, name: str) -> Callable[..., object]:
        if name not in self.REQUESTS:
            raise AttributeError(name)

        def answer(*args: object) -> object:
            self.requests.append(self.REQUESTS[name](*args))
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return answer

    def kinds(self) -> list[str]:
        return [type(request).__name__ for request in self.requests]


class Awaited:
    """A Script for the asyncio driver: the same replies, awaited."""

    def __init__(self, script: Script) -> None:
        self._script = script

    def __getattr__(self, name: str) -> Callable[..., Any]:
        answer = getattr(self._script, name)

        async def awaited(*args: object) -> object:
            return answer(*args)

        return awaited


Serve = Callable[[Script], StateService]


@pytest.fixture(params=KINDS)
def serve(request: pytest.FixtureRequest) -> Serve:
    """A service on a Script, of each kind: the StateService, or the AsyncStateService
    behind the blocking facade (tests/service_kinds.py)."""
    if request.param == "sync":
        return lambda script: StateService(
            script, script, FakeClock(T0), Timeouts(), CIPHER, messages=script, expiry=script
        )
    loop = request.getfixturevalue("loop_thread")

    def build(script: Script) -> StateService:
        store = Awaited(script)
        service = AsyncStateService(
            store, store, FakeClock(T0), Timeouts(), CIPHER, messages=store, expiry=store
        )
        return cast(StateService, Blocking(service, loop))

    return build


# Begin: hold the user, or wait for the holder, or find the id handled
def test_a_write_holds_the_user_changes_once_and_commits_against_what_it_read() -> None:
    calls: list[Conversation] = []
    clock = FakeClock(T0 + timedelta(minutes=1))
    flow = _flows(clock=clock).update(PHONE, calls.append)
    begin = _next(flow)
    assert isinstance(begin, Begin) and begin.message_id is None and begin.wait == timedelta(0)
    commit = _next(flow, _begun(effects=3))
    assert isinstance(commit, Commit)
    # The fence the store gave this holder: only its own retry is told "applied".
    assert commit.holder == Holder(begin.lease, FENCE, 3)
    assert commit.write is not None and commit.token is None and commit.message_id is None
    seen = (commit.write.session.last_seen_at, commit.write.critical.last_seen_at)
    assert seen == (clock.now(), clock.now())
    conversation = _finish(flow, APPLIED)
    assert len(calls) == 1 and conversation.version == FENCE


def test_every_unit_of_work_holds_the_user_under_a_lease_of_its_own() -> None:
    leases = {_next(_flows().update(PHONE, lambda c: None)).lease for _ in range(3)}
    assert len(leases) == 3


def test_a_busy_user_is_waited_for_then_given_up_on_after_lease_wait() -> None:
    elapsed, clock = Elapsed(), FakeClock(T0)
    flow = _flows(elapsed, clock).navigate(PHONE, "handle_action_offer_credex")
    _next(flow)
    clock.advance(2)
    wait = _next(flow, Begun(None, busy_for=timedelta(seconds=2)))
    # Asked again at the store's time of the new attempt, waiting for the holder to end.
    assert isinstance(wait, Begin) and wait.now == clock.now()
    assert wait.wait == timedelta(seconds=2, milliseconds=50)
    elapsed.now = 4.0  # one second of patience left: the next wait is no longer than that
    wait = _next(flow, Begun(None, busy_for=timedelta(seconds=30)))
    assert wait.wait == timedelta(seconds=1)
    elapsed.now = 5.0
    with pytest.raises(UserBusy, match="non-2xx"):
        flow.send(Begun(None, busy_for=timedelta(seconds=30)))


def test_a_wait_that_ends_with_the_user_free_goes_on_with_the_write() -> None:
    flow = _flows().update(PHONE, lambda c: c.context.update(done=True))
    _next(flow)
    _next(flow, Begun(None, busy_for=timedelta(seconds=1)))
    commit = _next(flow, _begun())
    assert commit.write.session.context == {"done": True}


def test_a_write_from_the_holders_own_block_fails_at_once_instead_of_waiting() -> None:
    flows = _flows()
    held = flows.hold(NUMBER)
    flow = flows.update(PHONE, lambda c: None)
    _next(flow)
    with pytest.raises(CalledInsideOwnMessage):
        flow.send(Begun(None, busy_for=timedelta(seconds=30)))
    flows.let_go(held)
    flow = flows.update(PHONE, lambda c: None)  # let go: it waits like any other caller
    _next(flow)
    assert isinstance(_next(flow, Begun(None, busy_for=timedelta(seconds=1))), Begin)


@pytest.mark.parametrize("step", ["begin", "commit"])
def test_a_failed_step_gives_the_user_back_before_the_error_goes_on(step: str) -> None:
    flow = _flows().update(PHONE, lambda c: None)
    lease = _next(flow).lease
    if step == "commit":
        _next(flow, _begun())
    assert flow.throw(StateUnavailable("Redis went away")) == Release(NUMBER, lease)
    with pytest.raises(StateUnavailable):
        flow.send(None)


def test_a_failed_give_back_does_not_hide_the_error_that_caused_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = _flows().update(PHONE, lambda c: None)
    _next(flow)
    flow.throw(StateUnavailable("first"))
    with pytest.raises(StateUnavailable, match="first"):
        flow.throw(StateUnavailable("second"))
    assert "could not free the user" in caplog.text


def test_handle_once_runs_nothing_for_a_duplicate() -> None:
    calls: list[Conversation] = []
    flow = _flows().handle_once(PHONE, "wamid.1", calls.append)
    assert _next(flow).message_id == "wamid.1"
    assert _next(flow, Begun(None, duplicate=True)) == Noticed(NUMBER, duplicate=True)
    assert _finish(flow) is None and calls == []


def test_handle_once_records_its_id_and_reopens_the_customer_service_window() -> None:
    flow = _flows().handle_once(PHONE, "wamid.1", lambda c: None)
    _next(flow)
    commit = _next(flow, _begun())
    assert commit.message_id == "wamid.1" and commit.write.critical.inbound_at == T0
    flow = _flows().update(PHONE, lambda c: None)  # the bot's own write: not the member
    _next(flow)
    assert _next(flow, _begun()).write.critical.inbound_at is None


# What a unit of work finds: expiries, lost state, a greeting
def test_start_writes_nothing_when_nothing_expired() -> None:
    flow = _flows().start(PHONE, None)
    assert isinstance(_next(flow), Load)
    assert _finish(flow, _stored()).stage == "handle_action_menu"


def test_a_first_contact_is_stored_and_its_welcome_is_not_counted_as_an_expiry() -> None:
    flow = _flows().start(PHONE, None)
    _next(flow)
    assert isinstance(_next(flow, StoredConversation(None, None, None, 0)), Begin)
    commit = _next(flow, _begun(StoredConversation(None, None, None, 0)))
    assert commit.write.session.stage == "handle_action_menu"
    assert _finish(flow, APPLIED).notices == [Notice.WELCOME]


def _expired_session() -> StoredConversation:
    old = Conversation.new(DIGITS, T0 - Timeouts().session * 2)
    return StoredConversation(old.critical, old.session, None, version=3)


def _evicted_critical() -> StoredConversation:
    return StoredConversation(None, Conversation.new(DIGITS, T0).session, None, version=3)


@pytest.mark.parametrize(
    ("stored", "notice"),
    [(_expired_session, Notice.SESSION_EXPIRED), (_evicted_critical, Notice.STATE_LOST)],
)
def test_start_stores_an_expiry_or_a_loss_and_reports_it_once_committed(
    stored: Callable[[], StoredConversation], notice: Notice
) -> None:
    flow = _flows().start(PHONE, None)
    _next(flow)
    assert isinstance(_next(flow, stored()), Begin)
    assert isinstance(_next(flow, _begun(stored())), Commit)
    assert _next(flow, APPLIED) == Noticed(NUMBER, (notice,))
    assert notice in _finish(flow).notices


def test_an_expiry_whose_commit_failed_is_not_reported() -> None:
    flow = _flows().start(PHONE, None)
    _next(flow)
    _next(flow, _expired_session())
    _next(flow, _begun(_expired_session()))
    assert isinstance(flow.throw(StateUnavailable("no answer")), Release)
    with pytest.raises(StateUnavailable):
        flow.send(None)


def test_lost_guards_drop_the_navigation_and_the_form_but_keep_the_profile() -> None:
    stored = _stored()._replace(guards_lost=True)
    stored.session.stage = "ConfirmOfferSecured"
    flow = _flows().start(PHONE, None)
    _next(flow)
    _next(flow, stored)
    commit = _next(flow, _begun(stored))
    assert commit.write.session.stage == "handle_action_menu" and commit.write.form is None
    assert commit.write.critical is stored.critical
    assert _next(flow, APPLIED) == Noticed(NUMBER, (Notice.STATE_LOST,))


def test_a_greeting_restarts_at_the_menu_in_one_unit_of_work() -> None:
    stored = _stored()
    stored.session.stage = "AmountInput"
    flow = _flows().start(PHONE, "Mhoro!")
    assert isinstance(_next(flow), Begin)
    commit = _next(flow, _begun(stored))
    assert commit.write.session.stage == "handle_action_menu"
    assert Notice.RESTARTED in _finish(flow, APPLIED).notices  # not an expiry: not counted


def test_a_greeting_restarts_a_message_at_the_menu() -> None:
    stored = _stored()
    stored.session.stage = "AmountInput"
    conversation = _flows().open(NUMBER, stored, "Mhoro!")
    assert conversation.stage == "handle_action_menu" and Notice.RESTARTED in conversation.notices


# Commit: what is written, and a hold that was lost
def test_fields_of_a_newer_release_go_back_only_with_the_parts_they_came_in() -> None:
    stored = _expired_session()._replace(
        extras={"critical": {"tier": b"5"}, "session": {"step": b"1"}},
        documents={"critical": b"{}", "session": b"{}"},
    )
    flow = _flows().update(PHONE, lambda c: None)
    _next(flow)
    commit = _next(flow, _begun(stored))
    # The expired session was replaced by the rules: what it carried goes with it.
    assert commit.write.extras == {"critical": {"tier": b"5"}}
    assert commit.write.documents == {"critical": b"{}"}


def test_the_critical_data_records_the_deadline_of_the_form_written_with_it() -> None:
    clock = FakeClock(T0)
    flows = _flows(clock=clock)
    flow = flows.form_start(PHONE, "offer", ["amount"])
    _next(flow)
    commit = _next(flow, _begun())
    assert commit.write.critical.form_expires_at == commit.write.form.expires_at
    assert _finish(flow, APPLIED).name == "offer"
    clock.advance(minutes=4)  # an answer slides the form's deadline
    flow = flows.form_fill(PHONE, {"amount": "5"})
    _next(flow)
    commit = _next(flow, _begun(_stored()._replace(form=commit.write.form)))
    assert commit.write.form.expires_at == clock.now() + Timeouts().form
    assert commit.write.critical.form_expires_at == commit.write.form.expires_at
    flow = flows.form_complete(PHONE)
    _next(flow)
    commit = _next(flow, _begun(_stored()._replace(form=commit.write.form)))
    assert commit.write.form is None and commit.write.critical.form_expires_at is None
    assert _finish(flow, APPLIED) == {"amount": "5", "denomination": "USD"}


def test_a_form_call_without_a_form_gives_the_user_back_and_stores_nothing() -> None:
    flow = _flows().form_complete(PHONE)
    lease = _next(flow).lease
    assert _next(flow, _begun()) == Release(NUMBER, lease)
    with pytest.raises(NoActiveForm):
        flow.send(None)


def test_an_exception_in_the_change_stores_nothing_and_frees_the_user() -> None:
    def change(conversation: Conversation) -> None:
        raise KeyError("the bot's own bug")

    flow = _flows().update(PHONE, change)
    lease = _next(flow).lease
    assert _next(flow, _begun()) == Release(NUMBER, lease)
    with pytest.raises(KeyError):
        flow.send(None)


def _reset_keeping(flows: Flows) -> Flow:
    return flows.reset(PHONE, keep_context=["mock_testing"])


ONE_CALL_WRITES = {
    "update": lambda flows: flows.update(PHONE, lambda c: None),
    "handle_once": lambda flows: flows.handle_once(PHONE, "wamid.1", lambda c: None),
    "restart": lambda flows: flows.restart(PHONE),
    "back": lambda flows: flows.back(PHONE),
    "set_profile": lambda flows: flows.set_profile(PHONE, {"memberID": "m-1"}, []),
    "save_token": lambda flows: flows.save_token(PHONE, "a-token"),
    "revoke_token": lambda flows: flows.revoke_token(PHONE),
    "reset_keeping_context": _reset_keeping,
}


@pytest.mark.parametrize("write", sorted(ONE_CALL_WRITES))
def test_a_one_call_write_whose_hold_was_taken_stores_nothing_and_says_so(write: str) -> None:
    """A reset (or a failover) took the user during the write: ConcurrencyConflict, and the
    change does not run again."""
    flow = ONE_CALL_WRITES[write](_flows())
    _next(flow)
    assert isinstance(_next(flow, _begun(_stored(mock_testing=True))), Commit)
    with pytest.raises(ConcurrencyConflict, match="reset"):
        flow.send(LOST)


def test_a_message_commit_whose_lease_lapsed_raises_lease_lost() -> None:
    flows = _flows()
    stored = _stored()
    conversation = flows.open(NUMBER, stored, None)
    flow = flows.commit(NUMBER, Holder("lease", FENCE), "wamid.1", conversation, stored, None)
    assert _next(flow).message_id == "wamid.1"
    with pytest.raises(LeaseLost, match="nothing it changed was stored"):
        flow.send(LOST)


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
    _finish(flow, APPLIED)


def _expired_with_context() -> StoredConversation:
    stored = _expired_session()
    stored.session.context["mock_testing"] = True
    return stored


@pytest.mark.parametrize(
    "stored", [lambda: _stored(other=1), _expired_with_context], ids=["not-there", "expired"]
)
def test_a_reset_with_nothing_to_keep_forgets_once_the_user_is_held(
    stored: Callable[[], StoredConversation],
) -> None:
    flow = _reset_keeping(_flows())
    _next(flow)
    assert _next(flow, _begun(stored())) == Forget(NUMBER)
    _finish(flow)


def test_a_reset_keeping_context_whose_forget_fails_frees_the_user() -> None:
    flow = _reset_keeping(_flows())
    lease = _next(flow).lease
    _next(flow, _begun(_stored(other=1)))
    assert flow.throw(StateUnavailable("no answer")) == Release(NUMBER, lease)
    with pytest.raises(StateUnavailable):
        flow.send(None)


# Tokens: read, sealed, slid
def test_token_reads_the_sealed_token_and_reports_one_past_its_deadline() -> None:
    flows = _flows()
    flow = flows.token(PHONE)
    assert _next(flow) == GetToken(NUMBER)
    assert _finish(flow, None) is None
    flow = flows.token(PHONE)
    _next(flow)
    assert _finish(flow, _sealed("live", T0, T0 + TTL)) == "live"
    flow = flows.token(PHONE)
    _next(flow)
    assert _next(flow, _sealed("old", T0 - TTL, T0)) == Noticed(NUMBER, token_expired=True)
    assert _finish(flow) is None


def test_save_token_commits_the_sealed_token_and_no_conversation() -> None:
    flow = _flows().save_token(PHONE, "a-token")
    _next(flow)
    commit = _next(flow, _begun())
    assert commit.write is None and commit.token.ttl == TTL
    assert CIPHER.open(NUMBER, commit.token.sealed).value == "a-token"
    _finish(flow, APPLIED)


def test_a_jwt_is_kept_no_longer_than_its_exp() -> None:
    flows = _flows()
    exp = T0 + timedelta(minutes=7)
    assert flows.seal(NUMBER, jwt({"exp": exp.timestamp()})).ttl == exp - T0
    expired = flows.seal(NUMBER, jwt({"exp": (T0 - timedelta(seconds=1)).timestamp()}))
    assert expired.sealed is None  # already past its exp: no token is stored


def test_without_a_token_key_a_token_is_refused_before_any_io() -> None:
    with pytest.raises(ConfigurationError, match="STATE_TOKEN_KEYS"):
        Flows(FakeClock(T0), Timeouts(), None).save_token(PHONE, "a-token")


def test_revoke_token_says_whether_a_token_was_there() -> None:
    for token, there in ((b"sealed", True), (None, False)):
        flow = _flows().revoke_token(PHONE)
        _next(flow)
        commit = _next(flow, _begun(token=token))
        assert commit.token.sealed is None
        assert _finish(flow, APPLIED) is there


def _used_token(serve: Serve, sealed: bytes) -> Any:
    """The token change a message that read the token commits."""
    script = Script(_begun(token=sealed), APPLIED)
    with serve(script).message(PHONE, "wamid.1") as msg:
        msg.token()
    return script.requests[-1].token


def test_a_message_that_uses_the_token_keeps_it_token_ttl_from_now_never_past_exp(
    serve: Serve,
) -> None:
    saved = T0 - timedelta(minutes=10)
    change = _used_token(serve, _sealed("jwt", saved, saved + TTL))
    assert change.ttl == TTL and CIPHER.open(NUMBER, change.sealed).expires_at == T0 + TTL
    saved, exp = T0 - timedelta(minutes=15), T0 + timedelta(minutes=20)
    change = _used_token(serve, _sealed(jwt({"exp": exp.timestamp()}), saved, saved + TTL))
    assert change.ttl == exp - T0  # its JWT's exp comes first


def test_a_token_used_again_soon_is_not_written_again(serve: Serve) -> None:
    saved = T0 - timedelta(minutes=2)  # would move by less than a tenth of token_ttl
    assert _used_token(serve, _sealed("jwt", saved, saved + TTL)) is None


def test_a_message_commits_the_token_it_saved_or_revoked(serve: Serve) -> None:
    script = Script(_begun(), APPLIED, _begun(token=b"sealed"), APPLIED)
    state = serve(script)
    with state.message(PHONE, "wamid.1") as msg:
        msg.save_token("jwt-1")
        assert msg.token() == "jwt-1"
    assert CIPHER.open(NUMBER, script.requests[1].token.sealed).value == "jwt-1"
    with state.message(PHONE, "wamid.2") as msg:
        msg.revoke_token()
        assert msg.token() is None
    assert script.requests[3].token.sealed is None


# A message: one unit of work
def test_a_message_commits_its_changes_its_id_and_reopens_the_window(serve: Serve) -> None:
    script = Script(_begun(), APPLIED)
    with serve(script).message(PHONE, "wamid.1", "1") as msg:
        msg.conversation.navigate("handle_action_offer_credex")
    begin, commit = script.requests
    assert begin.message_id == commit.message_id == "wamid.1"
    assert commit.holder == Holder(begin.lease, FENCE)
    assert commit.write.session.stage == "handle_action_offer_credex"
    assert commit.write.critical.inbound_at == T0


def test_a_message_that_raises_frees_the_user_and_stores_nothing(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(_begun(), StateUnavailable("no answer"))
    with pytest.raises(LookupError), serve(script).message(PHONE, "wamid.1"):
        raise LookupError("the bot's own bug")  # not hidden by the failed release
    assert script.kinds() == ["Begin", "Release"]
    assert script.requests[1].lease == script.requests[0].lease
    assert "could not free the user" in caplog.text


def test_a_duplicate_delivery_sees_the_effects_in_doubt_and_commits_nothing(serve: Serve) -> None:
    doubt = InDoubt("create_credex", "form-1", T0)
    script = Script(Begun(None, duplicate=True, in_doubt=(doubt,)))
    with serve(script).message(PHONE, "wamid.1") as msg:
        assert msg.duplicate and msg.in_doubt == (doubt,)
        with pytest.raises(InvalidInput, match="duplicate"):
            _ = msg.conversation
    assert script.kinds() == ["Begin"]


def test_a_message_whose_begin_failed_gives_the_user_back_and_raises(serve: Serve) -> None:
    script = Script(StateUnavailable("no answer"), None)
    with pytest.raises(StateUnavailable), serve(script).message(PHONE, "wamid.1"):
        pytest.fail("the block ran without its user")
    assert script.kinds() == ["Begin", "Release"]


def test_a_message_reads_no_token_past_its_deadline_and_writes_none(serve: Serve) -> None:
    script = Script(_begun(token=_sealed("old", T0 - TTL, T0)), APPLIED)
    with serve(script).message(PHONE, "wamid.1") as msg:
        assert msg.token() is None
    assert script.requests[-1].token is None


def _form_ids(serve: Serve, message_id: str, starts: int) -> list[str]:
    with serve(Script(_begun(), APPLIED)).message(PHONE, message_id) as msg:
        return [msg.form_start("offer", required=["amount"]).id for _ in range(starts)]


def test_a_form_started_by_a_message_has_the_same_id_on_every_delivery(serve: Serve) -> None:
    first, second = _form_ids(serve, "wamid.1", 2)
    assert _form_ids(serve, "wamid.1", 2) == [first, second] and first != second
    assert _form_ids(serve, "wamid.2", 1) != [first]
    one_call = set()
    for _ in range(3):  # a one-call form_start is a new intent every time
        flow = _flows().form_start(PHONE, "offer", ["amount"])
        _next(flow)
        one_call.add(_next(flow, _begun()).write.form.id)
    assert len(one_call) == 3


# Effects: at most once per intent
def test_an_effect_runs_once_under_the_holder_and_records_its_result(serve: Serve) -> None:
    calls: list[int] = []

    def create() -> dict[str, str]:
        calls.append(1)
        return {"credexID": "c-1"}

    script = Script(_begun(effects=5), EffectRecord(EffectStatus.RUN), None, APPLIED)
    with serve(script).message(PHONE, "wamid.1") as msg:
        assert msg.effect("create_credex", create, key="form-1") == {"credexID": "c-1"}
    begin, start, finish, _ = script.requests
    assert start.holder == Holder(begin.lease, FENCE, 5)
    assert start.effect == finish.effect == Effect("create_credex", "form-1")
    assert json.loads(finish.result) == {"credexID": "c-1"} and not finish.settle
    assert calls == [1]


def test_an_effect_without_a_key_is_the_messages_own_intent(serve: Serve) -> None:
    script = Script(_begun(), EffectRecord(EffectStatus.RUN), None, APPLIED)
    with serve(script).message(PHONE, "wamid.1") as msg:
        msg.effect("login", lambda: 1)
    assert script.requests[1].effect == Effect("login", "wamid.1")


def test_the_idempotency_key_is_one_per_intent() -> None:
    state = StateService(Script(), Script(), FakeClock(T0), Timeouts(), CIPHER)  # no I/O
    first, second = state.message(PHONE, "wamid.1"), state.message(PHONE, "wamid.2")
    of_offer = first.idempotency_key("create_credex", key="form-1")
    assert second.idempotency_key("create_credex", key="form-1") == of_offer
    assert second.idempotency_key("create_credex", key="form-2") != of_offer
    assert first.idempotency_key("accept_credex", key="form-1") != of_offer
    assert first.idempotency_key("create_credex") != second.idempotency_key("create_credex")
    redelivered = state.message(PHONE, "wamid.1")  # the same message: the same intent
    assert redelivered.idempotency_key("create_credex") == first.idempotency_key("create_credex")


def _effect_meets(serve: Serve, record: EffectRecord) -> tuple[Script, list[int], Any]:
    """A message whose effect finds ``record``: the script, the calls and what it returned
    (or raised)."""
    calls: list[int] = []
    script = Script(_begun(), record, APPLIED)
    with serve(script).message(PHONE, "wamid.2") as msg:
        try:
            outcome = msg.effect("create_credex", lambda: calls.append(1), key="form-1")
        except Exception as error:
            outcome = error
    return script, calls, outcome


def test_an_effect_recorded_before_gives_its_result_without_running(serve: Serve) -> None:
    script, calls, outcome = _effect_meets(
        serve, EffectRecord(EffectStatus.DONE, b'{"credexID":"c"}')
    )
    assert outcome == {"credexID": "c"} and calls == []
    assert script.kinds() == ["Begin", "EffectStart", "Commit"]


@pytest.mark.parametrize(
    "record",
    [EffectRecord(EffectStatus.IN_DOUBT), EffectRecord(EffectStatus.DONE, b"not json")],
    ids=["in-doubt", "unreadable-result"],
)
def test_an_effect_in_doubt_is_not_run_again_and_says_which_intent(
    serve: Serve, record: EffectRecord
) -> None:
    _, calls, outcome = _effect_meets(serve, record)
    assert isinstance(outcome, EffectInDoubt) and calls == []
    assert (outcome.name, outcome.key) == ("create_credex", "form-1")


@pytest.mark.parametrize(
    ("status", "why"),
    [(EffectStatus.LEASE_LOST, "lease lapsed"), (EffectStatus.RECORDS_LOST, "evicted")],
)
def test_an_effect_of_a_message_that_lost_its_hold_does_not_run(
    serve: Serve, status: EffectStatus, why: str
) -> None:
    _, calls, outcome = _effect_meets(serve, EffectRecord(status))
    assert isinstance(outcome, LeaseLost) and why in str(outcome) and calls == []


@pytest.mark.parametrize(
    ("run", "error"),
    [(lambda: (_ for _ in ()).throw(TimeoutError("no answer")), TimeoutError), (set, InvalidInput)],
    ids=["raised", "result-not-json"],
)
def test_an_effect_whose_outcome_is_unknown_is_in_doubt_from_then_on(
    serve: Serve, run: Callable[[], Any], error: type[Exception]
) -> None:
    script = Script(_begun(), EffectRecord(EffectStatus.RUN), APPLIED)
    with serve(script).message(PHONE, "wamid.1") as msg:
        with pytest.raises(error):
            msg.effect("create_credex", run, key="form-1")
        assert msg.in_doubt == (InDoubt("create_credex", "form-1", T0),)
    assert script.kinds() == ["Begin", "EffectStart", "Commit"]  # no result recorded


def test_settling_returns_the_result_that_stands_and_clears_the_doubt(serve: Serve) -> None:
    doubt = InDoubt("create_credex", "form-1", T0)
    kept = EffectRecord(EffectStatus.DONE, b'{"credexID":"first"}')
    script = Script(_begun(in_doubt=(doubt,)), kept, APPLIED)
    with serve(script).message(PHONE, "wamid.3") as msg:
        assert msg.in_doubt == (doubt,)
        assert msg.settle("create_credex", {"credexID": "late"}, key="form-1") == {
            "credexID": "first"
        }
        assert msg.in_doubt == ()
    settle = script.requests[1]
    assert settle.settle and json.loads(settle.result) == {"credexID": "late"}


def test_an_effect_after_the_block_is_refused_without_a_request(serve: Serve) -> None:
    script = Script(_begun(), APPLIED)
    with serve(script).message(PHONE, "wamid.1") as msg:
        pass
    with pytest.raises(InvalidInput, match="inside the message's `with` block"):
        msg.effect("create_credex", lambda: 1)
    assert script.kinds() == ["Begin", "Commit"]


# Expiry events: claim, acknowledge
def _claim(n: int) -> Claim:
    return Claim(DIGITS, ExpiryKind.FORM, mark=n, previous=0)


def _event() -> Expiration:
    return Expiration(DIGITS, ExpiryKind.FORM, T0, None, "offer", {}, False)


def test_a_claim_is_one_request_and_its_events_are_the_batch() -> None:
    flow = _flows().expirations(10, 60)
    assert _next(flow) == ClaimDue(T0, 10, timedelta(seconds=60))
    taken = [(_claim(1), _event())]
    assert _finish(flow, taken) == taken


def test_a_batch_acknowledges_its_events_when_its_block_ends_cleanly(serve: Serve) -> None:
    claims = [_claim(1), _claim(2)]
    script = Script([(claim, _event()) for claim in claims], None)
    with serve(script).expirations(limit=10) as batch:
        assert len(batch) == 2
    assert script.requests[-1] == AckClaims(tuple(claims), T0)


@pytest.mark.parametrize("replies", [([(_claim(1), _event())],), ([],)], ids=["raised", "empty"])
def test_a_batch_that_raised_or_was_empty_acknowledges_nothing(
    serve: Serve, replies: tuple[Any, ...]
) -> None:
    script = Script(*replies)
    try:
        with serve(script).expirations(limit=10) as batch:
            if len(batch):
                raise ConnectionError("the consumer could not send")
    except ConnectionError:
        pass
    assert "AckClaims" not in script.kinds() and not script.replies
