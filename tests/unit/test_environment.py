"""One environment-variable scheme: REDIS_STATE_URL, and STATE_* for everything else."""

from __future__ import annotations

import logging
import warnings

import pytest

from vimbiso_state import Container
from vimbiso_state.domain.timeouts import Timeouts
from vimbiso_state.services import config
from vimbiso_state.services.config import (
    ENVIRONMENT,
    IMPLICIT_MEMORY_WARNING,
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


@pytest.fixture
def implicit_memory_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> pytest.LogCaptureFixture:
    """caplog, in a process that has not warned about an implicit memory backend yet."""
    monkeypatch.setattr(config, "_implicit_memory_warned", None)
    caplog.set_level(logging.WARNING, logger="vimbiso_state")
    return caplog


def _implicit_memory(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == IMPLICIT_MEMORY_WARNING]


def test_redis_state_url_alone_selects_redis(
    implicit_memory_warnings: pytest.LogCaptureFixture,
) -> None:
    container = Container.from_env({"REDIS_STATE_URL": "redis://10.0.0.5:6380/2"})
    settings = container.settings()
    assert settings.backend == "redis" and settings.redis_url == "redis://10.0.0.5:6380/2"
    assert _implicit_memory(implicit_memory_warnings) == []


def test_an_explicit_backend_wins_over_the_url() -> None:
    url = "redis://10.0.0.5:6380/0"
    for backend in ("memory", "redis", "redis-cluster"):
        environ = {"STATE_BACKEND": backend, "REDIS_STATE_URL": url}
        assert Container.from_env(environ).settings().backend == backend


def test_a_url_in_a_dict_without_a_backend_selects_redis_too() -> None:
    container = Container()
    container.config.from_dict({"redis_url": "redis://10.0.0.5:6380/0"})
    assert container.settings().backend == "redis"
    assert Settings.from_mapping({"redis_url": "redis://10.0.0.5:6380/0"}).backend == "redis"


def test_memory_without_a_choice_warns_once_per_process(
    implicit_memory_warnings: pytest.LogCaptureFixture,
) -> None:
    assert Container.from_env({"STATE_SESSION_TTL": "90"}).settings().backend == "memory"
    (record,) = _implicit_memory(implicit_memory_warnings)
    assert record.levelno == logging.WARNING
    assert record.name == "vimbiso_state.services.config"
    assert "not shared between workers" in record.getMessage()
    # Every later container of the process stays quiet, from the environment or a dict.
    Container.from_env({}).state_service()
    Container().state_service()
    assert len(_implicit_memory(implicit_memory_warnings)) == 1


def test_an_explicit_memory_backend_does_not_warn(
    implicit_memory_warnings: pytest.LogCaptureFixture,
) -> None:
    Container.from_env({"STATE_BACKEND": "memory"}).state_service().start("+263771234567")
    container = Container()
    container.config.from_dict({"backend": "memory"})
    container.state_service()
    assert _implicit_memory(implicit_memory_warnings) == []


def test_the_settings_defaults_are_the_domains_timeouts() -> None:
    assert Settings().timeouts == Timeouts()
