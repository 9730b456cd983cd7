"""Several chat-server nodes as one room (docs/CLUSTER.md): accounts and the message log
in PostgreSQL (:mod:`.pg`), fan-out, presence and node liveness through Redis
(:mod:`.bus`). Needs ``pip install 'chatroom[cluster]'`` (psycopg, redis); this package
imports them only when a cluster is started, so the embedded server runs without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatroom_server.cluster.errors import ClusterUnavailable

__all__ = ["ClusterBus", "ClusterUnavailable", "PgAccountStore", "PgDatabase", "PgMessageLog"]


if TYPE_CHECKING:
    from chatroom_server.cluster.bus import ClusterBus
    from chatroom_server.cluster.pg import PgAccountStore, PgDatabase, PgMessageLog


def __getattr__(name: str) -> Any:
    if name == "ClusterBus":
        from chatroom_server.cluster.bus import ClusterBus

        return ClusterBus
    if name in ("PgAccountStore", "PgDatabase", "PgMessageLog"):
        from chatroom_server.cluster import pg

        return getattr(pg, name)
    raise AttributeError(name)
