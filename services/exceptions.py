"""The errors bot code catches. ``StateError`` is the base of all of them."""

from vimbiso_state.domain.errors import (
    CalledInsideOwnMessage,
    ConcurrencyConflict,
    ConfigurationError,
    EffectInDoubt,
    FormIncomplete,
    FormValidationError,
    InvalidInput,
    InvalidPhoneNumber,
    LeaseLost,
    NoActiveForm,
    StateError,
    StateFromNewerRelease,
    StateTooLarge,
    StateUnavailable,
    TokenError,
    UserBusy,
)

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
    "StateError",
    "StateFromNewerRelease",
    "StateTooLarge",
    "StateUnavailable",
    "TokenError",
    "UserBusy",
]
