"""The ``vimbiso-state`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cryptography.fernet import Fernet

from domain.errors import StateError
from services.config import Settings
from services.container import Container
from services.demo import run_demo


def _container(redis_url: str | None) -> tuple[Container, list[str]]:
    settings = Settings.from_env()
    notes: list[str] = []
    overrides: dict[str, object] = {}
    if redis_url:
        overrides.update(backend="redis", redis_url=redis_url)
    elif settings.backend == "memory" and not settings.token_keys:
        pass
    backend = overrides.get("backend", settings.backend)
    if backend == "redis" and not settings.token_keys:
        # The demo may invent a key; a real deployment must configure one (see keygen).
        overrides["token_keys"] = (Fernet.generate_key().decode(),)
        notes.append("no STATE_TOKEN_KEYS set: the demo uses a throwaway token key")
    return Container.from_settings(settings, **overrides), notes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vimbiso-state", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="play a realistic WhatsApp conversation")
    demo.add_argument(
        "--redis",
        metavar="URL",
        help="use Redis at URL (default: REDIS_STATE_URL "
        "with STATE_BACKEND=redis, else the in-memory backend)",
    )
    commands.add_parser("keygen", help="print a new Fernet key for STATE_TOKEN_KEYS")
    args = parser.parse_args(argv)

    try:
        if args.command == "keygen":
            print(Fernet.generate_key().decode())
            return 0
        container, notes = _container(args.redis)
        settings = container.settings()
        where = settings.redis_url if settings.backend == "redis" else "in-memory"
        print(f"backend: {settings.backend} ({where})")
        for note in notes:
            print(f"note: {note}")
        run_demo(container, sys.stdout)
        return 0
    except StateError as exc:
        print(f"vimbiso-state: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
