"""``vimbiso-state inspect PHONE`` and ``reset PHONE``: one user's stored state, read or erased."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import TextIO

from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.token import mask_tokens
from vimbiso_state.entrypoints.commands.common import close, container, describe, is_redis
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.operations import Inspector, KeyInfo, Snapshot, describe_user_keys

MEMORY_NOTE = (
    "note: the memory backend lives inside one process; this command's process holds nothing. "
    "Use --redis URL (or STATE_BACKEND=redis) to look at a shared store."
)


def span(delta: timedelta | float) -> str:
    """A duration for people: 42s, 4m18s, 23h59m, 2d3h; negative spans read 'ago'."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    sign, seconds = ("-" if seconds < 0 else ""), abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d{hours}h"
    elif hours:
        text = f"{hours}h{minutes}m"
    elif minutes:
        text = f"{minutes}m{secs}s"
    else:
        text = f"{secs}s"
    return sign + text


def _until(deadline: datetime | None, now: datetime) -> str:
    if deadline is None:
        return "-"
    left = deadline - now
    return f"expires in {span(left)}" if left > timedelta(0) else f"expired {span(-left)} ago"


def _ago(moment: datetime, now: datetime) -> str:
    if moment <= now:
        return f"{span(now - moment)} ago"
    # A demo or chat that let time pass ('wait') writes with a clock ahead of the real one.
    return f"{span(moment - now)} ahead of this clock"


def inspector(built: Container) -> Inspector:
    return Inspector(
        built.conversations(), built.tokens(), built.clock(), built.timeouts(), built.cipher()
    )


Rows = list[tuple[str, str]]


def show(snapshot: Snapshot, keys: list[KeyInfo] | None, out: TextIO) -> None:
    stored = snapshot.stored
    rows: Rows = [("version", str(stored.version))]
    rows += _critical_rows(snapshot) + _session_rows(snapshot) + _form_rows(snapshot)
    notices = ", ".join(n.value for n in snapshot.conversation.notices)
    rows.append(("next message", f"would find: {notices}" if notices else "resumes as stored"))
    if stored.damaged:
        rows.append(("damaged", "a part could not be decoded and would be dropped"))
    rows.append(("token", _token_detail(snapshot)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}", file=out)
    if keys is not None:
        _show_keys(keys, out)


def _critical_rows(snapshot: Snapshot) -> Rows:
    critical, now = snapshot.stored.critical, snapshot.now
    if critical is None:
        return [("critical data", "none (never stored, expired or evicted)")]
    profile = critical.profile
    member = profile.member if profile else None
    account = critical.current_account
    count = len(profile.accounts) if profile else 0
    return [
        (
            "member",
            f"{member.name or '-'} ({member.member_id})" if member else "none (no profile yet)",
        ),
        (
            "current account",
            f"{account.handle or '-'}: {account.name or '-'} ({account.account_id}), "
            f"{count} account(s)"
            if account
            else "none",
        ),
        (
            "critical data",
            f"last seen {_ago(critical.last_seen_at, now)}, "
            f"{_until(snapshot.critical_deadline, now)}",
        ),
    ]


def _session_rows(snapshot: Snapshot) -> Rows:
    session, now = snapshot.stored.session, snapshot.now
    if session is None:
        return [("session", "none (expired, evicted or never started)")]
    offer = session.offer
    return [
        (
            "session",
            f"{session.id}, last seen {_ago(session.last_seen_at, now)}, "
            f"{_until(snapshot.session_deadline, now)}",
        ),
        ("stage", session.stage),
        ("option", session.option or "-"),
        ("direction", session.direction.value),
        ("menu", " > ".join(session.menu) or "-"),
        (
            "offer",
            f"{offer.amount} {offer.denomination.value} to {offer.recipient} ({offer.status.value})"
            if offer
            else "-",
        ),
        ("context", ", ".join(f"{k}={v!r}" for k, v in session.context.items()) or "-"),
    ]


def _form_rows(snapshot: Snapshot) -> Rows:
    form = snapshot.stored.form
    if form is None:
        return [("form", "none")]
    values = ", ".join(f"{k}={v}" for k, v in form.values.items()) or "no answers yet"
    missing = ", ".join(form.missing()) or "nothing"
    until = _until(form.expires_at, snapshot.now)
    return [("form", f"{form.name}: {values}; missing {missing}; {until}")]


def _token_detail(snapshot: Snapshot) -> str:
    token = snapshot.token
    if not token.stored:
        return "none"
    detail = "present, value ********"
    if token.length is not None:
        detail += f" ({token.length} characters)"
    if token.expires_at is not None:
        detail += f", {_until(token.expires_at, snapshot.now)}"
    if token.problem:
        detail += f" [{token.problem}]"
    return detail


def _show_keys(keys: list[KeyInfo], out: TextIO) -> None:
    print("keys (Redis TTLs collect garbage; the deadlines above are the domain's):", file=out)
    width = max(len(k.name) for k in keys)
    for key in keys:
        if not key.exists:
            detail = "missing"
        elif key.persistent:
            detail = "no TTL (not written by this library?)"
        else:
            detail = f"ttl {span((key.ttl_ms or 0) / 1000)}"
        if key.members is not None:
            detail += f" ({key.members} handled id(s))"
        kind = key.type if key.exists else ""
        print(f"  {key.name.ljust(width)}  {kind.ljust(6)}  {detail}", file=out)


def run_inspect(config: Settings, phone: str, out: TextIO) -> int:
    """Print what is stored for ``phone``; anything JWT-shaped is masked wherever it is (the
    bot's own data may hold a token the library did not put there)."""
    shown = io.StringIO()
    try:
        return _inspect(config, phone, shown)
    finally:
        out.write(mask_tokens(shown.getvalue()))


def _inspect(config: Settings, phone: str, out: TextIO) -> int:
    number = PhoneNumber.parse(phone, config.phone_region)  # fails before any connection
    built, _ = container(config)
    try:
        snapshot = inspector(built).peek(number.digits)
        keys = (
            describe_user_keys(built.redis_client(), number, built.redis_retry())
            if is_redis(config)
            else None
        )
    finally:
        close(built)
    print(f"{number.e164}  {describe(config)}", file=out)
    if not is_redis(config):
        print(MEMORY_NOTE, file=out)
    if snapshot.empty and not (keys and any(k.exists for k in keys)):
        print("  nothing stored for this number", file=out)
        return 0
    show(snapshot, keys, out)
    return 0


# The kinds of key a reset deletes (the handled message ids and effect records stay).
FORGOTTEN = ("user", "session", "form", "token", "lease")


def run_reset(config: Settings, phone: str, out: TextIO) -> int:
    number = PhoneNumber.parse(phone, config.phone_region)
    built, _ = container(config)
    try:
        existing = None
        if is_redis(config):
            keys = describe_user_keys(built.redis_client(), number, built.redis_retry())
            existing = sum(k.exists for k in keys if k.kind in FORGOTTEN)
        # What StateService.reset does, without the token key it needs to store tokens.
        built.conversations().forget(number)
    finally:
        close(built)
    if existing is None:
        print(f"reset {number.e164}: forgotten ({describe(config)})", file=out)
        print(MEMORY_NOTE, file=out)
    elif existing:
        print(
            f"reset {number.e164}: deleted {existing} key(s): conversation, form and token "
            "(handled message ids and effect records stay, so a redelivered message is still "
            "a duplicate and no payment runs twice)",
            file=out,
        )
    else:
        print(f"reset {number.e164}: nothing was stored", file=out)
    return 0
