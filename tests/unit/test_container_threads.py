"""A container's singletons are built once even when threads ask for them at the same moment
(gunicorn's gthread workers, a Django app's first requests): one service, one client pool."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from vimbiso_state import Container, Settings


def _first_calls_at_once(container: Container, threads: int = 8) -> set[int]:
    start = threading.Barrier(threads)
    built: list[int] = []

    def first_call() -> None:
        start.wait()
        built.append(id(container.state_service()))

    workers = [threading.Thread(target=first_call) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return set(built)


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads switch at every chance, as on a busy machine."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("switching_often")
def test_threads_asking_first_at_once_share_one_service() -> None:
    for _ in range(50):  # a race: give it many chances to show
        container = Container.from_settings(Settings(backend="memory"))
        assert len(_first_calls_at_once(container)) == 1
