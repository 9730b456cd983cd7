"""The cluster's fan-out, presence and node liveness on Redis (docs/CLUSTER.md).

Every node of a cluster shares one Redis database under one key prefix ``P``:

- ``P:log``, a **stream**: every stored message (published by the node that stored it,
  in seq order, chatroom_server.cluster.pg), every presence change (``j`` joined,
  ``t`` taken over, ``l`` left) and every server operator's kill, WALLOPS and O-line
  (``o``, chatroom_server.serverops). Each node reads it from where it started; a stream keeps
  its entries while a node is briefly disconnected, where pub/sub would drop them.
- ``P:presence``, a hash: username key -> ``node|name|session`` (the session's id on
  its node, which a server operator's kill names). ``P:members:NODE``: the keys a
  node holds. Changed only by Lua scripts that also append the matching event to the
  stream, so a presence change and its announcement are one atomic step: a user joins,
  is taken over or leaves *exactly once*, whoever notices it.
- ``P:guests``, a hash: username key -> node, for the IRC gateway's guests
  (docs/IRC.md): a guest claims a nick only if nobody has it (:meth:`ClusterBus.claim_guest`,
  433 otherwise), and a name cannot be registered while a guest holds it
  (``P:registering:KEY``, a counter that expires, :meth:`begin_registration`); the
  two scripts exclude each other, so a guest never takes over an account registered
  meanwhile, on any node. Released and reaped with the guest's presence.
- ``P:opers``, a hash: username key -> ``node|session``, the sessions an IRC O-line
  made server operators (chatroom_server.serverops), for the nodes that start later;
  an entry holds while its session holds the user, and goes with it; its node writes
  it again if Redis loses it (:meth:`Roster.republish_operators`).
- ``P:nodes`` (a set) and ``P:node:NODE`` (a key that expires): liveness
  (:mod:`.heartbeat`).

The parts, each in a module of its own: :mod:`.scripts` (the keys and the Lua scripts),
:mod:`.link` (the connections, and whether Redis answers), :mod:`.roster` (who is online
where), :mod:`.consumer` (the stream: entries, and the consumer that delivers them in
seq order, gaps filled from PostgreSQL), :mod:`.heartbeat` (liveness, the reaper).
:class:`ClusterBus` is their front door: the server sees only it.

Threads: ``chat-cluster`` (the consumer) and ``chat-cluster-beat`` (heartbeat, reaper).
Server callbacks (:class:`Handler`) run on the consumer thread.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from chatroom_server.cluster.consumer import Consumer, entry
from chatroom_server.cluster.errors import ClusterUnavailable
from chatroom_server.cluster.heartbeat import Heartbeat
from chatroom_server.cluster.link import Link
from chatroom_server.cluster.roster import Handler, Roster
from chatroom_server.cluster.scripts import STREAM_MAX, Keys
from chatroom_server.messagelog import NewMessage, Stored

__all__ = ["ClusterBus", "Handler"]


class ClusterBus:
    """See the module docstring. ``start()`` after the server can take callbacks."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "chatroom",
        node_name: str = "node",
        ttl: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.node = f"{node_name.replace('|', '_')}/{secrets.token_hex(4)}"
        self.ttl = ttl
        self.keys = Keys(prefix, self.node)
        self.link = Link(url, timeout)
        self.roster = Roster(self.link, self.keys)
        self._heartbeat = Heartbeat(self.link, self.keys, self.roster, ttl)
        self._consumer: Consumer | None = None  # made by start()
        self._last_id = "0-0"  # where the consumer begins: snapshot() says
        self._operators: list[dict[str, str]] = []  # O-line operators then: snapshot()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ set-up

    def check(self) -> str:
        """A line about the Redis server; ClusterUnavailable if it cannot be reached."""
        r = self.link.r
        try:
            info = r.info("server")
            nodes = r.smembers(self.keys.nodes)
            online = r.hlen(self.keys.presence)
        except redis.RedisError as exc:
            raise ClusterUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        return (
            f"redis {info.get('redis_version')} at {self.url}, prefix {self.prefix!r}: "
            f"{len(nodes)} node(s) alive, {online} user(s) online"
        )

    def snapshot(self) -> list[str]:
        """Register this node; the names online on other nodes now, and the stream
        position from which the consumer goes on (taken first: later changes replay)."""
        r = self.link.r
        try:
            last = cast(list[tuple[str, Any]], r.xrevrange(self.keys.log, count=1))
            self._last_id = last[0][0] if last else "0-0"
            pipe = r.pipeline()
            self._heartbeat.register(pipe)
            pipe.hgetall(self.keys.presence)
            pipe.hgetall(self.keys.opers)
            *_, presence, opers = pipe.execute()
            self.link.sync_clock()
        except redis.RedisError as exc:
            raise ClusterUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        # The O-line operators online now, applied by the consumer before what follows
        # the snapshot on the stream (a departure after it, say).
        self._operators = self.roster.operators(presence, opers)
        return self.roster.load(presence)

    def start(
        self,
        handler: Handler,
        last_seq: Callable[[], int],
        stored_seq: Callable[[], int],
        read_range: Callable[[int, int], list[Stored]],
    ) -> None:
        consumer = Consumer(
            self.link,
            self.keys.log,
            self.roster,
            handler,
            last_id=self._last_id,
            operators=self._operators,
            last_seq=last_seq,
            stored_seq=stored_seq,
            read_range=read_range,
        )
        self._consumer = consumer
        for target, args, name in (
            (consumer.run, (self._stopping,), "chat-cluster"),
            (self._heartbeat.run, (handler, self._stopping), "chat-cluster-beat"),
        ):
            t = threading.Thread(target=target, args=args, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Stop the threads and strike this node off (its users left one by one as
        their connections closed)."""
        self._stopping.set()
        for t in self._threads:
            t.join(3.0)
        self._heartbeat.strike_off()
        self.disconnect()

    def disconnect(self) -> None:
        """Close the connections to Redis (``close()`` does, after striking off)."""
        self.link.close()

    # ------------------------------------------------------------ state

    @property
    def available(self) -> bool:
        return self.link.available

    @property
    def outages(self) -> int:
        """Times Redis became unreachable (metrics)."""
        return self.link.outages

    @property
    def gaps_filled(self) -> int:
        """Messages read from PostgreSQL because their entry was lost (metrics)."""
        return 0 if self._consumer is None else self._consumer.gaps_filled

    def wait_available(self, timeout: float) -> bool:
        """Wait until Redis is reachable (again); False after ``timeout`` s."""
        return self.link.wait_available(timeout)

    def ready(self) -> None:
        """Raise StorageError while Redis is known to be down: a send then gets
        ``unavailable`` instead of an ack for a message nobody can be told about."""
        self.link.ready()

    def online(self, key: str) -> bool:
        """Whether the user (by username key) is logged in on any node."""
        return self.roster.online(key)

    # ------------------------------------------------------------ reader threads

    def claim(self, name: str, session: str = "") -> str | None:
        """A login on this node, of the session ``session`` (its id on this node, which
        a kill names): the node that had this user before (None: nobody).
        ClusterUnavailable when Redis cannot be reached."""
        return self.roster.claim(name, session)

    def claim_guest(self, name: str, session: str = "") -> bool:
        """An IRC guest's claim of a nick (docs/IRC.md): see :meth:`Roster.claim_guest`."""
        return self.roster.claim_guest(name, session)

    def holder(self, key: str) -> tuple[str, str] | None:
        """The node and session id of the user's session now (:meth:`Roster.holder`)."""
        return self.roster.holder(key)

    def begin_registration(self, name: str) -> bool:
        """A new account of this name is about to be stored: False while an IRC guest
        holds it on any node (:meth:`Roster.begin_registration`)."""
        return self.roster.begin_registration(name)

    def end_registration(self, name: str) -> None:
        self.roster.end_registration(name)

    def settled(self, name: str) -> None:
        """The login that claimed ``name`` began its session here, or gave up."""
        self.roster.settled(name)

    def release(self, name: str) -> None:
        """This node's session of ``name`` ended (not when another node took it over)."""
        self.roster.release(name)

    def oper(self, name: str, session: str) -> bool:
        """An IRC O-line made this node's session ``session`` of ``name`` an operator:
        known to every node, those that start later too (:meth:`Roster.oper`). False if
        Redis cannot be reached (or that session no longer holds the user)."""
        return self.roster.oper(name, session)

    def publish_operator(self, fields: dict[str, str]) -> bool:
        """A server operator's kill or WALLOPS, for every node (chatroom_server.serverops):
        an entry ``o`` on the stream, with this node's name. Not stored: a node that
        starts later has nothing to do with it. False if Redis cannot be reached."""
        entry_: dict[FieldT, EncodableT] = {"k": "o", "n": self.node}
        entry_.update(fields)
        try:
            self.link.r.xadd(self.keys.log, entry_, maxlen=STREAM_MAX, approximate=True)
        except redis.RedisError as exc:
            self.link.set_up(False, exc)
            return False
        return True

    def publish(self, stored: list[tuple[int, NewMessage]]) -> None:
        """Append stored messages to the stream, in seq order (under the seq lock).
        A failure is logged, not raised: they are stored, and the nodes' gap fill
        delivers them (:mod:`.consumer`)."""
        pipe = self.link.r.pipeline(transaction=False)
        for seq, m in stored:
            pipe.xadd(self.keys.log, entry(seq, m), maxlen=STREAM_MAX, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self.link.set_up(False, exc)
