"""The package as pyproject.toml declares it, checked against the checkout: no build needed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _dependency(name: str) -> str:
    for requirement in _pyproject()["project"]["dependencies"]:
        if re.match(rf"{name}\b", requirement):
            return str(requirement)
    raise AssertionError(f"{name} is not a dependency")


def test_ci_runs_the_redis_suites_on_the_lowest_redis_py_the_package_accepts() -> None:
    floor = re.fullmatch(r"redis>=([\d.]+)", _dependency("redis"))
    assert floor, "redis-py: a lower bound and no upper one (its public API only)"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lowest = re.search(r'^LOWEST_REDIS="([\d.]+)"$', ci, re.MULTILINE)
    assert lowest, ".ci/run names the lowest redis-py it tests"
    assert lowest.group(1) == floor.group(1)
    assert "redis==$LOWEST_REDIS" in ci
