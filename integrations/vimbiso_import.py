"""Move the VimbisoPay bot's live users onto this library: ``vimbiso-state import``.

The bot keeps one JSON document per user under ``channel:{wa_id}`` (a plain Redis string
written with SETEX, 300 s): ``channel``, ``mock_testing``, ``auth`` ({"token": JWT}),
``dashboard`` ({"member", "accounts"} from Credex), ``active_account_id``, ``action`` and
``component_data``. Each document is written here through BotState, in one
``state.message(...)`` per user: the same mapping the bot uses once it runs on the library,
the normal write path, and a message id that makes the import of a user happen once (a
second run finds it handled and changes nothing). SCAN walks the bot's keyspace in batches;
``ImportReport.cursor`` says where an interrupted run can go on. Ctrl-C waits until the member
being written is stored (or left as it was), so that nobody is left held by the import and
the report counts exactly the keys that were handled.
"""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import partial
from types import FrameType
from typing import Any, NamedTuple, TypeVar, cast

import redis

from vimbiso_state.adapters.redis.connection import RetryPolicy
from vimbiso_state.domain.conversation import Conversation
from vimbiso_state.domain.effects import InDoubt
from vimbiso_state.domain.errors import (
    InvalidInput,
    InvalidPhoneNumber,
    LeaseLost,
    StateUnavailable,
    UserBusy,
)
from vimbiso_state.domain.lifecycle import resume
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.domain.ports import ConversationReader
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.domain.token import token_deadline
from vimbiso_state.integrations.vimbiso_bot import CHANNEL, BotState
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

T = TypeVar("T")
KEY_PREFIX = b"channel:"
# One id for every user: handled ids are kept per user, so this marks "imported" per user.
IMPORT_MESSAGE_ID = "import:vimbiso-bot:channel"
EXAMPLES = 3  # keys shown per reason for skipping


class Skip(StrEnum):
    """Why a ``channel:{wa_id}`` key was not imported."""

    NOT_A_STRING = "not a string key (another Redis type)"
    GONE = "expired before it was read"
    MALFORMED = "malformed JSON"
    NOT_AN_OBJECT = "not a JSON object"
    NO_PHONE = "no phone number in the key"
    INVALID_PHONE = "invalid phone number"
    NOT_WHATSAPP = "not a WhatsApp channel"
    OTHER_NUMBER = "channel.identifier is another number than the key's"
    NO_DASHBOARD = "no dashboard (never logged in)"
    NO_TOKEN = "no auth token (logged out)"
    EXPIRED_TOKEN = "token expired (the member logs in again)"
    REFUSED = "refused by the library (see the reason)"
    ALREADY_HERE = "already has a profile here (newer than the bot's)"
    BUSY = "a message of the user was being handled: run again"


@dataclass
class ImportReport:
    """What an import did (or, in a dry run, would do)."""

    dry_run: bool = False
    scanned: int = 0  # keys of the bot's database handled (read, and imported or skipped)
    channels: int = 0  # of them, channel:{wa_id} keys: imported + unchanged + skipped
    imported: int = 0  # written now (dry run: would be)
    unchanged: int = 0  # imported by an earlier run: nothing to do
    skipped: Counter[Skip] = field(default_factory=Counter)
    examples: dict[Skip, list[str]] = field(default_factory=dict)
    reasons: dict[Skip, str] = field(default_factory=dict)  # the first detail per kind
    # SCAN cursor of the first batch not finished: 0 once the whole keyspace is done.
    cursor: int = 0

    def skip(self, key: str, why: Skip, detail: str = "") -> None:
        self.skipped[why] += 1
        shown = self.examples.setdefault(why, [])
        if len(shown) < EXAMPLES:
            shown.append(key)
        if detail:
            self.reasons.setdefault(why, detail)


class Plan(NamedTuple):
    """One bot document, checked: the user and the state updates to apply."""

    key: str
    phone: PhoneNumber
    updates: dict[str, Any]


class Skipped(NamedTuple):
    key: str
    why: Skip
    detail: str = ""


Progress = Callable[[int, int], None]  # (keys scanned, keys in the database)


