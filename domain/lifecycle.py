"""Expiry rules: what a stored conversation means at a given moment, on every backend."""

from __future__ import annotations

from datetime import datetime

from vimbiso_state.domain.conversation import (
    Conversation,
    CriticalData,
    Notice,
    Session,
    window_closes_at,
)
from vimbiso_state.domain.expirations import Expiration, ExpiryKind
from vimbiso_state.domain.ports import StoredConversation
from vimbiso_state.domain.profile import AccountSelection
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.domain.timestamps import micros


def session_alive(session: Session, now: datetime, timeouts: Timeouts) -> bool:
    return now - session.last_seen_at <= timeouts.session


def critical_alive(critical: CriticalData, now: datetime, timeouts: Timeouts) -> bool:
    return now - critical.last_seen_at <= timeouts.state


def resume(
    phone: str,
    stored: StoredConversation,
    now: datetime,
    timeouts: Timeouts,
    account_selection: AccountSelection = AccountSelection.SINGLE,
) -> tuple[Conversation, bool]:
    """Build the conversation the user is in now; True when that must be written back.

    ``account_selection`` is how its set_profile picks the current account (configuration).

    Critical data is the anchor: a session or form without it (evicted by allkeys-lru, or
    expired) cannot be trusted and starts over. An expired session returns to the menu while
    the profile, current account and a form still within its own deadline are kept.
    """
    critical = stored.critical
    if critical is None or not critical_alive(critical, now, timeouts):
        return _started_over(phone, stored, now, timeouts, account_selection), True
    conversation = Conversation(
        phone=phone,
        critical=critical,
        session=stored.session or Session.begin(now),
        form=stored.form,
        version=stored.version,
    )
    conversation.account_selection = account_selection
    if stored.guards_lost:
        # The records that say which effects ran are gone (evicted): the navigation and the
        # form that could lead to an effect again go with them, so that nothing is paid
        # twice. The profile stays.
        conversation.form = None
        conversation.restart(now, Notice.STATE_LOST)
        return conversation, True
    changed = _expire_session(conversation, stored, now, timeouts)
    changed = _expire_form(conversation, stored, critical, now) or changed
    if stored.damaged:
        conversation.notices.append(Notice.STATE_LOST)
        changed = True
    return conversation, changed


def _started_over(
    phone: str,
    stored: StoredConversation,
    now: datetime,
    timeouts: Timeouts,
    account_selection: AccountSelection,
) -> Conversation:
    """A fresh conversation for a user without live critical data: welcomed, or told that
    the server lost their state."""
    conversation = Conversation.new(phone, now)
    conversation.version = stored.version
    # Critical data outlives the session, so a live session or form without it means the
    # server lost it (allkeys-lru eviction): tell the user rather than greet a stranger.
    lost = stored.damaged or (
        stored.critical is None
        and (
            (stored.session is not None and session_alive(stored.session, now, timeouts))
            or (stored.form is not None and not stored.form.is_expired(now))
        )
    )
    conversation.notices.append(Notice.STATE_LOST if lost else Notice.WELCOME)
    conversation.account_selection = account_selection
    return conversation


def _expire_session(
    conversation: Conversation, stored: StoredConversation, now: datetime, timeouts: Timeouts
) -> bool:
    """Back to the menu when the session is gone or past its timeout; True if so."""
    if stored.session is not None and session_alive(stored.session, now, timeouts):
        return False
    conversation.restart(now, Notice.SESSION_EXPIRED)
    return True


def _expire_form(
    conversation: Conversation, stored: StoredConversation, critical: CriticalData, now: datetime
) -> bool:
    """Drop a form past its deadline, or tell the user of one whose key is gone; True if so."""
    if conversation.form is not None and conversation.form.is_expired(now):
        conversation.form = None
        conversation.notices.append(Notice.FORM_EXPIRED)
        return True
    if conversation.form is None and critical.form_expires_at and not stored.damaged:
        # The form's key is gone although the critical data says there was a form: collected
        # after its deadline (by a TTL, so how late the user comes back must not matter), or
        # evicted before it (allkeys-lru), which is a loss the user must hear about too.
        past = now >= critical.form_expires_at
        conversation.notices.append(Notice.FORM_EXPIRED if past else Notice.STATE_LOST)
        return True
    return False


def expiry_deadline(
    stored: StoredConversation, kind: ExpiryKind, timeouts: Timeouts
) -> datetime | None:
    """When the form, or the session, of a stored conversation expires (None: there is none
    to expire): the form's deadline the critical data keeps, or the session's timeout after
    the later of its own last-seen and the critical data's (which follows it)."""
    critical = stored.critical
    if critical is None:
        return None
    if kind is ExpiryKind.FORM:
        return critical.form_expires_at
    seen = critical.last_seen_at
    if stored.session is not None:
        seen = max(seen, stored.session.last_seen_at)
    return seen + timeouts.session


def expiration_of(
    digits: str, kind: ExpiryKind, stored: StoredConversation, deadline: datetime, previous: int
) -> Expiration:
    """The event of a due index entry (``previous``: its score, µs, before this claim)."""
    critical = stored.critical
    form = stored.form if kind is ExpiryKind.FORM else None
    return Expiration(
        phone=digits,
        kind=kind,
        expired_at=deadline,
        window_closes_at=window_closes_at(critical.inbound_at if critical else None),
        name=form.name if form is not None else None,
        answers=dict(form.values) if form is not None else {},
        redelivered=previous > micros(deadline),
    )
