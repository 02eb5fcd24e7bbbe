"""The errors bot code catches. ``StateError`` is the base of all of them."""

from vimbiso_state.domain.errors import (
    ConcurrencyConflict,
    ConfigurationError,
    FormIncomplete,
    FormValidationError,
    InvalidInput,
    InvalidPhoneNumber,
    NoActiveForm,
    StateError,
    StateTooLarge,
    StateUnavailable,
    TokenError,
)

__all__ = [
    "ConcurrencyConflict",
    "ConfigurationError",
    "FormIncomplete",
    "FormValidationError",
    "InvalidInput",
    "InvalidPhoneNumber",
    "NoActiveForm",
    "StateError",
    "StateTooLarge",
    "StateUnavailable",
    "TokenError",
]
