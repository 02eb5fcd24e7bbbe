"""The README's and the configuration guide's code runs as written and does what its comments
say (on the memory backend; tests/integration/test_docs_on_redis.py runs it on Redis)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from doc_examples import (
    GUIDE,
    README,
    ROOT,
    block_after,
    configure,
    python_blocks,
    readme_offer,
    readme_one_call,
    run_block,
)

# Every python block of the docs, by file: each is run by a test (README and the guides
# here and in test_webhook_guide, cluster.md in tests/cluster, adopting.md in
# tests/contract/test_vimbiso_bot.py and tests/integration/test_import.py, observability.md
# in test_observability_docs). A block that is not meant to be pasted (output, a fragment) is
# a ```text or ```sh block instead.
PYTHON_BLOCKS = {
    "README.md": 1,
    "docs/adopting.md": 4,
    "docs/webhook-guide.md": 5,
    "docs/configuration.md": 2,
    "docs/django.md": 4,
    "docs/expirations.md": 2,
    "docs/cluster.md": 1,
    "docs/observability.md": 2,
}


def test_every_python_block_of_the_docs_is_one_that_a_test_runs() -> None:
    found = {
        str(path.relative_to(ROOT)): len(python_blocks(path))
        for path in [README, *sorted((ROOT / "docs").glob("*.md"))]
    }
    assert {name: count for name, count in found.items() if count} == PYTHON_BLOCKS


def test_the_bot_code_example_handles_a_redelivered_menu_choice_and_an_offer_in_doubt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, "memory")
    readme_offer(run_block(block_after(README, "## From bot code"), "README.md"))


def test_the_guides_one_call_example_applies_a_choice_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, "memory")
    readme_one_call(run_block(block_after(GUIDE, "## Simple bots"), str(GUIDE)))


def test_the_configuration_guide_examples_run_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    from vimbiso_state.services.config import ENVIRONMENT

    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    guide = README.parent / "docs" / "configuration.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(guide), "exec"), {})  # its asserts say what it promises


def test_readme_layout_is_kept() -> None:
    text = Path(README).read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings[:2] == ["Two commands", "Command line"]
    assert "From bot code" in headings and "Configuration" in headings


def test_the_acl_in_the_security_guide_is_the_grant_the_acl_tests_prove() -> None:
    """docs/security.md's ACL line grants exactly the key patterns and commands that
    tests/integration/test_security.py gives its ACL user (and proves each one needed)."""
    from vimbiso_state.adapters.redis.keys import KeySchema

    source = (ROOT / "tests" / "integration" / "test_security.py").read_text(encoding="utf-8")
    (granted,) = [
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["LIBRARY_COMMANDS"]
    ]
    guide = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^ACL SETUSER vimbiso .*$", guide, re.MULTILINE)
    words = line.split()
    assert [w[1:] for w in words if w.startswith("~")] == list(KeySchema.patterns)
    assert [w[1:] for w in words if w.startswith("+")] == [*granted, "client|setinfo"]
    assert words[:5] == ["ACL", "SETUSER", "vimbiso", "on", ">CHANGE-THIS-PASSWORD"]
    assert {"resetkeys", "resetchannels", "-@all"} <= set(words)
