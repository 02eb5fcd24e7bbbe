"""docs/adopting.md's change, applied to the double of the bot (tests/vimbiso_bot_double.py).

Each python block is run as if pasted where the guide says (the globals of the bot's module
it names), and each diff's added lines become the code they replace: the view's tail and
the createCredex component's call to Credex. Nothing else of the guide's code is replaced
but the service it builds from the environment, which a test points at its own backend.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vimbiso_bot_double import BotApp, CreateCredexApiCall, FakeCredex, GraphApi

from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "adopting.md"
VIEWS = "core.api.views"
CREATE_CREDEX = "core.components.api.create_credex_api_call"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)


def block_for(kind: str, path: str) -> str:
    """The one block of ``kind`` that is about the bot's file ``path``."""
    found = [b for b in blocks(kind) if path in b.splitlines()[0]]
    assert len(found) == 1, f"docs/adopting.md: {len(found)} {kind} blocks for {path}"
    return found[0]


def added_lines(diff: str) -> str:
    lines = [line[1:] for line in diff.splitlines() if line.startswith("+")]
    return textwrap.dedent("\n".join(lines))


def _function(signature: str, body: str) -> str:
    return f"def {signature}:\n{textwrap.indent(body, '    ')}\n"


@contextmanager
def bot_on_the_library(
    state: StateService, container: Container, credex: FakeCredex, graph: GraphApi | None = None
) -> Iterator[BotApp]:
    """The double with the guide's change made; its service is ``state`` of ``container``."""
    app = BotApp(credex, graph)
    original = CreateCredexApiCall.call_credex
    with app.installed():
        app.paste(CREATE_CREDEX, block_for("python", "create_credex_api_call.py"), str(GUIDE))
        component = _function(
            "call_credex(self, url, payload)",
            added_lines(block_for("diff", "class CreateCredexApiCall"))
            + "\nreturn response_data, error",
        )
        app.paste(CREATE_CREDEX, component, str(GUIDE))
        CreateCredexApiCall.call_credex = app.modules[CREATE_CREDEX].call_credex  # type: ignore[method-assign]
        app.paste(VIEWS, block_for("python", "core/api/views.py"), str(GUIDE))
        tail = _function(
            "handle_after_channel(request, channel_type, channel_id, is_mock_testing)",
            added_lines(block_for("diff", "class CredexCloudApiWebhook")),
        )
        app.paste(VIEWS, tail, str(GUIDE))
        views: Any = app.modules[VIEWS]
        views.state, views.container = (
            state,
            container,
        )  # the process's service, on this test's backend
        try:
            yield app
        finally:
            CreateCredexApiCall.call_credex = original  # type: ignore[method-assign]
