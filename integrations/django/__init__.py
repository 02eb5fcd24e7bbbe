"""Django integration: add ``"vimbiso_state.integrations.django"`` to INSTALLED_APPS.

The project's one service is built on first use from ``settings.VIMBISO_STATE`` (a dict as
``container.config.from_dict`` takes) or, without it, the STATE_* environment. System checks
report a bad configuration (``manage.py check``); ``views.health`` answers a health probe.
Needs the ``django`` extra: ``pip install "vimbiso-state[django]"``.
"""

try:
    import django  # noqa: F401 - only to say what is missing
except ImportError as exc:  # pragma: no cover - the test extra installs Django
    raise ImportError(
        'vimbiso_state.integrations.django needs Django: pip install "vimbiso-state[django]"'
    ) from exc

from vimbiso_state.integrations.django.service import (
    async_state_service,
    close,
    configured_settings,
    container,
    state_service,
)

__all__ = [
    "async_state_service",
    "close",
    "configured_settings",
    "container",
    "state_service",
]
