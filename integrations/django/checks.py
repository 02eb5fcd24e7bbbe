"""System checks: ``manage.py check`` fails on a bad configuration, with the library's ids.

vimbiso_state.E001  a Redis backend without STATE_TOKEN_KEYS (token_keys)
vimbiso_state.E002  an invalid setting or token key (the ConfigurationError's message)
vimbiso_state.W001  no backend chosen: memory, each worker with its own state
With ``--deploy`` (the only checks that contact the server):
vimbiso_state.E003  the store cannot serve now (state.health() raised StateUnavailable)
vimbiso_state.W002  the memory backend (state inside one process, lost on restart)
vimbiso_state.W003  a maxmemory-policy that lets Redis evict conversation state
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage, Error

from vimbiso_state.adapters.token_cipher import FernetTokenCipher
from vimbiso_state.domain.errors import ConfigurationError, StateUnavailable
from vimbiso_state.integrations.django.service import SETTING, configured_settings, container
from vimbiso_state.services.config import ENVIRONMENT, environment_value

TAG = "vimbiso_state"
KEYGEN_HINT = "vimbiso-state keygen prints a key; keep it secret, like SECRET_KEY"


def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """What the configuration says, without contacting any server."""
    where = f"settings.{SETTING}" if hasattr(settings, SETTING) else "the environment"
    try:
        config = configured_settings()
        if config.token_keys:
            FernetTokenCipher(config.token_keys)  # a malformed key is refused here
    except ConfigurationError as exc:
        return [Error(f"{where}: {exc}", id="vimbiso_state.E002")]
    if config.backend != "memory" and not config.token_keys:
        return [
            Error(
                f"the {config.backend} backend stores auth tokens encrypted and {where} gives "
                "no key: every message would fail",
                hint=f"set STATE_TOKEN_KEYS (or token_keys in settings.{SETTING}); " + KEYGEN_HINT,
                id="vimbiso_state.E001",
            )
        ]
    if config.backend == "memory" and not _backend_chosen():
        return [
            checks.Warning(
                f"no state backend chosen in {where}: conversation state is kept in each "
                "process's memory, lost on restart and not shared between gunicorn workers",
                hint="set REDIS_STATE_URL (or STATE_BACKEND=redis), or STATE_BACKEND=memory "
                "to mean it",
                id="vimbiso_state.W001",
            )
        ]
    return []


def check_store(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: whether the configured store can serve now, and what it risks."""
    try:
        config = configured_settings()
        facts = container().health().health()
    except ConfigurationError:
        return []  # check_configuration reports it
    except StateUnavailable as exc:
        return [Error(f"the state store cannot serve: {exc}", id="vimbiso_state.E003")]
    if config.backend == "memory":
        return [
            checks.Warning(
                "the memory backend keeps conversation state inside one process: lost on "
                "restart, and each gunicorn worker has its own",
                hint="use Redis in production: set REDIS_STATE_URL and STATE_TOKEN_KEYS",
                id="vimbiso_state.W002",
            )
        ]
    if facts.evicts_state:
        return [
            checks.Warning(
                f"maxmemory-policy {facts.maxmemory_policy} lets Redis evict conversation "
                "state when memory is full (members lose their profile or form)",
                hint="run `vimbiso-state doctor` for the alternatives (noeviction, "
                "volatile-ttl) and their costs",
                id="vimbiso_state.W003",
            )
        ]
    return []


def _backend_chosen() -> bool:
    """Whether the configuration names a backend or a Redis URL (which means redis)."""
    values = getattr(settings, SETTING, None)
    if isinstance(values, Mapping):
        return any(values.get(name) is not None for name in ("backend", "redis_url"))
    return any(
        environment_value(ENVIRONMENT[name], os.environ) is not None
        for name in ("backend", "redis_url")
    )
