"""The errors bot code catches (the same names as ``vimbiso_state``'s): ``StateError`` is the
base of all of them; ``RedeliverLater`` and ``UsageError`` group them for a webhook."""

from vimbiso_state.domain.errors import *  # noqa: F403
from vimbiso_state.domain.errors import __all__ as __all__
