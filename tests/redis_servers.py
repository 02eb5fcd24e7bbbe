"""Real Redis servers for the tests: a private redis-server process, or a testcontainers one.

Nothing here imports the library under test, so the fixtures work while it is being written.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

# The seed's server flags (DESIGN.md); the state store is tested under the policy it runs with.
SEED_FLAGS: tuple[str, ...] = (
    "--maxmemory",
    "256mb",
    "--maxmemory-policy",
    "allkeys-lru",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
)
REDIS_IMAGE = "redis:7.2"  # pinned: same major/minor as docker-compose.yml
START_TIMEOUT = 15.0  # seconds; AOF reload of test-sized data takes milliseconds
STOP_TIMEOUT = 10.0
_COMMON_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin", "/opt/homebrew/bin", "/snap/bin")


def find_redis_server() -> str | None:
    """Path of a redis-server binary: $REDIS_SERVER, then PATH, then the usual install places."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit and os.access(explicit, os.X_OK):
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    for directory in _COMMON_DIRS:
        candidate = os.path.join(directory, "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def docker_available(timeout: float = 3.0) -> bool:
    """True only if a Docker engine answers a ping (a docker CLI without an engine is not enough).

    Uses testcontainers' own client so DOCKER_HOST, docker contexts and
    ~/.testcontainers.properties are resolved exactly as a container start would resolve them.
    """
    try:
        from testcontainers.core.docker_client import DockerClient

        return bool(DockerClient(timeout=timeout).client.ping())
    except Exception:  # any failure (no SDK, no socket, engine down) means "no Docker"
        return False


def free_port() -> int:
    # The OS picks a port nobody is listening on; the tiny race before redis binds it is
    # acceptable for tests (start() reports a clear error if it happens).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A private redis-server on 127.0.0.1, in its own temporary directory, on a free port.

    Safe to kill, restart, reconfigure and flush: nothing else uses it. restart() reuses the
    port and directory, so the AOF written before a stop or a SIGKILL is reloaded.
    """

    def __init__(
        self,
        extra_args: tuple[str, ...] | list[str] = (),
        *,
        password: str | None = None,
        executable: str | None = None,
    ) -> None:
        exe = executable or find_redis_server()
        if exe is None:
            raise FileNotFoundError("redis-server not found (PATH, /usr/bin, /usr/local/bin)")
        self.executable = exe
        self.extra_args = list(extra_args)
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="vimbiso-redis-"))
        self.port = free_port()
        self.logfile = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client with short timeouts, so a dead server fails a test fast instead of hanging."""
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        return redis.Redis.from_url(self.url, **kwargs)

    def command_line(self) -> list[str]:
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.logfile),
            "--daemonize",
            "no",
            "--save",
            "",  # no RDB snapshots: persistence under test is the AOF alone
            *SEED_FLAGS,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it answers PING and has finished loading its AOF."""
        if self.running:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        self.proc = subprocess.Popen(
            self.command_line(),
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,  # the logfile holds the rest; stderr catches bad arguments
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        client = self.client(socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    self._fail("redis-server exited during start-up")
                try:
                    # PING answers LOADING (BusyLoadingError) until the AOF is replayed.
                    if client.ping() and client.info("persistence").get("loading") == 0:
                        return
                except redis.AuthenticationError:
                    return  # the server answers; auth is the test's business (ACL setups)
                except redis.RedisError as exc:
                    last_error = exc
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        self._fail(f"redis-server did not answer PING within {timeout:.0f}s ({last_error!r})")

    def _fail(self, what: str) -> None:
        stderr = b""
        if self.proc is not None and self.proc.poll() is not None and self.proc.stderr:
            stderr = self.proc.stderr.read()
        raise RuntimeError(
            f"{what}; port {self.port}, dir {self.dir}\n"
            f"command: {' '.join(self.command_line())}\n"
            f"stderr: {stderr.decode(errors='replace').strip()}\n"
            f"log tail:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log file)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Graceful stop: SIGTERM makes redis-server fsync the AOF and exit, like SHUTDOWN."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill9(self) -> None:
        """SIGKILL: a crash. Only what the AOF had fsynced survives (everysec: up to ~1 s lost)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop if still running, then start on the same port and dir (the AOF is reloaded)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisProcess(port={self.port}, dir={str(self.dir)!r}, running={self.running})"


class RedisContainerServer:
    """A testcontainers Redis (pinned image, seed flags) exposing .url and stop()."""

    def __init__(self, container: Any) -> None:
        self._container = container
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        self.url = f"redis://{host}:{port}/0"

    def stop(self) -> None:
        self._container.stop()

    close = stop

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_container(image: str = REDIS_IMAGE) -> RedisContainerServer:
    """Start Redis in Docker with the seed's flags; blocks until it answers PING."""
    try:  # newer testcontainers moved it here; the old path still works but warns
        from testcontainers.community.redis import RedisContainer
    except ImportError:
        from testcontainers.redis import RedisContainer

    container = RedisContainer(image).with_command(["redis-server", "--save", "", *SEED_FLAGS])
    try:
        container.start()  # RedisContainer's wait strategy pings until the server answers
        return RedisContainerServer(container)
    except BaseException:
        container.stop()  # do not leave a half-started container behind
        raise
