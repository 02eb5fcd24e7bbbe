"""One environment-variable scheme: REDIS_STATE_URL, and STATE_* for everything else."""

from __future__ import annotations

import warnings

import pytest

from vimbiso_state.services.config import (
    ENVIRONMENT,
    RENAMED_ENVIRONMENT,
    Settings,
    environment_value,
)


def test_every_variable_is_redis_state_url_or_starts_with_state() -> None:
    names = [*ENVIRONMENT.values(), *RENAMED_ENVIRONMENT]
    assert all(name == "REDIS_STATE_URL" or name.startswith("STATE_") for name in names)
    # The cache Redis's name is never one of ours.
    assert "REDIS_URL" not in names and "REDIS_URL" not in RENAMED_ENVIRONMENT.values()


def test_the_current_name_is_read_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert environment_value("STATE_DEBUG", {"STATE_DEBUG": "1"}) == "1"
        assert environment_value("STATE_DEBUG", {"STATE_DEBUG": ""}) is None
        assert environment_value("STATE_DEBUG", {}) is None


def test_an_old_name_is_read_with_a_deprecation_warning() -> None:
    deprecated = "VIMBISO_STATE_DEBUG is deprecated: set STATE_DEBUG"
    with pytest.warns(DeprecationWarning, match=deprecated):
        assert environment_value("STATE_DEBUG", {"VIMBISO_STATE_DEBUG": "1"}) == "1"


def test_the_current_name_wins_over_the_old_one_silently() -> None:
    both = {"STATE_DEBUG": "new", "VIMBISO_STATE_DEBUG": "old"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert environment_value("STATE_DEBUG", both) == "new"


def test_settings_from_env_reads_every_setting_by_its_variable() -> None:
    environ = {
        "STATE_BACKEND": "redis",
        "REDIS_STATE_URL": "redis://10.0.0.5:6380/2",
        "STATE_SESSION_TTL": "90.5",
        "STATE_RETENTION_TTL": "7200",
        "REDIS_URL": "redis://cache:6379/0",  # the cache's: never read
    }
    settings = Settings.from_env(environ)
    assert settings.backend == "redis"
    assert settings.redis_url == "redis://10.0.0.5:6380/2"
    assert settings.session_ttl == 90.5 and settings.state_ttl == 7200
