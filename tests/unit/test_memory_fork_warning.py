"""A memory backend copied into a forked worker says so: its state is no longer shared.

gunicorn --preload, Celery prefork and multiprocessing's fork build the store in the parent
and use it in each child, where every worker then has its own copy. The child's log comes
back to the test through a file, as a worker's log would reach its server's.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vimbiso_state import Container, StateService

PHONE = "+263771234567"
NOT_SHARED = "state is not shared between workers"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _memory_service() -> StateService:
    container = Container()
    container.config.from_dict({"backend": "memory"})
    return container.state_service()


def _in_child(log_file: Path, work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child whose vimbiso_state log goes to ``log_file``; the
    child's exit status (0 when ``work`` returned)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            logger = logging.getLogger("vimbiso_state")
            logger.handlers = [logging.FileHandler(log_file)]
            logger.setLevel(logging.WARNING)
            logger.propagate = False
            work()
            status = 0
        finally:
            sys.stdout.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_store_built_before_a_fork_warns_once_in_the_child(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vimbiso_state")
    state = _memory_service()
    state.start(PHONE)  # used in the parent: nothing to say
    log_file = tmp_path / "child.log"

    def worker() -> None:
        state.start(PHONE)  # begin, load
        state.navigate(PHONE, "handle_action_offer_credex")
        with state.message(PHONE, "wamid.1", "hi") as msg:
            msg.conversation.navigate("handle_action_menu")
        state.start(PHONE)

    assert _in_child(log_file, worker) == 0
    lines = log_file.read_text().splitlines()
    assert [line for line in lines if NOT_SHARED in line] == lines
    assert len(lines) == 1, lines  # once, however many calls the child makes
    assert f"built in process {os.getpid()}" in lines[0]
    # The parent, which built the store, never warns.
    state.start(PHONE)
    assert not [r for r in caplog.records if NOT_SHARED in r.getMessage()]


def test_a_store_built_in_the_child_does_not_warn(tmp_path: Path) -> None:
    log_file = tmp_path / "child.log"

    def worker() -> None:
        state = _memory_service()
        state.start(PHONE)
        state.navigate(PHONE, "handle_action_offer_credex")

    assert _in_child(log_file, worker) == 0
    assert log_file.read_text() == ""


def test_a_grandchild_warns_again_for_its_own_copy(tmp_path: Path) -> None:
    state = _memory_service()
    child_log, grandchild_log = tmp_path / "child.log", tmp_path / "grandchild.log"

    def grandchild() -> None:
        state.start(PHONE)

    def child() -> None:
        state.start(PHONE)
        if _in_child(grandchild_log, grandchild) != 0:
            raise RuntimeError("the grandchild failed")

    assert _in_child(child_log, child) == 0
    assert child_log.read_text().count(NOT_SHARED) == 1
    assert grandchild_log.read_text().count(NOT_SHARED) == 1
