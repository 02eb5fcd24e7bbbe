"""The project's one container, built once from the Django settings or the environment."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from django.conf import settings

from vimbiso_state.domain.errors import ConfigurationError
from vimbiso_state.services.async_state_service import AsyncStateService
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

SETTING = "VIMBISO_STATE"

_lock = threading.Lock()
_built: Container | None = None


def configured_settings() -> Settings:
    """``settings.VIMBISO_STATE`` when the project defines it, else the environment
    (STATE_BACKEND, REDIS_STATE_URL, STATE_*); ConfigurationError when invalid."""
    values = getattr(settings, SETTING, None)
    if values is None:
        return Settings.from_env()
    if not isinstance(values, Mapping):
        raise ConfigurationError(
            f"settings.{SETTING} must be a dict of vimbiso-state settings (as "
            f"container.config.from_dict takes), not a {type(values).__name__}"
        )
    return Settings.from_mapping(values)


def container() -> Container:
    """The project's container, built on first use (every thread and request shares it)."""
    global _built
    with _lock:
        if _built is None:
            _built = Container.from_settings(configured_settings())
        return _built


def state_service() -> StateService:
    """The project's StateService; ConfigurationError while the configuration is bad."""
    return container().state_service()


def async_state_service() -> AsyncStateService:
    """The project's AsyncStateService (the same store as state_service's)."""
    return container().async_state_service()


def close() -> None:
    """Close the container's Redis connections and forget it: the next call builds it again
    from the settings as they are then (at shutdown, or when a test changes them)."""
    global _built
    with _lock:
        built, _built = _built, None
    if built is not None:
        built.close()
