"""The cluster's exception, in a module of its own: the package's front door
(``chatroom_server.cluster``) re-exports it, and the bus's parts raise it, without
either importing the other."""

from __future__ import annotations


class ClusterUnavailable(Exception):
    """Redis cannot be reached: answered with ``unavailable``."""
