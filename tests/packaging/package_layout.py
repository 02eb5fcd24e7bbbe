"""What the checkout says the package is: its root, pyproject.toml and the library's folders."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "vimbiso_state"
# Top-level folders of the repository that are not the library: never packages of the wheel.
NOT_LIBRARY = {"tests", "bench", "docs", "build", "dist"}


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def library_folders() -> dict[str, Path]:
    """Every folder of the library that holds Python code, by its package name."""
    found: dict[str, Path] = {}
    for folder, subfolders, files in os.walk(ROOT):
        path = Path(folder)
        relative = path.relative_to(ROOT).parts
        # Pruned in place, so os.walk skips .git, virtualenvs, caches and non-library folders.
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".")
            and name != "__pycache__"
            and not name.endswith(".egg-info")
            and not (not relative and name in NOT_LIBRARY)
        ]
        if any(name.endswith(".py") for name in files):
            found[".".join((PACKAGE, *relative))] = path
    return found


def library_files() -> set[str]:
    """The files the wheel must hold, as paths inside it: every module and the declared data."""
    declared: dict[str, list[str]] = pyproject()["tool"]["setuptools"]["package-data"]
    files: set[str] = set()
    for name, folder in library_folders().items():
        inside = Path(*name.split("."))
        files.update(str(inside / p.name) for p in folder.glob("*.py"))
        for glob in declared.get(name, []):
            files.update(str(inside / p.name) for p in folder.glob(glob))
    return files
