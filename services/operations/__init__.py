"""What operators call, never the bot: the doctor's server checks (server_checks), keyspace
scans for ``stats`` and ``inspect`` (keyspace), and a read-only view of one user (inspection).

What the library needs at run time to talk to Redis, ``state.health()`` included, stays in
``adapters/redis``.
"""

from vimbiso_state.services.operations.inspection import Inspector, Snapshot, TokenView
from vimbiso_state.services.operations.keyspace import KeyInfo, describe_user_keys

__all__ = ["Inspector", "KeyInfo", "Snapshot", "TokenView", "describe_user_keys"]
