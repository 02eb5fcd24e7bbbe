"""docs/cluster.md's configuration block runs as written against a real cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from doc_examples import block_after, run_block
from fakes import TOKEN_KEY

from vimbiso_state.adapters.redis.connection import close

CLUSTER_DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def test_the_configuration_block_builds_a_working_service(
    cluster_url: str, new_phones: Callable[[int], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_STATE_URL", cluster_url)
    monkeypatch.setenv("STATE_TOKEN_KEYS", TOKEN_KEY)
    scope = run_block(block_after(CLUSTER_DOC, "## Configuration"), str(CLUSTER_DOC))
    state, container = scope["state"], scope["container"]
    try:
        (phone,) = new_phones(1)
        with state.message(phone, "wamid.cluster-doc", "hi") as msg:
            msg.conversation.navigate("handle_action_offer_credex")
            msg.save_token("jwt-on-the-cluster")
        assert state.start(phone).stage == "handle_action_offer_credex"
        assert state.token(phone) == "jwt-on-the-cluster"
    finally:
        close(container.redis_client())
