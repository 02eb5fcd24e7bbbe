"""Configuration: one validated Settings object, from a dict or from the environment."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from vimbiso_state.domain.errors import ConfigurationError, InvalidInput
from vimbiso_state.domain.phone import check_region
from vimbiso_state.domain.profile import AccountSelection, account_selection
from vimbiso_state.domain.timeouts import Timeouts

BACKENDS = ("memory", "redis", "redis-cluster")
log = logging.getLogger(__name__)

# Environment variable for each setting. REDIS_STATE_URL is deliberately not REDIS_URL: the
# state Redis is its own instance, separate from the cache's.
ENVIRONMENT = {
    "backend": "STATE_BACKEND",
    "redis_url": "REDIS_STATE_URL",
    "session_ttl": "STATE_SESSION_TTL",
    "token_ttl": "STATE_TOKEN_TTL",
    "form_ttl": "STATE_FORM_TTL",
    "state_ttl": "STATE_RETENTION_TTL",
    "dedupe_ttl": "STATE_DEDUPE_TTL",
    "lease_ttl": "STATE_LEASE_TTL",
    "lease_wait": "STATE_LEASE_WAIT",
    "max_retries": "STATE_MAX_RETRIES",
    "socket_timeout": "STATE_SOCKET_TIMEOUT",
    "connect_timeout": "STATE_CONNECT_TIMEOUT",
    "redis_retries": "STATE_REDIS_RETRIES",
    "token_keys": "STATE_TOKEN_KEYS",
    "phone_region": "STATE_PHONE_REGION",
    "default_account": "STATE_DEFAULT_ACCOUNT",
    "telemetry_salt": "STATE_TELEMETRY_SALT",
}

# One scheme: REDIS_STATE_URL, and STATE_* for everything else. A renamed variable's old name
# is still read, with a DeprecationWarning, while the new one is unset.
RENAMED_ENVIRONMENT = {"STATE_DEBUG": "VIMBISO_STATE_DEBUG"}


def environment_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Variable ``name``, else its deprecated old name (with a DeprecationWarning); None when
    neither is set. The empty string counts as unset."""
    env = os.environ if environ is None else environ
    value = env.get(name, "")
    if value != "":
        return value
    old = RENAMED_ENVIRONMENT.get(name)
    if old is None or env.get(old, "") == "":
        return None
    warnings.warn(
        f"the environment variable {old} is deprecated: set {name} instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return env[old]


_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Settings:
    """Every knob, with its default. Durations are seconds."""

    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The timeouts' defaults are the domain's (Timeouts), written once.
    session_ttl: float = _TIMEOUTS.session.total_seconds()
    token_ttl: float = _TIMEOUTS.token.total_seconds()
    form_ttl: float = _TIMEOUTS.form.total_seconds()
    state_ttl: float = _TIMEOUTS.state.total_seconds()
    dedupe_ttl: float = _TIMEOUTS.dedupe.total_seconds()
    lease_ttl: float = _TIMEOUTS.lease.total_seconds()
    lease_wait: float = _TIMEOUTS.lease_wait.total_seconds()
    max_retries: int = 8
    socket_timeout: float = 0.5
    connect_timeout: float = 0.25
    redis_retries: int = 2
    # Fernet keys, newest first; never shown in a repr.
    token_keys: tuple[str, ...] = field(default=(), repr=False)
    # The region whose national numbers (077 123 4567 in ZW) are understood; None: only
    # international numbers.
    phone_region: str | None = None
    # Which account set_profile makes current when none is selected yet (AccountSelection).
    default_account: str = AccountSelection.SINGLE.value
    # Keys the phone pseudonym in traces (docs/observability.md); a secret, never shown.
    telemetry_salt: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigurationError(
                f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("redis_url must start with redis://, rediss:// or unix://")
        if self.backend == "redis-cluster":
            _check_cluster_url(self.redis_url)
        if self.max_retries < 0 or self.redis_retries < 0:
            raise ConfigurationError("retry counts cannot be negative")
        if self.socket_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigurationError("timeouts must be positive")
        self.timeouts  # noqa: B018 - validates the durations now rather than at first use
        # Normalised (ZW, single) so that every reader of the settings sees one spelling.
        object.__setattr__(self, "phone_region", check_region(self.phone_region))
        try:
            selection = account_selection(self.default_account)
        except InvalidInput as exc:
            raise ConfigurationError(f"default_account: {exc}") from None
        object.__setattr__(self, "default_account", selection.value)

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: the URL's password and the token keys
        # (repr=False) never appear.
        shown = []
        for f in fields(self):
            if f.repr:
                value = getattr(self, f.name)
                if f.name == "redis_url":
                    value = redact_url(value)
                shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def account_selection(self) -> AccountSelection:
        return AccountSelection(self.default_account)

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            session=timedelta(seconds=self.session_ttl),
            token=timedelta(seconds=self.token_ttl),
            form=timedelta(seconds=self.form_ttl),
            state=timedelta(seconds=self.state_ttl),
            dedupe=timedelta(seconds=self.dedupe_ttl),
            lease=timedelta(seconds=self.lease_ttl),
            lease_wait=timedelta(seconds=self.lease_wait),
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Settings:
        """Build from a dict such as ``container.config``; unknown keys are an error.

        Without a ``backend``, a ``redis_url`` means redis; with neither, memory (logged as a
        WARNING once per process: every worker would keep its own state)."""
        known = {f.name: f for f in fields(cls)}
        given = {k: v for k, v in (values or {}).items() if v is not None}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}")
        if "backend" not in given:
            given["backend"] = "redis" if "redis_url" in given else "memory"
            if given["backend"] == "memory":
                _warn_implicit_memory()
        converted: dict[str, Any] = {}
        for name, value in given.items():
            converted[name] = _convert(name, known[name].type, value)
        return cls(**converted)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.from_mapping(
            {name: environment_value(var, environ) for name, var in ENVIRONMENT.items()}
        )

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


IMPLICIT_MEMORY_WARNING = (
    "no state backend chosen (STATE_BACKEND and REDIS_STATE_URL unset): conversation state "
    "is kept in this process's memory, lost on restart and not shared between workers. Set "
    "REDIS_STATE_URL (or STATE_BACKEND=redis), or STATE_BACKEND=memory to mean it"
)
# The process that logged the warning: a forked child has its own pid and warns again.
_implicit_memory_warned: int | None = None
_implicit_memory_lock = threading.Lock()


def _warn_implicit_memory() -> None:
    global _implicit_memory_warned
    with _implicit_memory_lock:
        if _implicit_memory_warned == os.getpid():
            return
        _implicit_memory_warned = os.getpid()
    log.warning(IMPLICIT_MEMORY_WARNING)


def _check_cluster_url(url: str) -> None:
    # A cluster is found from the TCP address of any node, and has only database 0.
    if url.startswith("unix://"):
        raise ConfigurationError("redis-cluster needs a redis:// or rediss:// node address")
    database = urlsplit(url).path.strip("/")
    if database not in ("", "0"):
        raise ConfigurationError("redis-cluster has only database 0 (redis_url path /0 or none)")


def _convert(name: str, kind: object, value: Any) -> Any:
    try:
        if kind == "tuple[str, ...]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"setting {name} has an invalid value") from exc


class Secret(str):
    """Text that is what it holds (``str()``, ``==``, hashing) but shows as ``'***'``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class RedactedUrl(str):
    """A URL that shows without its password (``redact_url``) and holds all of it."""

    __slots__ = ()

    def __repr__(self) -> str:
        # As plain text: redact_url hands back a URL without a password as it came, and
        # its repr would be this method again.
        return repr(redact_url(str(self)))


def masked(values: Any) -> Any:
    """``values`` (a configuration dict) with its secrets wrapped so that a repr hides them.

    ``container.config()`` lands in logs and debuggers like any dict; the values still work
    wherever text is expected.
    """
    if not isinstance(values, dict):
        return values
    shown = dict(values)
    keys = shown.get("token_keys")
    if isinstance(keys, str):
        shown["token_keys"] = Secret(keys)
    elif isinstance(keys, list | tuple):
        shown["token_keys"] = type(keys)(Secret(k) if isinstance(k, str) else k for k in keys)
    salt = shown.get("telemetry_salt")
    if isinstance(salt, str):
        shown["telemetry_salt"] = Secret(salt)
    url = shown.get("redis_url")
    if isinstance(url, str):
        shown["redis_url"] = RedactedUrl(url)
    return shown


def redact_url(url: str) -> str:
    """``url`` for display, with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
