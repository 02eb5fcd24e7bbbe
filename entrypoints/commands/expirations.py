"""``vimbiso-state expirations``: the forms and sessions whose deadline passed, one JSON line
each. Without ``--ack`` nothing is claimed or changed (the bot's consumers still get every
event); with it, the events are consumed as a consumer would, and acknowledged once printed.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TextIO

from vimbiso_state.domain.expirations import Expiration
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
        if not ack:
            for event in repository.due(now, limit):
                print(_line(event), file=out)
            return 0
        taken = repository.claim(now, limit, timedelta(seconds=lease))
        for _, event in taken:
            print(_line(event), file=out)
        repository.ack([claim for claim, _ in taken], now)
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
