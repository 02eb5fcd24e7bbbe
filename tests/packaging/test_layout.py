"""The package as pyproject.toml declares it, checked against the checkout: no build needed.

The repository root is the package ``vimbiso_state`` (setuptools ``package-dir``), and its
packages are listed by hand. A folder missing from that list still imports from a checkout,
but is absent from the wheel; these tests say so at once, test_dist.py proves it on the build.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys

import pytest
from package_layout import PACKAGE, ROOT, library_folders, pyproject

import vimbiso_state

REPOSITORY = "https://github.com/Great-Sun-Group/vimbiso-state"
BLOB = f"{REPOSITORY}/blob/main/"


def _dependency(name: str) -> str:
    for requirement in pyproject()["project"]["dependencies"]:
        if re.match(rf"{name}\b", requirement):
            return str(requirement)
    raise AssertionError(f"{name} is not a dependency")


def test_the_package_list_is_every_library_folder_and_nothing_else() -> None:
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    folders = library_folders()
    assert sorted(listed) == sorted(folders), (
        "pyproject.toml [tool.setuptools] packages must list every library folder with Python "
        "code (a folder missing there is absent from the wheel), and only those"
    )
    assert not any(name.split(".")[1:2] in (["tests"], ["bench"], ["docs"]) for name in listed)


def test_every_library_folder_is_a_regular_package() -> None:
    # Without __init__.py a folder would be a namespace package: importable from the checkout,
    # yet easy to leave out of the list and the wheel.
    missing = [
        name for name, path in library_folders().items() if not (path / "__init__.py").exists()
    ]
    assert missing == []


def test_every_data_file_in_the_library_is_declared_package_data() -> None:
    """A file the library reads at run time (a Lua script, py.typed) ships only if declared."""
    declared: dict[str, list[str]] = pyproject()["tool"]["setuptools"]["package-data"]
    undeclared = []
    for name, path in library_folders().items():
        if name == PACKAGE:
            continue  # the root also holds README, pyproject and the like: checked below
        globs = declared.get(name, [])
        for file in path.iterdir():
            if not file.is_file() or file.suffix == ".py":
                continue
            if not any(fnmatch.fnmatch(file.name, glob) for glob in globs):
                undeclared.append(f"{name}: {file.name}")
    assert undeclared == []
    assert declared[PACKAGE] == ["py.typed"] and (ROOT / "py.typed").exists()
    assert list((ROOT / "adapters" / "redis").glob("*.lua")), "the Lua scripts moved?"


def test_ci_runs_the_redis_suites_on_the_lowest_redis_py_the_package_accepts() -> None:
    floor = re.fullmatch(r"redis>=([\d.]+)", _dependency("redis"))
    assert floor, "redis-py: a lower bound and no upper one (its public API only)"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lowest = re.search(r'^LOWEST_REDIS="([\d.]+)"$', ci, re.MULTILINE)
    assert lowest, ".ci/run names the lowest redis-py it tests"
    assert lowest.group(1) == floor.group(1)
    assert "redis==$LOWEST_REDIS" in ci


def test_the_project_metadata_names_its_license_home_and_changelog() -> None:
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n")
    assert "Copyright (c) 2026 Great Sun Group / vimbiso-state contributors" in license_text
    # PEP 639: a license expression replaces the License :: classifiers.
    assert not any(c.startswith("License ::") for c in project["classifiers"])
    assert "Typing :: Typed" in project["classifiers"]
    assert project["keywords"]
    urls = project["urls"]
    assert urls["Homepage"] == urls["Source"] == REPOSITORY
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert urls["Changelog"] == f"{BLOB}CHANGELOG.md"
    assert project["optional-dependencies"]["hiredis"] == ["hiredis>=3.0"]


def test_the_changelog_starts_with_the_packages_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## (\S+)", changelog, re.MULTILINE)
    assert first and first.group(1) == vimbiso_state.__version__


def test_the_readme_has_no_relative_links() -> None:
    """The package index shows README.md without the repository: a relative link breaks."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    inline = re.findall(r"\]\(([^)\s]+)\)", readme)
    reference = re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", readme, re.MULTILINE)
    html = re.findall(r"""(?:href|src)=["']([^"']+)""", readme)
    targets = [*inline, *reference, *html]
    assert targets, "no links found: the pattern is wrong"
    assert [t for t in targets if not t.startswith("https://")] == []
    # Links into this repository name files that exist, so they do not rot either.
    for target in targets:
        if target.startswith(BLOB):
            assert (ROOT / target.removeprefix(BLOB).split("#")[0]).is_file(), target


def test_compose_publishes_redis_on_the_loopback_interface_only() -> None:
    """The compose servers have no password: a port published on every interface would hand
    the state (and the cache) to anyone on the network."""
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    published: list[str] = []
    lines = compose.splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)ports:\s*$", line)
        if not match:
            continue
        for item in lines[number + 1 :]:
            if not item.strip() or item.strip().startswith("#"):
                continue
            entry = re.match(rf"^{match.group(1)}\s+-\s*(.*?)\s*(#.*)?$", item)
            if not entry:
                break
            published.append(entry.group(1).strip("\"'"))
    assert len(published) >= 2, "no ports found: the pattern is wrong"
    assert [p for p in published if not re.fullmatch(r"127\.0\.0\.1:\d+:\d+", p)] == []
    assert "network_mode: host" not in compose


@pytest.mark.slow
def test_django_is_an_extra_that_the_library_never_needs() -> None:
    """The Django app needs the `django` extra; the library, its services and CLI do not."""
    extras = pyproject()["project"]["optional-dependencies"]
    assert any(re.match(r"django\b", r) for r in extras["django"])
    assert not any(re.match(r"django\b", r) for r in pyproject()["project"]["dependencies"])
    code = (
        "import sys\n"
        "import vimbiso_state\n"
        "from vimbiso_state import Container\n"
        "from vimbiso_state.entrypoints import cli\n"
        "Container.from_env({'STATE_BACKEND': 'memory'}).state_service().health()\n"
        "assert not any(name.split('.')[0] == 'django' for name in sys.modules), 'django'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
