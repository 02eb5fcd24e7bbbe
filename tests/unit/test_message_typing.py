"""What a type checker makes of the message API as the docs use it: bot code is typed too,
and an effect that mypy refuses is an API that cannot be used as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

SNIPPET = """
from vimbiso_state import AsyncStateService, StateService


async def fetch() -> dict[str, int]:
    return {"a": 1}


def plain() -> list[str]:
    return ["x"]


async def handle_async(state: AsyncStateService) -> None:
    async with state.message("+263771234567", "wamid.1") as msg:
        reveal_type(await msg.effect("coroutine_function", fetch))
        reveal_type(await msg.effect("coroutine_lambda", lambda: fetch()))
        reveal_type(await msg.effect("plain", plain))


def handle(state: StateService) -> None:
    with state.message("+263771234567", "wamid.2") as msg:
        reveal_type(msg.effect("plain", plain))
"""


@pytest.mark.slow
def test_effects_are_typed_by_what_their_function_returns(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "bot_code.py"
    snippet.write_text(SNIPPET, encoding="utf-8")
    out, err, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    revealed = [
        line.split("Revealed type is ")[1] for line in out.splitlines() if "Revealed" in line
    ]
    assert revealed == [
        '"dict[str, int]"',
        '"dict[str, int]"',
        '"list[str]"',
        '"list[str]"',
    ], out
    assert status == 0, out + err
