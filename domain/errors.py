"""Every error the library raises, in three groups a webhook routes by:

- ``RedeliverLater``: nothing was stored and the same message will work a little later (the
  user was busy, the handler lost its lease, the store could not be reached): answer WhatsApp
  with a non-2xx status so that it delivers the message again;
- ``UsageError``: the bot's own mistake (a malformed argument, a call inside its own message,
  a value over the limits, bad configuration): delivering it again gives the same error, so
  answer 200, log it and fix the code;
- every other ``StateError`` is an answer about the conversation (no form in progress, a form
  value refused, a token that cannot be used, an effect in doubt) for the flow to handle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CalledInsideOwnMessage",
    "ConcurrencyConflict",
    "ConfigurationError",
    "EffectInDoubt",
    "FormIncomplete",
    "FormValidationError",
    "InvalidInput",
    "InvalidPhoneNumber",
    "LeaseLost",
    "NoActiveForm",
    "RedeliverLater",
    "StateError",
    "StateFromNewerRelease",
    "StateTooLarge",
    "StateUnavailable",
    "TokenError",
    "UsageError",
    "UserBusy",
]


class StateError(Exception):
    """Base class of every error raised by vimbiso-state."""


class RedeliverLater(StateError):
    """Nothing was stored, and the same message is expected to succeed later: answer the
    webhook with a non-2xx status so that WhatsApp delivers it again."""


class UsageError(StateError):
    """The bot's own mistake: the call itself is wrong, so a redelivery fails the same way.
    Nothing was stored."""


class InvalidPhoneNumber(UsageError, ValueError):
    """The text given as a phone number is not an E.164 number."""


class InvalidInput(UsageError, ValueError):
    """A value passed by the caller is malformed (an option, a form name, a message id...)."""


class ConcurrencyConflict(RedeliverLater):
    """A reset (or a failover) took the user while this write ran; the change was not stored."""


class StateUnavailable(RedeliverLater):
    """The state backend cannot be reached or did not answer in time; nothing was stored."""


class UserBusy(RedeliverLater):
    """Another message of this user is still being handled; this one waited and gave up.

    Nothing was read or stored: answer the webhook with a non-2xx status so that WhatsApp
    delivers the message again a little later.
    """


class CalledInsideOwnMessage(UsageError):
    """A call for a user was made inside that user's own ``state.message`` block, by the
    block's thread or task: it would wait for the block to end, that is for itself. A bug in
    the bot, not a busy user: nothing was read or stored by the call. Inside the block, change
    ``msg.conversation`` and use the ``msg`` methods; the block stores them when it ends."""


class LeaseLost(RedeliverLater):
    """This message's handler outlived its lease, or the user was reset meanwhile: nothing
    it changed was stored, and the message id stays unhandled so a redelivery runs afresh."""


class EffectInDoubt(StateError):
    """An effect of this intent was started before and its outcome is unknown (the process
    died, or the call failed or timed out midway): it does not run again. Find out what
    happened (for a Credex offer, the member's dashboard) and record it with ``msg.settle``;
    until then every message that reaches the effect gets this error."""

    def __init__(self, name: str, key: str | None = None) -> None:
        self.name = name
        self.key = key
        intent = "" if key is None else f" for {key!r}"
        super().__init__(
            f"effect {name!r}{intent} was started before and its outcome is unknown: find out "
            "whether it happened, record it with msg.settle, and do not run it again until then"
        )


class StateFromNewerRelease(StateUnavailable):
    """The user's stored state was written by a newer release of vimbiso-state, which this
    one cannot read: nothing was read or changed. Seen during a rolling deploy; answer the
    webhook with a non-2xx status so that WhatsApp delivers the message again (to an upgraded
    worker)."""


class StateTooLarge(UsageError):
    """A conversation or form is larger than the documented limit; nothing was stored."""


class NoActiveForm(StateError):
    """There is no form in progress for this user (never started, completed or expired)."""


class FormIncomplete(StateError):
    """The form is missing required values."""

    def __init__(self, name: str, missing: Sequence[str]) -> None:
        self.name = name
        self.missing = list(missing)
        super().__init__(f"form {name!r} is missing: {', '.join(self.missing)}")


class FormValidationError(StateError, ValueError):
    """One or more submitted form values are invalid; none of them was stored."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{field}: {message}" for field, message in self.errors.items())
        super().__init__(detail)


class TokenError(StateError):
    """A stored token cannot be used (wrong key, tampered, or bound to another user)."""


class ConfigurationError(UsageError, ValueError):
    """The library's configuration is invalid or incomplete."""
