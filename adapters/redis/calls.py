"""The script calls: for each Lua script, its arguments and what its reply means.

Pure: no I/O. Each script's header comment (the ``*.lua`` files) documents the same
arguments and reply; layout.py gives the stored bytes that go into them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from vimbiso_state.adapters.redis.layout import (
    FOREIGN,
    effect_field,
    handled_member,
    in_doubt,
    index_entry,
    index_member,
    read_conversation,
    read_form,
    stored_write,
)
from vimbiso_state.domain.conversation import window_closes_at
from vimbiso_state.domain.effects import Effect
from vimbiso_state.domain.expirations import LOOKED_AT_PER_EVENT, Expiration
from vimbiso_state.domain.ports import (
    Begun,
    Claim,
    ConversationWrite,
    EffectRecord,
    EffectStatus,
    Holder,
    StoredConversation,
    TokenChange,
    WriteResult,
    WriteStatus,
)
from vimbiso_state.domain.timeouts import Timeouts, slide_step
from vimbiso_state.domain.timestamps import from_micros, micros

# TTLs are set a little past the domain's deadline: Redis only collects garbage, the domain
# decides what has expired.
GRACE_MS = 2000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COMMITTED = {b"ok": WriteStatus.APPLIED, b"applied": WriteStatus.APPLIED}
_EFFECTS = {
    b"run": EffectStatus.RUN,
    b"done": EffectStatus.DONE,
    b"in_doubt": EffectStatus.IN_DOUBT,
    b"lease_lost": EffectStatus.LEASE_LOST,
    b"records_lost": EffectStatus.RECORDS_LOST,
}


def micros_of(duration: timedelta) -> int:
    return (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds


def px(duration: timedelta) -> int:
    """A TTL in milliseconds for a part whose domain deadline is ``duration`` away."""
    return max(1, micros_of(duration) // 1000) + GRACE_MS


class ScriptCalls:
    """The arguments of every script for one set of timeouts, and what their replies mean."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._load_constants = [
            micros_of(timeouts.state),
            micros_of(timeouts.session),
            micros_of(slide_step(timeouts.state)),
            micros_of(slide_step(timeouts.session)),
            px(timeouts.state),
            px(timeouts.session),
        ]
        self.lease_px = max(1, micros_of(timeouts.lease) // 1000)
        self._dedupe_us = micros_of(timeouts.dedupe)
        self._session_us = micros_of(timeouts.session)
        # How far a session's index entry may fall behind its deadline before a commit moves
        # it (commit.lua): an active member's entry costs a write a step, not a message.
        self._index_step_us = self._session_us // 10
        # How far past what a write needs a TTL is extended, so that most writes move none.
        self._effects_px = px(timeouts.dedupe)
        self._lease_px = b"%d" % self.lease_px
        # commit.lua's arguments that only the timeouts decide, as the text it is sent as.
        self._handled_px = b"%d" % px(timeouts.dedupe)
        self._user_px = b"%d" % px(timeouts.state)
        self._session_px = b"%d" % px(timeouts.session)
        self._form_keep = timeouts.dedupe
        self._form_most = timeouts.state

    # load.lua
    def load_args(self, now: datetime, touch: bool) -> list[Any]:
        return [b"%016d" % micros(now), b"1" if touch else b"0", *self._load_constants]

    def peek_args(self) -> list[Any]:
        """Nothing is touched, so ``now`` is never used: last-seen comes from the prefixes."""
        return self.load_args(_EPOCH, False)

    @staticmethod
    def load_reply(reply: list[Any], now: datetime) -> StoredConversation:
        user, session, form, touched, effects = reply
        return read_conversation(
            user, session, form, touched=int(touched), now=now, effects=int(effects)
        )

    @classmethod
    def peek_reply(cls, reply: list[Any]) -> StoredConversation:
        return cls.load_reply(reply, _EPOCH)

    # begin.lua
    def begin_args(
        self, now: datetime, message_id: str | None, lease: str, waited: bool
    ) -> list[Any]:
        args = [
            b"" if message_id is None else handled_member(message_id, lease),
            lease,
            self._lease_px,
            b"%d" % (micros(now) - self._dedupe_us),
        ]
        return [*args, b"1"] if waited else args

    @staticmethod
    def begin_reply(reply: list[Any], values: list[Any] | None, now: datetime) -> Begun:
        """What begin.lua found, with the parts it read (``values`` None) or the MGET
        pipelined after it read (user, session, form, token). The fence is above every
        version the user had: now, or the stored version + 1."""
        status, effects, doubts = reply[:3]
        doubted = tuple(in_doubt(record) for record in doubts)
        if status == b"duplicate":
            return Begun(None, duplicate=True, effects=effects, in_doubt=doubted)
        if status == b"busy":
            return Begun(None, busy_for=timedelta(milliseconds=max(0, reply[3])))
        user, session, form, token = reply[3:7] if values is None else values
        stored = read_conversation(user, session, form, touched=0, now=now, effects=effects)
        return Begun(
            stored,
            token=None if token == FOREIGN else token,
            fence=max(micros(now), stored.version + 1),
            effects=effects,
            in_doubt=doubted,
        )

    # commit.lua
    def commit_args(
        self,
        holder: Holder,
        message_id: str | None,
        write: ConversationWrite | None,
        token: TokenChange | None,
        now: datetime,
    ) -> list[Any]:
        """commit.lua's arguments (see its header), every one as the text it is sent as."""
        head = [holder.lease, b"%d" % holder.fence, handled_member(message_id, holder.lease)]
        if write is None:
            plan, parts = b"----", [b""] * 6
        else:
            plan, parts = self._parts(holder, write, now)
        args = [
            *head,
            plan,
            self._handled_px,
            *parts,
            *self._index_args(write, now),
        ]
        if token is not None:  # the rest only when the token changes
            args += [b"-" if token.sealed is None else token.sealed, b"%d" % px(token.ttl)]
        return args

    def _parts(
        self, holder: Holder, write: ConversationWrite, now: datetime
    ) -> tuple[bytes, list[bytes]]:
        """The plan and the parts' arguments (user value, its px, the session, its px, the
        form and its px) of a commit that writes the conversation."""
        stored = stored_write(write, holder.fence, holder.effects)
        form_px = b""
        if write.form is None:
            form, form_entry = b"d", b"r"
        else:
            form = b"=" if stored.form_as_stored else b"s"
            # The form's entry is in the index from its start on (claim.lua moves it later
            # as its deadline moves): added for a form new to this write, or carried over
            # from a value an older release wrote.
            carried = "form" in write.documents and "critical" in write.documents
            form_entry = b"-" if carried else b"f"
            # Kept past its deadline, for the event that tells the member it expired (an
            # acknowledged event deletes it; events are kept at most dedupe_ttl), never
            # longer than the critical data that names it.
            form_px = b"%d" % px(
                min(write.form.expires_at - now + self._form_keep, self._form_most)
            )
        user = b"h" if stored.critical_as_stored else b"s"
        effects = b"e" if holder.effects else b"-"
        parts = [
            stored.user,
            self._user_px,
            stored.session,
            self._session_px,
            stored.form,
            form_px,
        ]
        return user + form + effects + form_entry, parts

    def _index_args(self, write: ConversationWrite | None, now: datetime) -> list[bytes]:
        """The session's deadline, the score below which its entry moves there, and the
        oldest entry kept (the form's deadline is in the user value's header)."""
        if write is None:
            return [b"", b"", b""]
        deadline = micros(write.session.last_seen_at) + self._session_us
        return [
            b"%d" % deadline,
            b"%d" % (deadline - self._index_step_us),
            b"%d" % (micros(now) - self._dedupe_us),
        ]

    @staticmethod
    def commit_reply(reply: list[Any], holder: Holder) -> WriteResult:
        status = _COMMITTED.get(reply[0])
        if status is None:
            return WriteResult(WriteStatus.LEASE_LOST, 0)
        return WriteResult(status, holder.fence)

    # effect.lua
    def effect_start_args(self, holder: Holder, effect: Effect, now: datetime) -> list[Any]:
        # 0.2 kept a message's effects under its own key: an intent that is a message id may
        # have been started there (effect.lua looks at KeySchema's legacy key).
        return [
            b"start",
            effect_field(effect),
            f"{effect.name}\n{effect.key}",
            micros(now),
            holder.lease,
            holder.effects,
            holder.fence,
            self._effects_px,
            self._dedupe_us,
            effect.name,
        ]

    def effect_finish_args(
        self, effect: Effect, result: bytes, now: datetime, settle: bool
    ) -> list[Any]:
        kind = b"settle" if settle else b"finish"
        field = effect_field(effect)
        return [kind, field, result, micros(now), b"", 0, 0, self._effects_px, 0, b""]

    @staticmethod
    def effect_reply(reply: list[Any]) -> EffectRecord:
        status = _EFFECTS[reply[0]]
        if status is EffectStatus.RUN:
            return EffectRecord(status, None, int(reply[1]))
        if len(reply) > 2:  # a finish or a settle: the records it was recorded in
            return EffectRecord(status, reply[1], int(reply[2]))
        return EffectRecord(status, reply[1] if len(reply) > 1 else None)

    # claim.lua and ack.lua
    def claim_args(
        self, now: datetime, limit: int, lease: timedelta, peek: bool = False
    ) -> list[Any]:
        at = micros(now)
        mode = b"peek" if peek else b"claim"
        looked_at = limit * LOOKED_AT_PER_EVENT
        return [
            at,
            at + micros_of(lease),
            limit,
            looked_at,
            at - self._dedupe_us,
            self._session_us,
            mode,
        ]

    @staticmethod
    def claim_reply(reply: list[Any], mark: int | None) -> list[tuple[Claim, Expiration]]:
        """claim.lua's due events (member, score before, deadline, last inbound, form JSON,
        member...), each with the claim that holds it (``mark``: the claim's lease end; None
        when only read, and then each entry's score stands for it)."""
        taken = []
        for at in range(0, len(reply), 5):
            member, score, deadline, inbound, document = reply[at : at + 5]
            kind, digits = index_entry(member)
            previous = int(float(score))
            claim = Claim(digits, kind, previous if mark is None else mark, previous)
            form = read_form(document) if document else None
            event = Expiration(
                phone=digits,
                kind=kind,
                expired_at=from_micros(int(deadline)),
                window_closes_at=window_closes_at(from_micros(inbound) if inbound else None),
                name=form.name if form is not None else None,
                answers=dict(form.values) if form is not None else {},
                redelivered=previous > int(deadline),
            )
            taken.append((claim, event))
        return taken

    @staticmethod
    def ack_args(
        claims: Sequence[Claim], partition: Callable[[str], str], now: datetime
    ) -> list[Any]:
        """ack.lua's arguments: now, then each claim's partition, member and mark."""
        args: list[Any] = [micros(now)]
        for claim in claims:
            args += [partition(claim.digits), index_member(claim), claim.mark]
        return args
