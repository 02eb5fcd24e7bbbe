"""``vimbiso-state import --from URL``: the VimbisoPay bot's logged-in members, moved here."""

from __future__ import annotations

from typing import TextIO

from vimbiso_state.adapters.redis.connection import close as close_client
from vimbiso_state.adapters.redis.connection import connect
from vimbiso_state.domain.errors import StateError
from vimbiso_state.entrypoints.commands.common import (
    CliError,
    check_url,
    close,
    container,
    describe,
    is_redis,
    redact,
)
from vimbiso_state.entrypoints.commands.output import ProgressBar
from vimbiso_state.integrations.vimbiso_import import ImportReport, import_channels
from vimbiso_state.services.config import Settings

EXIT_INTERRUPTED = 130


def run(
    config: Settings, source_url: str, out: TextIO, err: TextIO, *, dry_run: bool, cursor: int
) -> int:
    if not is_redis(config):
        raise CliError(
            "import writes into a shared store: pass --redis URL or set STATE_BACKEND=redis "
            "(the memory backend lives inside one process)"
        )
    if cursor < 0:
        raise CliError("--cursor cannot be negative")
    check_url(source_url)
    built, _ = container(config)
    # Small timeouts: the bot's Redis is read in batches, never held for long.
    source = connect(source_url, socket_timeout=2.0, connect_timeout=1.0, max_connections=2)
    bar = ProgressBar(err, "importing")
    report = ImportReport(dry_run=dry_run, cursor=cursor)
    stopped: BaseException | None = None
    try:
        import_channels(source, built, dry_run=dry_run, cursor=cursor, progress=bar, report=report)
    except (KeyboardInterrupt, StateError) as exc:
        stopped = exc  # what was done so far is still worth reporting
    finally:
        bar.close()
        close_client(source)
        close(built)
    print(
        f"vimbiso-state import: channel:{{wa_id}} keys of {redact(source_url)} "
        f"into {describe(config)}",
        file=out,
    )
    summary(report, out)
    if stopped is None:
        return 0
    how = "interrupted" if isinstance(stopped, KeyboardInterrupt) else "stopped"
    print(
        f"{how} before the end, after the last key counted above: run again with --cursor "
        f"{report.cursor} to go on from here (or without it: members imported already are "
        "left as they are)",
        file=out,
    )
    if isinstance(stopped, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    raise stopped  # the one-line error and its exit code


def summary(report: ImportReport, out: TextIO) -> None:
    """What was imported, what was left alone, and why each skipped key was skipped."""
    if report.dry_run:
        print("dry run: nothing was written", file=out)
    print(f"scanned {report.scanned:,} keys, {report.channels:,} of them channel keys", file=out)
    verb = "would import" if report.dry_run else "imported"
    print(f"{verb}: {report.imported:,} member(s), logged in and on their account", file=out)
    if report.unchanged:
        print(f"unchanged: {report.unchanged:,} (imported by an earlier run)", file=out)
    skipped = sum(report.skipped.values())
    print(f"skipped: {skipped:,}", file=out)
    width = len(f"{max(report.skipped.values(), default=0):,}")
    for why, count in report.skipped.most_common():
        line = f"  {count:>{width},}  {why.value}: {', '.join(report.examples[why])}"
        if count > len(report.examples[why]):
            line += ", ..."
        if why in report.reasons:
            line += f" ({report.reasons[why]})"
        print(line, file=out)
