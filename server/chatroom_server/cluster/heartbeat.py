"""Node liveness (docs/CLUSTER.md): ``P:nodes`` (a set) and ``P:node:NODE`` (a key that
expires). Each node refreshes its key every ``ttl / 5`` s; every node reaps nodes whose
key expired (one script: their users leave once, the node is struck off). A node that
finds itself struck off (it was stopped past the timeout, or Redis lost its data)
registers again and claims its users back, unless they logged in elsewhere meanwhile.

Runs on one thread (``chat-cluster-beat``), which owns nothing but its scripts.
"""

from __future__ import annotations

import logging
import threading
from typing import cast

import redis

from chatroom_server.cluster import scripts
from chatroom_server.cluster.link import Link
from chatroom_server.cluster.roster import Handler, Roster
from chatroom_server.cluster.scripts import STREAM_MAX, Keys

log = logging.getLogger(__name__)


class Heartbeat:
    """This node's registration in ``P:nodes``, kept alive, and the reaper of others."""

    def __init__(self, link: Link, keys: Keys, roster: Roster, ttl: float) -> None:
        self._link = link
        self._keys = keys
        self._roster = roster
        self.ttl = ttl
        self._beat = link.r.register_script(scripts.BEAT)
        self._reap = link.r.register_script(scripts.REAP)

    def register(self, pipe: redis.client.Pipeline) -> None:
        """Queue this node's registration on ``pipe``."""
        pipe.sadd(self._keys.nodes, self._keys.node)
        pipe.set(self._keys.alive, "1", px=int(self.ttl * 1000))

    def strike_off(self) -> None:
        """This node leaves the cluster (its users left one by one as their connections
        closed)."""
        k = self._keys
        try:
            pipe = self._link.r.pipeline()
            pipe.delete(k.alive, k.members)
            pipe.srem(k.nodes, k.node)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not strike this node off in Redis (the others will): %s", exc)

    def run(self, handler: Handler, stopping: threading.Event) -> None:
        k = self._keys
        while not stopping.wait(self.ttl / 5):
            try:
                alive = self._beat(keys=[k.nodes, k.alive], args=[k.node, int(self.ttl * 1000)])
                self._link.sync_clock()  # for the claims' deadlines (Link.deadline)
                if not alive:
                    log.warning(
                        "this node was struck off the cluster (stopped too long?); rejoining"
                    )
                    pipe = self._link.r.pipeline()
                    self.register(pipe)
                    pipe.execute()
                    self._roster.claim_back(handler, handler.cluster_local_names())
                for other in cast(set[str], self._link.r.smembers(k.nodes)):
                    if other == k.node:
                        continue
                    n = self._reap(
                        keys=[
                            k.presence,
                            k.log,
                            k.nodes,
                            k.alive_of(other),
                            k.members_of(other),
                            k.guests,
                            k.opers,
                        ],
                        args=[other, STREAM_MAX],
                    )
                    if n >= 0:
                        log.warning("node %s stopped answering; %d of its users left", other, n)
            except redis.RedisError as exc:
                self._link.set_up(False, exc)
