"""``vimbiso-state expirations``: the forms and sessions whose deadline passed, one JSON line
each. Without ``--ack`` nothing is claimed or changed (the bot's consumers still get every
event); with it, the events are consumed as a consumer would, and acknowledged once printed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TextIO

from vimbiso_state.domain.expirations import Due, Expiration, due
from vimbiso_state.domain.lifecycle import expiration_of, expiry_deadline
from vimbiso_state.domain.phone import PhoneNumber
from vimbiso_state.entrypoints.commands.common import CliError, close, container, is_redis
from vimbiso_state.services.config import Settings


def run(config: Settings, out: TextIO, *, ack: bool, limit: int, lease: float) -> int:
    if not is_redis(config):
        raise CliError(
            "expirations reads the state Redis: pass --redis URL or set REDIS_STATE_URL "
            "(the memory backend lives inside one process)"
        )
    if not 0 < limit <= 1000:
        raise CliError("--limit is from 1 to 1000")
    built, _ = container(config)
    try:
        repository = built.conversations()
        now = built.clock().now()  # the server's time: deadlines as the bot sees them
        if ack:
            claims = repository.claim(now, limit, timedelta(seconds=lease))
            events = repository.check(claims, now) if claims else []
            for event in events:
                if event is not None:
                    print(_line(event), file=out)
            repository.ack([c for c, e in zip(claims, events, strict=True) if e], now)
            return 0
        timeouts = built.timeouts()
        for entry in repository.due_entries(now, limit):
            stored = repository.peek(PhoneNumber(entry.digits))
            deadline = expiry_deadline(stored, entry.kind, timeouts)
            if deadline is not None and due(deadline, now) is Due.DUE:
                event = expiration_of(entry.digits, entry.kind, stored, deadline, entry.previous)
                print(_line(event), file=out)
        return 0
    finally:
        close(built)


def _line(event: Expiration) -> str:
    closes = event.window_closes_at
    return json.dumps(
        {
            "phone": "+" + event.phone,
            "kind": event.kind.value,
            "name": event.name,
            "answers": event.answers,
            "expired_at": event.expired_at.isoformat(),
            "window_closes_at": None if closes is None else closes.isoformat(),
            "redelivered": event.redelivered,
        },
        ensure_ascii=False,
    )
