"""Every kind of token without a usable JWT ``exp`` lives for token_ttl, once, on the memory
backend: reading the exp is the domain's (domain/token.py), and the contract suite
(tests/contract/test_data_fidelity.py) runs one such token and the JWTs with an exp on every
backend."""

from __future__ import annotations

import base64

import pytest
from fakes import PHONE, FakeClock, jwt

from vimbiso_state.services.state_service import StateService


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("opaque-session-token", id="not-a-jwt"),
        pytest.param(jwt({"sub": "mem-1"}), id="jwt-without-exp"),
        pytest.param(jwt({"exp": "tomorrow"}), id="exp-not-a-number"),
        pytest.param(jwt({"exp": True}), id="exp-a-bool"),
        pytest.param(jwt({"exp": 10**30}), id="exp-beyond-any-date"),
        pytest.param("a.!!!not-base64!!!.c", id="payload-not-base64"),
        pytest.param(
            "a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c", id="not-an-object"
        ),
    ],
)
def test_a_token_without_a_usable_exp_lives_for_token_ttl(
    state: StateService, clock: FakeClock, token: str
) -> None:
    state.save_token(PHONE, token)
    clock.advance(minutes=29, seconds=59)
    assert state.token(PHONE) == token
    clock.advance(seconds=1)
    assert state.token(PHONE) is None
