"""The errors bot code catches. ``StateError`` is the base of all of them."""

from vimbiso_state.domain.errors import (
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
