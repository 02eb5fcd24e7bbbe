"""The ``vimbiso-state`` command line: conversation state for operators and newcomers.

Every command reads configuration the way the library does (STATE_BACKEND, REDIS_STATE_URL,
STATE_* ...); ``--redis URL`` points it at a Redis server instead. Bad input gets one line on
stderr and a non-zero exit: 2 for bad input or configuration, 3 when the backend cannot be
reached, 1 when ``doctor`` finds a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from cryptography.fernet import Fernet

from vimbiso_state import __version__
from vimbiso_state.domain.errors import StateError, StateUnavailable
from vimbiso_state.entrypoints.commands import (
    chat,
    doctor,
    expirations,
    import_bot,
    inspect_reset,
    stats,
)
from vimbiso_state.entrypoints.commands.common import (
    EXIT_FAIL,
    EXIT_INPUT,
    EXIT_UNAVAILABLE,
    CliError,
    close,
    container,
    describe,
    one_line,
    settings,
)
from vimbiso_state.entrypoints.demo import run_demo
from vimbiso_state.services.config import RENAMED_ENVIRONMENT, environment_value

PROG = "vimbiso-state"
DEBUG = "STATE_DEBUG"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the --help text is one command away.
        self.exit(EXIT_INPUT, f"{PROG}: {message} (see {self.prog} --help)\n")


# Adds one command: its name, its one-line help, the shared arguments it takes.
_Add = Callable[..., argparse.ArgumentParser]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Conversation state for the VimbisoPay WhatsApp bot: try it, look inside, "
        "check the server, import the bot's members.",
        epilog="Configuration comes from the environment, as for the library (STATE_BACKEND, "
        "REDIS_STATE_URL, STATE_TOKEN_KEYS, ...; see docs/configuration.md). Exit codes: 0 ok, "
        "1 doctor found a failure, 2 bad input or configuration, 3 backend unreachable, "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backend = _Parser(add_help=False)
    backend.add_argument(
        "--redis",
        metavar="URL",
        help="use Redis at URL (default: REDIS_STATE_URL with STATE_BACKEND=redis, "
        "else the in-memory backend)",
    )

    def add(name: str, text: str, *parents: _Parser) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=list(parents))

    _user_commands(add, backend)
    _store_commands(add, backend)
    add("keygen", "print a new Fernet key for STATE_TOKEN_KEYS")
    return parser


def _user_commands(add: _Add, backend: _Parser) -> None:
    """The commands about one user: play one, look inside one, forget one."""
    phone = _Parser(add_help=False)
    phone.add_argument("phone", metavar="PHONE", help="the user's number, e.g. +263771234567")
    add("demo", "play a realistic WhatsApp conversation against the backend", backend)
    chatting = add("chat", "be the WhatsApp user: the bot's menu and forms, from stdin", backend)
    chatting.add_argument(
        "--phone", default="+263 77 000 0002", help="your number (default: %(default)s)"
    )
    chatting.add_argument("--fresh", action="store_true", help="forget this number first")
    add("inspect", "show one user's state, form, session, token and key TTLs", backend, phone)
    add("reset", "forget one user: conversation, form and token (handled ids stay)", backend, phone)


def _store_commands(add: _Add, backend: _Parser) -> None:
    """The commands about the whole store: count, check, read expiry events, import."""
    counting = add(
        "stats",
        "count conversations and keys, measure memory, show where users stand (SCAN)",
        backend,
    )
    counting.add_argument(
        "--sample", type=int, default=200, help="users measured with MEMORY USAGE (default 200)"
    )
    counting.add_argument("--json", action="store_true", help="print the report as JSON")
    add("doctor", "check the state server's settings: a verdict per line", backend)
    expiring = add(
        "expirations",
        "print the forms and sessions whose deadline passed, one JSON line each",
        backend,
    )
    expiring.add_argument(
        "--ack", action="store_true", help="consume them, as the bot's consumers would"
    )
    expiring.add_argument("--limit", type=int, default=100, help="at most (default 100)")
    expiring.add_argument(
        "--lease", type=float, default=60, help="seconds a consumed batch is held (with --ack)"
    )
    importing = add(
        "import",
        "move the VimbisoPay bot's logged-in members (its channel:{wa_id} keys) into this store",
        backend,
    )
    importing.add_argument(
        "--from", dest="source", metavar="URL", required=True, help="the bot's Redis (REDIS_URL)"
    )
    importing.add_argument(
        "--dry-run", action="store_true", help="check every key and report; write nothing"
    )
    importing.add_argument(
        "--cursor",
        type=int,
        default=0,
        help="go on from this SCAN cursor (an interrupted run prints it)",
    )


def _run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.command == "keygen":
        print(Fernet.generate_key().decode(), file=out)
        return 0
    config = settings(args.redis)
    if args.command == "demo":
        built, notes = container(config, throwaway_key=True)
        try:
            print(f"backend: {describe(config)}", file=out)
            for note in notes:
                print(f"note: {note}", file=out)
            run_demo(built, out)
        finally:
            close(built)
        return 0
    if args.command == "chat":
        return chat.run(config, args.phone, sys.stdin, out, fresh=args.fresh)
    if args.command == "inspect":
        return inspect_reset.run_inspect(config, args.phone, out)
    if args.command == "reset":
        return inspect_reset.run_reset(config, args.phone, out)
    if args.command == "stats":
        if args.sample < 0:
            raise CliError("--sample cannot be negative")
        return stats.run(config, out, sys.stderr, sample=args.sample, as_json=args.json)
    if args.command == "expirations":
        return expirations.run(config, out, ack=args.ack, limit=args.limit, lease=args.lease)
    if args.command == "import":
        return import_bot.run(
            config, args.source, out, sys.stderr, dry_run=args.dry_run, cursor=args.cursor
        )
    return doctor.run(config, out)


def _debugging() -> bool:
    """STATE_DEBUG=1: show the traceback of an unexpected error instead of one line."""
    old = RENAMED_ENVIRONMENT[DEBUG]
    if os.environ.get(old) and not os.environ.get(DEBUG):
        # The DeprecationWarning below is hidden by Python's default filters: say it here.
        print(f"{PROG}: note: {old} is deprecated, set {DEBUG}=1 instead", file=sys.stderr)
    value = environment_value(DEBUG)
    return value is not None and value.strip().lower() not in {"0", "false", "no", "off"}


def main(argv: Sequence[str] | None = None) -> int:
    debugging = _debugging()
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed on one line
        return exit_.code if isinstance(exit_.code, int) else EXIT_INPUT
    try:
        return _run(args)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except StateUnavailable as exc:
        return _fail(one_line(exc), EXIT_UNAVAILABLE)
    except StateError as exc:  # invalid phone number, configuration, ...
        return _fail(one_line(exc), EXIT_INPUT)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vimbiso-state stats | head`: the reader left
        sys.stderr.close()
        return EXIT_FAIL
    except Exception as exc:
        if debugging:
            raise
        return _fail(
            f"internal error: {type(exc).__name__}: {one_line(exc)} "
            f"(set {DEBUG}=1 for the traceback)",
            EXIT_FAIL,
        )


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
