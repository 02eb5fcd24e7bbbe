"""The app for INSTALLED_APPS: registers the system checks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed

from vimbiso_state.integrations.django import service
from vimbiso_state.integrations.django.checks import TAG, check_configuration, check_store


class VimbisoStateConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "vimbiso_state.integrations.django"
    label = "vimbiso_state"
    verbose_name = "vimbiso-state"

    def ready(self) -> None:
        checks.register(check_configuration, TAG)
        # Only `check --deploy` asks the server: plain `check` runs before every migrate
        # and collectstatic, on machines (CI, image builds) that have no state Redis.
        checks.register(check_store, TAG, deploy=True)
        setting_changed.connect(_forget_on_change, dispatch_uid="vimbiso_state.settings")


def _forget_on_change(*, setting: str, **kwargs: Any) -> None:
    # override_settings(VIMBISO_STATE=...) in tests: the next call builds from the new dict.
    if setting == service.SETTING:
        service.close()
