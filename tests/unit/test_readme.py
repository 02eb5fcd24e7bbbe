"""The README's bot-code example runs as written and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _example(after: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(after) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python example after {after!r}"
    return match.group(1)


def test_the_bot_code_example_runs_a_whole_offer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_BACKEND", "memory")
    scope: dict[str, Any] = {}
    exec(compile(_example("## From bot code"), "README.md", "exec"), scope)
    reply = scope["on_whatsapp_message"]
    phone = "+263 77 555 0101"
    assert reply(phone, "wamid.1", "hi") == "1. Offer credex  2. Accept offers"
    assert reply(phone, "wamid.2", "1") == "How much do you want to offer?"
    assert reply(phone, "wamid.3", "a lot").startswith("Sorry, amount:")
    assert reply(phone, "wamid.4", "USD 25") == "Now the recipient?"
    assert reply(phone, "wamid.5", "bob_store") == "Offer 25 USD to bob_store?"
    assert scope["state"].start(phone).form is None  # completed and closed


def test_the_configuration_guide_examples_run_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    from vimbiso_state.services.config import ENVIRONMENT

    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    guide = README.parent / "docs" / "configuration.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(guide), "exec"), {})  # its asserts say what it promises
