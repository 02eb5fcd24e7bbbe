"""vimbiso-state: conversation state for the VimbisoPay WhatsApp bot.

The repository's top-level folders install as this package's subpackages
(``vimbiso_state.domain``, ``.adapters``, ``.services``, ``.entrypoints``); bot code needs only
the names re-exported here.
"""

from vimbiso_state.domain.conversation import Conversation, Direction, Notice
from vimbiso_state.domain.effects import InDoubt
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
    RedeliverLater,
    StateError,
    StateFromNewerRelease,
    StateTooLarge,
    StateUnavailable,
    TokenError,
    UsageError,
    UserBusy,
)
from vimbiso_state.domain.form import Form
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

__version__ = "0.3.0"

__all__ = [
    "AsyncStateService",
    "CalledInsideOwnMessage",
    "ConcurrencyConflict",
    "ConfigurationError",
    "Container",
    "Conversation",
    "Direction",
    "EffectInDoubt",
    "Form",
    "FormIncomplete",
    "FormValidationError",
    "InDoubt",
    "InvalidInput",
    "InvalidPhoneNumber",
    "LeaseLost",
    "NoActiveForm",
    "Notice",
    "RedeliverLater",
    "Settings",
    "StateError",
    "StateFromNewerRelease",
    "StateService",
    "StateTooLarge",
    "StateUnavailable",
    "TokenError",
    "UsageError",
    "UserBusy",
    "__version__",
]