def plan_channel(key: str, raw: object, now: datetime, timeouts: Timeouts) -> Plan | Skipped:
    """Read one ``channel:{wa_id}`` value (bytes, None when gone, or the error reading it)."""
    if isinstance(raw, Exception):
        return Skipped(key, Skip.NOT_A_STRING)
    if raw is None:
        return Skipped(key, Skip.GONE)
    wa_id = key[len("channel:") :]
    if not wa_id:
        return Skipped(key, Skip.NO_PHONE)
    try:
        phone = PhoneNumber.parse("+" + wa_id)
    except InvalidPhoneNumber:
        return Skipped(key, Skip.INVALID_PHONE)
    try:
        document = json.loads(cast(bytes, raw), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, NaN, absurd nesting
        return Skipped(key, Skip.MALFORMED)
    if not isinstance(document, dict):
        return Skipped(key, Skip.NOT_AN_OBJECT)
    channel = document.get(CHANNEL)
    if isinstance(channel, dict):
        if channel.get("type", "whatsapp") != "whatsapp":
            return Skipped(key, Skip.NOT_WHATSAPP)
        if not _same_number(channel.get("identifier", wa_id), phone):
            return Skipped(key, Skip.OTHER_NUMBER)
    dashboard = document.get("dashboard")
    if not isinstance(dashboard, dict) or not dashboard.get("member"):
        return Skipped(key, Skip.NO_DASHBOARD)
    auth = document.get("auth")
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        return Skipped(key, Skip.NO_TOKEN)
    if token_deadline(token, now, timeouts.token) <= now:
        return Skipped(key, Skip.EXPIRED_TOKEN)
    updates = {name: value for name, value in document.items() if name != CHANNEL}
    return Plan(key, phone, updates)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _same_number(identifier: object, phone: PhoneNumber) -> bool:
    try:
        return PhoneNumber.parse("+" + str(identifier).lstrip("+")).digits == phone.digits
    except InvalidPhoneNumber:
        return False


def import_channels(
    source: redis.Redis,
    container: Container,
    *,
    dry_run: bool = False,
    cursor: int = 0,
    batch: int = 500,
    progress: Progress | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Import every ``channel:{wa_id}`` key of the bot's Redis ``source`` into the state
    store of ``container``; ``dry_run`` checks them all and writes nothing.

    Pass a ``report`` to keep what was done if the run is interrupted (Ctrl-C, the bot's
    Redis going away): its ``cursor`` is where a new run may start. Starting from 0 again is
    safe too: users imported before are counted as unchanged.
    """
    report = report or ImportReport(dry_run=dry_run)
    report.cursor = cursor
    state = container.state_service()  # refuses a shared store without a token key, now
    policy = RetryPolicy()
    importer = _Importer(container, state, report)
    total = _source(policy, source.dbsize)
    if progress:
        progress(0, total)
    for next_cursor, keys in _scan(source, policy, cursor, batch):
        names = [key for key in keys if key.startswith(KEY_PREFIX)]
        values = iter(_source(policy, partial(_get_all, source, names)))
        for key in keys:
            raw = next(values) if key.startswith(KEY_PREFIX) else _NOT_A_CHANNEL
            # Ctrl-C waits for the member being written: a user is never left held by an
            # interrupted message, and every key counted here was handled whole.
            with _interrupts_wait():
                importer.one(key, raw)
        report.cursor = next_cursor
        if progress:
            progress(report.scanned, max(total, report.scanned))
    return report


_NOT_A_CHANNEL = object()


class _Importer:
    """One key at a time: planned, written (or checked, in a dry run) and counted."""

    def __init__(self, container: Container, state: StateService, report: ImportReport) -> None:
        self._state, self._report = state, report
        self._clock, self._timeouts = container.clock(), container.timeouts()
        self._reader = cast(ConversationReader, container.conversations())

    def one(self, name: bytes, raw: object) -> None:
        report = self._report
        if raw is not _NOT_A_CHANNEL:
            key = name.decode("utf-8", "replace")
            plan = plan_channel(key, raw, self._clock.now(), self._timeouts)
            if isinstance(plan, Skipped):
                report.skip(*plan)
            elif report.dry_run:
                _check(plan, report, self._reader, self._clock.now(), self._timeouts)
            else:
                _write(plan, report, self._state)
            report.channels += 1
        report.scanned += 1


@contextmanager
def _interrupts_wait() -> Iterator[None]:
    """Hold SIGINT's KeyboardInterrupt until the block ends; a second Ctrl-C stops at once.

    Only the main thread receives it, and only Python's own handler is replaced.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []

    def later(signum: int, frame: FrameType | None) -> None:
        if received:
            signal.default_int_handler(signum, frame)
        received.append(signum)

    signal.signal(signal.SIGINT, later)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def _write(plan: Plan, report: ImportReport, state: StateService) -> None:
    try:
        with state.message(plan.phone.e164, IMPORT_MESSAGE_ID) as msg:
            if msg.duplicate:
                report.unchanged += 1
                return
            if msg.conversation.profile is not None:
                raise _AlreadyHere  # leaves the block: nothing stored, the user freed
            BotState(msg).update_state(plan.updates)
    except _AlreadyHere:
        report.skip(plan.key, Skip.ALREADY_HERE)
    except InvalidInput as refused:
        report.skip(plan.key, Skip.REFUSED, str(refused))
    except (UserBusy, LeaseLost):
        report.skip(plan.key, Skip.BUSY)
    else:
        report.imported += 1


def _check(
    plan: Plan, report: ImportReport, reader: ConversationReader, now: datetime, timeouts: Timeouts
) -> None:
    """A dry run: what _write would decide, reading the store and writing nothing."""
    stored, _ = resume(plan.phone.digits, reader.peek(plan.phone), now, timeouts)
    if stored.profile is not None:
        report.skip(plan.key, Skip.ALREADY_HERE)
        return
    try:
        BotState(_DryRun(plan.phone, now)).update_state(plan.updates)
    except InvalidInput as refused:
        report.skip(plan.key, Skip.REFUSED, str(refused))
    else:
        report.imported += 1


class _AlreadyHere(Exception):
    """Leave the message without storing anything."""


class _DryRun:
    """A message that is never committed: BotState's checks, without a store."""

    message_id = IMPORT_MESSAGE_ID

    def __init__(self, phone: PhoneNumber, now: datetime) -> None:
        self.phone = phone.digits
        self.conversation = Conversation.new(phone.digits, now)
        self._token: str | None = None

    def token(self) -> str | None:
        return self._token

    def save_token(self, value: str) -> None:
        self._token = value

    def revoke_token(self) -> None:
        self._token = None

    in_doubt: tuple[InDoubt, ...] = ()

    def effect(self, name: str, run: Callable[[], T], *, key: str | None = None) -> T:
        raise InvalidInput("an import runs no effects")

    def settle(self, name: str, result: object, *, key: str | None = None) -> Any:
        raise InvalidInput("an import settles no effects")

    def idempotency_key(self, name: str, key: str | None = None) -> str:
        return name


def _scan(
    source: redis.Redis, policy: RetryPolicy, cursor: int, batch: int
) -> Iterator[tuple[int, list[bytes]]]:
    """(the cursor after the batch, the batch's keys), until SCAN says the walk is done."""
    while True:
        cursor, keys = _source(policy, partial(source.scan, cursor, count=batch))
        cursor = int(cursor)
        yield cursor, [k if isinstance(k, bytes) else str(k).encode() for k in keys]
        if cursor == 0:
            return


def _get_all(source: redis.Redis, names: list[bytes]) -> list[object]:
    """Each key's value, None when it expired meanwhile, or the error (WRONGTYPE)."""
    if not names:
        return []
    pipe = source.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return list(pipe.execute(raise_on_error=False))


def _source(policy: RetryPolicy, call: Callable[[], T]) -> T:
    """A call to the bot's Redis; its failures name it, not the state store."""
    try:
        return policy.call(call)
    except StateUnavailable as exc:
        if isinstance(exc.__cause__, redis.exceptions.AuthenticationError):
            raise StateUnavailable(
                f"the bot's Redis refused the credentials in its URL: {exc.__cause__}"
            ) from exc
        raise StateUnavailable(f"the bot's Redis: {exc}") from exc
