"""What every command shares: exit codes, one-line errors, configuration and the backend."""

from __future__ import annotations

import dataclasses
import os
from urllib.parse import urlsplit, urlunsplit

from cryptography.fernet import Fernet
from redis.connection import parse_url

from vimbiso_state.services.config import Settings, environment_value
from vimbiso_state.services.container import Container

EXIT_OK = 0
EXIT_FAIL = 1  # the command ran and found a failure (doctor), or an internal error
EXIT_INPUT = 2  # bad input: usage, phone number, URL, configuration
EXIT_UNAVAILABLE = 3  # the backend cannot be reached or did not answer in time


class CliError(Exception):
    """A message for one line on stderr, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


def one_line(error: BaseException) -> str:
    """An error message on one line (redis-py and others sometimes span several)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def redact(url: str) -> str:
    """The URL with any password replaced by ***, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # The host and port as written: a URL being reported as bad may have a port that
    # urlsplit refuses to read, and the report must still hide the password.
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def is_redis(settings: Settings) -> bool:
    return settings.backend != "memory"


def check_url(url: str) -> None:
    """Refuse a URL redis-py would reject later or silently misread (a database name)."""
    try:
        Settings(backend="redis", redis_url=url)
        parse_url(url)  # type: ignore[no-untyped-call]
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise CliError(f"bad Redis URL {redact(url)}: {one_line(exc)}") from exc
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise CliError(f"bad Redis URL {redact(url)}: the database must be a number, like /0")


def settings(redis_url: str | None) -> Settings:
    """Settings.from_env, as the library reads them; ``--redis URL`` selects Redis at URL.
    With no backend configured the commands run on the memory backend on purpose (and say
    what that means): the library's warning about an unchosen backend is not for them."""
    environ = dict(os.environ)
    if not environment_value("STATE_BACKEND") and not environment_value("REDIS_STATE_URL"):
        environ["STATE_BACKEND"] = "memory"
    configured = Settings.from_env(environ)
    if redis_url is not None:
        check_url(redis_url)
        backend = configured.backend if is_redis(configured) else "redis"
        configured = dataclasses.replace(configured, backend=backend, redis_url=redis_url)
    elif is_redis(configured):
        check_url(configured.redis_url)
    return configured


def container(config: Settings, *, throwaway_key: bool = False) -> tuple[Container, list[str]]:
    """The container for ``config``; notes say what the command had to assume."""
    notes: list[str] = []
    overrides: dict[str, object] = {}
    if throwaway_key and is_redis(config) and not config.token_keys:
        # A demo may invent a key; a real deployment must configure one (see keygen).
        overrides["token_keys"] = (Fernet.generate_key().decode(),)
        notes.append("no STATE_TOKEN_KEYS set: the demo uses a throwaway token key")
    return Container.from_settings(config, **overrides), notes


def describe(config: Settings) -> str:
    """``redis (redis://host:6380/0)`` or ``memory (in-memory)``, password hidden."""
    where = redact(config.redis_url) if is_redis(config) else "in-memory"
    return f"{config.backend} ({where})"


def check_reachable(built: Container) -> None:
    """PING the configured Redis now (StateUnavailable), not at the user's first message."""
    if is_redis(built.settings()):
        client = built.redis_client()
        built.redis_retry().call(client.ping)


def close(built: Container) -> None:
    """Close the Redis connections if any were opened."""
    if is_redis(built.settings()):
        built.redis_client().close()
