"""``vimbiso-state doctor``: what the state server's settings risk, one verdict per line."""

from __future__ import annotations

import shutil
import textwrap
from typing import TextIO

from vimbiso_state.adapters.redis.connection import nodes
from vimbiso_state.entrypoints.commands.common import (
    EXIT_FAIL,
    EXIT_OK,
    close,
    container,
    describe,
    is_redis,
)
from vimbiso_state.entrypoints.commands.output import verdict_label
from vimbiso_state.services.config import Settings
from vimbiso_state.services.operations.server_checks import (
    Finding,
    Verdict,
    check_server,
    overall,
)


def configuration_findings(config: Settings) -> list[Finding]:
    """What the library's own configuration risks, before any server is asked."""
    if not is_redis(config):
        return [
            Finding(
                "backend",
                "memory",
                Verdict.WARN,
                "state lives inside one process and is lost when it restarts; "
                "set STATE_BACKEND=redis and REDIS_STATE_URL (or pass --redis URL)",
            )
        ]
    findings = [Finding("backend", describe(config), Verdict.OK)]
    if config.token_keys:
        findings.append(Finding("token keys", f"{len(config.token_keys)} configured", Verdict.OK))
    else:
        findings.append(
            Finding(
                "token keys",
                "none",
                Verdict.WARN,
                "save_token and token raise ConfigurationError until STATE_TOKEN_KEYS is set "
                "(vimbiso-state keygen prints a key)",
            )
        )
    return findings


def run(config: Settings, out: TextIO) -> int:
    sections: list[tuple[str, list[Finding]]] = [("", configuration_findings(config))]
    if is_redis(config):
        built, _ = container(config)
        try:
            client, retry = built.redis_client(), built.redis_retry()
            for node, server in nodes(client):  # a cluster: every primary, each under its name
                sections.append((node, check_server(server, retry=retry)))
        finally:
            close(built)
    findings = [finding for _, found in sections for finding in found]
    print(f"vimbiso-state doctor: {describe(config)}", file=out)
    width = max(len(f.name) for f in findings)
    indent = " " * (4 + 2 + width + 2)
    columns = max(60, min(110, shutil.get_terminal_size((100, 24)).columns))
    for node, found in sections:
        if node:
            print(f"primary {node}:", file=out)
        for finding in found:
            label = verdict_label(finding.verdict, out)
            print(f"{label}  {finding.name.ljust(width)}  {finding.value}", file=out)
            if finding.advice:
                advice = textwrap.fill(
                    finding.advice,
                    columns,
                    initial_indent=indent + "-> ",
                    subsequent_indent=indent + "   ",
                )
                print(advice, file=out)
    verdict = overall(findings)
    fails = sum(f.verdict is Verdict.FAIL for f in findings)
    warns = sum(f.verdict is Verdict.WARN for f in findings)
    summary = {
        Verdict.OK: "healthy: nothing puts conversation state at risk",
        Verdict.WARN: f"usable, with {warns} warning(s): read the advice above",
        Verdict.FAIL: f"{fails} failure(s): conversation state is at risk, fix before production",
    }[verdict]
    print(f"verdict: {verdict_label(verdict, out, upper=True)} - {summary}", file=out)
    return EXIT_FAIL if verdict is Verdict.FAIL else EXIT_OK
