"""Effects: calls to other systems (a Credex offer) that must happen at most once per intent.

An intent is the business action an effect carries out: an offer's own id (its form's id),
or, when the bot names none, the message that asked for it. An offer spans several messages,
and a bot that catches every exception commits a message whose effect failed midway, so the
member's next message must meet the same record, not run the call again.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from vimbiso_state.domain.conversation import check_step
from vimbiso_state.domain.errors import InvalidInput
from vimbiso_state.domain.json_values import check_text

MAX_KEY = 256


class Effect(NamedTuple):
    """One effect of one intent: its name (an identifier) and the intent's key."""

    name: str
    key: str

    @classmethod
    def of(cls, name: object, key: object) -> Effect:
        """Validated before any I/O: the name is a step name, the key 1 to 256 characters."""
        check_step("an effect name", name)
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
            raise InvalidInput(f"an effect's key is 1 to {MAX_KEY} characters of text")
        check_text(key, "an effect's key")
        return cls(name, key)  # type: ignore[arg-type]


class InDoubt(NamedTuple):
    """An effect that was started and whose outcome nobody recorded: the process died, the
    call failed or timed out. It stays in doubt, for every later message, until settled."""

    name: str
    key: str
    started_at: datetime
