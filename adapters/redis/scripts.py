"""The Lua scripts and how a call reaches the server: EVALSHA, then EVAL after a NOSCRIPT.

redis-py's ``register_script`` answers a NOSCRIPT with SCRIPT LOAD, which a cluster client
sends to every master, so one unreachable shard would fail every user. EVAL instead runs and
caches the script on the one node that owns the keys: after a restart, a SCRIPT FLUSH or a
failover (scripts are not replicated). The same two public calls serve one server and a
cluster, sync and asyncio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from vimbiso_state.domain.timeouts import MAX_HANDLED_IDS, SLIDE_STEPS


def script_source(name: str, read_only: bool = False) -> str:
    """A script's source: its own file, with prelude.lua (what every script shares) after
    its shebang line; scripts cannot share code on the server. ``read_only`` adds the
    ``no-writes`` flag, which lets a call that writes nothing run on a full server (where
    Redis refuses any script that may write) and on a replica."""
    scripts = resources.files("vimbiso_state.adapters.redis")
    shebang, _, body = scripts.joinpath(name).read_text(encoding="utf-8").partition("\n")
    if read_only:
        flags = [flag for flag in shebang.partition("flags=")[2].split(",") if flag]
        shebang = "#!lua flags=" + ",".join(["no-writes", *flags])
    prelude = scripts.joinpath("prelude.lua").read_text(encoding="utf-8")
    # The library's constants, from their one definition: sent as arguments, each would cost
    # every call about a thousand instructions on the server. As text: Redis formats a Lua
    # number it is given with printf. TRIM_HANDLED: the last rank a commit trims from the
    # handled ids before it adds its own, so that the newest MAX_HANDLED_IDS are kept.
    # SLIDE_STEPS: a slide step is this fraction of a TTL, as in the domain.
    constants = f"local TRIM_HANDLED = '{-MAX_HANDLED_IDS}'\nlocal SLIDE_STEPS = {SLIDE_STEPS}\n"
    return f"{shebang}\n{constants}{prelude}{body}"


class LuaScript:
    """One of the package's ``*.lua`` files, run by its SHA."""

    def __init__(self, name: str, read_only: bool = False) -> None:
        self.name = name
        self.source = script_source(name, read_only)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    def queue(
        self, pipe: Any, keys: Sequence[Any], args: Sequence[Any], by_source: bool = False
    ) -> None:
        """Queue a call on a pipeline, sync or asyncio: by SHA, or by source once the server
        has answered NOSCRIPT (a pipeline cannot fall back within itself)."""
        if by_source:
            pipe.eval(self.source, len(keys), *keys, *args)
        else:
            pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def call_async(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def on_node(self, client: Any, node: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run on one node of a cluster (``node`` None: wherever the keys are), for a script
        that reaches other keys of that node (``allow-cross-slot-keys``)."""
        target = {} if node is None else {"target_nodes": node}
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, **target)
        except NoScriptError:
            return client.execute_command("EVAL", self.source, len(keys), *keys, *args, **target)

    async def on_node_async(
        self, client: Any, node: Any, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        target = {} if node is None else {"target_nodes": node}
        try:
            return await client.execute_command(
                "EVALSHA", self.sha, len(keys), *keys, *args, **target
            )
        except NoScriptError:
            return await client.execute_command(
                "EVAL", self.source, len(keys), *keys, *args, **target
            )


BEGIN = LuaScript("begin.lua")
COMMIT = LuaScript("commit.lua")
RELEASE = LuaScript("release.lua")
FORGET = LuaScript("forget.lua")
EFFECT = LuaScript("effect.lua")
LOAD = LuaScript("load.lua")
PEEK = LuaScript("load.lua", read_only=True)  # a read that slides nothing (operators' tools)
CLAIM = LuaScript("claim.lua")
DUE = LuaScript("claim.lua", read_only=True)  # the due events, taken by nobody
ACK = LuaScript("ack.lua")
