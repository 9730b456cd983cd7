"""The cluster's fan-out, presence and node liveness on Redis (docs/CLUSTER.md).

Every node of a cluster shares one Redis database under one key prefix ``P``:

- ``P:log``, a **stream**: every stored message (published by the node that stored it,
  in seq order, chatroom_server.cluster.pg) and every presence change (``j`` joined,
  ``t`` taken over, ``l`` left). Each node reads it from where it started; a stream keeps
  its entries while a node is briefly disconnected, where pub/sub would drop them.
- ``P:presence``, a hash: username key -> ``node|name``. ``P:members:NODE``: the keys a
  node holds. Changed only by Lua scripts that also append the matching event to the
  stream, so a presence change and its announcement are one atomic step: a user joins,
  is taken over or leaves *exactly once*, whoever notices it.
- ``P:guests``, a hash: username key -> node, for the IRC gateway's guests
  (docs/IRC.md): a guest claims a nick only if nobody has it (:meth:`ClusterBus.claim_guest`,
  433 otherwise), and a name cannot be registered while a guest holds it
  (``P:registering:KEY``, a counter that expires, :meth:`begin_registration`); the
  two scripts exclude each other, so a guest never takes over an account registered
  meanwhile, on any node. Released and reaped with the guest's presence.
- ``P:nodes`` (a set) and ``P:node:NODE`` (a key that expires): liveness. Each node
  refreshes its key every ``ttl / 5`` s; every node reaps nodes whose key expired (one
  script: their users leave once, the node is struck off). A node that finds itself
  struck off (it was stopped past the timeout, or Redis lost its data) registers again
  and claims its users back, unless they logged in elsewhere meanwhile.

Delivery order (docs/PROTOCOL.md §Ordering, §Message log): the consumer hands messages
to the server strictly in seq order, from ``last_seq + 1`` on. An entry ahead of that
means publications were lost (Redis was down after a commit, or a node died between
commit and publish): the missing seqs are read from PostgreSQL first. When the stream
is quiet, the consumer compares PostgreSQL's highest seq with its own once a second, so
the last message before an outage is not stranded. Entries at or below ``last_seq`` are
duplicates and skipped. So every node delivers every stored message once, in seq order.

Threads: ``chat-cluster`` (the consumer) and ``chat-cluster-beat`` (heartbeat, reaper).
``_lock`` guards ``_owners``, ``_claiming``, ``_guests`` and ``_up``; no callback into
the server runs under it.
Server callbacks (:class:`Handler`) run on the consumer thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, cast

import redis
from redis.typing import EncodableT, FieldT

from chatroom.protocol import username_key
from chatroom.rooms import LOBBY
from chatroom_server.cluster import ClusterUnavailable
from chatroom_server.messagelog import NewMessage, StorageError, Stored

log = logging.getLogger(__name__)

# XREAD's reply with decode_responses: [(stream, [(entry id, fields), ...]), ...]
_XRead = list[tuple[str, list[tuple[str, dict[str, str]]]]]

STREAM_MAX: Final = 100_000  # entries kept in P:log (approximately): minutes of traffic
# A registration's mark against guests outlives a node that dies holding it by this much:
# longer than a registration may take (the account store's wait_timeout, 120 s, in a
# login storm, then the hash), short enough to be forgotten.
REGISTERING_MS: Final = 180_000

# Lua: node names never contain '|'; usernames are ASCII letters, digits, '_' and '-'.
_NODE_OF = "local function node_of(v) return string.match(v, '^([^|]*)|') end\n"

_CLAIM = (
    _NODE_OF
    + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
local kind = 'j'
if old then
  local node = node_of(old)
  if node == ARGV[2] then return old end
  redis.call('SREM', ARGV[5] .. ':members:' .. node, ARGV[1])
  kind = 't'
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', kind, 'u', ARGV[3], 'n', ARGV[2])
return old
"""
)

# A guest's claim (KEYS: presence, log, members, guests, registering:KEY): only a nick
# nobody has, on any node, and nobody is registering.
_CLAIM_GUEST = """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'j', 'u', ARGV[3], 'n', ARGV[2])
return 1
"""

# A registration begins (KEYS: guests, registering:KEY): not while a guest holds the name.
_BEGIN_REGISTRATION = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

_END_REGISTRATION = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""

_RELEASE = (
    _NODE_OF
    + """
if redis.call('HGET', KEYS[4], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[4], ARGV[1]) end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or node_of(v) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'l', 'u', ARGV[3], 'n', ARGV[2])
return 1
"""
)

# ARGV[5] '1': a guest's nick (KEYS[4], KEYS[5]: guests, registering:KEY), held again
# only if nobody registers that name now.
_REJOIN = (
    _NODE_OF
    + """
local guest = ARGV[5] == '1'
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  if guest and redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[1])
  if guest then redis.call('HSET', KEYS[4], ARGV[1], ARGV[2]) end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'k', 'j', 'u', ARGV[3], 'n', ARGV[2])
  return 1
end
if node_of(v) == ARGV[2] then
  redis.call('SADD', KEYS[3], ARGV[1])
  if guest then redis.call('HSET', KEYS[4], ARGV[1], ARGV[2]) end
  return 1
end
return 0
"""
)

_REAP = (
    _NODE_OF
    + """
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if redis.call('HGET', KEYS[6], key) == ARGV[1] then redis.call('HDEL', KEYS[6], key) end
  local v = redis.call('HGET', KEYS[1], key)
  if v and node_of(v) == ARGV[1] then
    redis.call('HDEL', KEYS[1], key)
    local name = string.sub(v, string.len(ARGV[1]) + 2)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'k', 'l', 'u', name, 'n', ARGV[1])
    n = n + 1
  end
end
redis.call('DEL', KEYS[5])
redis.call('SREM', KEYS[3], ARGV[1])
return n
"""
)

_BEAT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""


def _may_have_waited(rows: list[Stored]) -> set[int]:
    """The DMs among ``rows`` read back from PostgreSQL (a gap fill): whether one was
    queued in its recipient's inbox is the stream's ``q`` field, which a row does not
    carry, so each may have been. Marking one that was not costs nothing (its receipt
    deletes no row); missing one that was sends it again at the next fresh login after
    a clean exit (the nemesis found it: seed 4020, docs/RELIABILITY.md F6)."""
    return {m.seq for m in rows if m.to is not None}


class Handler(Protocol):
    """What the bus calls on the server, on the consumer thread."""

    def cluster_deliver(self, messages: list[Stored], inbox: set[int]) -> None: ...
    def cluster_joined(self, name: str) -> None: ...
    def cluster_left(self, name: str) -> None: ...
    def cluster_local_names(self) -> list[str]: ...
    def cluster_drop(self, name: str) -> None: ...


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
        opts: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
        self._r = redis.Redis.from_url(url, **opts)
        # The consumer's blocking reads wait up to 0.5 s: a connection of its own.
        self._rx = redis.Redis.from_url(url, **{**opts, "socket_timeout": timeout + 1.0})
        self.k_log = f"{prefix}:log"
        self.k_presence = f"{prefix}:presence"
        self.k_nodes = f"{prefix}:nodes"
        self.k_node = f"{prefix}:node:{self.node}"
        self.k_members = f"{prefix}:members:{self.node}"
        self.k_guests = f"{prefix}:guests"
        self._claim = self._r.register_script(_CLAIM)
        self._claim_guest = self._r.register_script(_CLAIM_GUEST)
        self._begin_registration = self._r.register_script(_BEGIN_REGISTRATION)
        self._end_registration = self._r.register_script(_END_REGISTRATION)
        self._release = self._r.register_script(_RELEASE)
        self._rejoin = self._r.register_script(_REJOIN)
        self._reap = self._r.register_script(_REAP)
        self._beat = self._r.register_script(_BEAT)
        self._lock = threading.Lock()  # guards _owners and _up (module docstring)
        self._owners: dict[str, str] = {}  # username key -> node, the whole cluster
        # Keys claimed by logins here whose sessions are not in the server's maps yet:
        # the resync must not take them for leftovers of a session that ended.
        self._claiming: dict[str, int] = {}
        self._guests: set[str] = set()  # the keys this node's guests hold (for _REJOIN)
        self._up = True
        self.outages = 0  # times Redis became unreachable (metrics); under _lock
        self._up_event = threading.Event()  # set while _up: for wait_available()
        self._up_event.set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._handler: Handler | None = None
        self._last_seq: Callable[[], int] = lambda: 0
        self._stored_seq: Callable[[], int] = lambda: 0
        self._range: Callable[[int, int], list[Stored]] = lambda a, b: []
        self._last_id = "0-0"
        self.gaps_filled = 0  # messages read from PostgreSQL because their entry was lost

    # ------------------------------------------------------------ set-up

    def check(self) -> str:
        """A line about the Redis server; ClusterUnavailable if it cannot be reached."""
        try:
            info = self._r.info("server")
            nodes = self._r.smembers(self.k_nodes)
            online = self._r.hlen(self.k_presence)
        except redis.RedisError as exc:
            raise ClusterUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        return (
            f"redis {info.get('redis_version')} at {self.url}, prefix {self.prefix!r}: "
            f"{len(nodes)} node(s) alive, {online} user(s) online"
        )

    def snapshot(self) -> list[str]:
        """Register this node; the names online on other nodes now, and the stream
        position from which the consumer goes on (taken first: later changes replay)."""
        try:
            last = cast(list[tuple[str, Any]], self._r.xrevrange(self.k_log, count=1))
            self._last_id = last[0][0] if last else "0-0"
            pipe = self._r.pipeline()
            pipe.sadd(self.k_nodes, self.node)
            pipe.set(self.k_node, "1", px=int(self.ttl * 1000))
            pipe.hgetall(self.k_presence)
            *_, presence = pipe.execute()
        except redis.RedisError as exc:
            raise ClusterUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        names = []
        with self._lock:
            for key, value in presence.items():
                node, _, name = value.partition("|")
                self._owners[key] = node
                names.append(name)
        return names

    def start(
        self,
        handler: Handler,
        last_seq: Callable[[], int],
        stored_seq: Callable[[], int],
        read_range: Callable[[int, int], list[Stored]],
    ) -> None:
        self._handler = handler
        self._last_seq = last_seq
        self._stored_seq = stored_seq
        self._range = read_range
        for target, name in (
            (self._consume, "chat-cluster"),
            (self._keep_alive, "chat-cluster-beat"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Stop the threads and strike this node off (its users left one by one as
        their connections closed)."""
        self._stopping.set()
        for t in self._threads:
            t.join(3.0)
        try:
            pipe = self._r.pipeline()
            pipe.delete(self.k_node, self.k_members)
            pipe.srem(self.k_nodes, self.node)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not strike this node off in Redis (the others will): %s", exc)
        self.disconnect()

    def disconnect(self) -> None:
        """Close the connections to Redis (``close()`` does, after striking off)."""
        self._r.close()
        self._rx.close()

    # ------------------------------------------------------------ state

    @property
    def available(self) -> bool:
        return self._up

    def _set_up(self, up: bool, why: object = None) -> None:
        with self._lock:
            changed = self._up != up
            self._up = up
            if changed and not up:
                self.outages += 1
            if up:
                self._up_event.set()
            else:
                self._up_event.clear()
        if changed and up:
            log.warning("Redis at %s is reachable again", self.url)
        elif changed:
            log.error(
                "Redis at %s is unreachable (%s); sends and logins get 'unavailable'", self.url, why
            )

    def wait_available(self, timeout: float) -> bool:
        """Wait until Redis is reachable (again); False after ``timeout`` s."""
        return self._up_event.wait(timeout)

    def online(self, key: str) -> bool:
        """Whether the user (by username key) is logged in on any node."""
        return key in self._owners

    # ------------------------------------------------------------ reader threads

    def claim(self, name: str) -> str | None:
        """A login on this node: the node that had this user before (None: nobody).
        ClusterUnavailable when Redis cannot be reached."""
        key = username_key(name)
        with self._lock:
            self._claiming[key] = self._claiming.get(key, 0) + 1
        try:
            old = self._claim(
                keys=[self.k_presence, self.k_log, self.k_members],
                args=[key, self.node, name, STREAM_MAX, self.prefix],
            )
        except redis.RedisError as exc:
            self.settled(name)
            self._set_up(False, exc)
            raise ClusterUnavailable(f"the cluster is unreachable ({exc})") from exc
        with self._lock:
            self._owners[key] = self.node
        return None if old is None else str(old).partition("|")[0]

    def claim_guest(self, name: str) -> bool:
        """An IRC guest's claim of a nick (docs/IRC.md): False if any node has a
        session of that name or a registration of it is under way (the guest gets 433).
        True: a claim in progress, as :meth:`claim`'s, until the caller's
        :meth:`settled`. ClusterUnavailable when Redis cannot be reached."""
        key = username_key(name)
        with self._lock:
            self._claiming[key] = self._claiming.get(key, 0) + 1
        try:
            ok = self._claim_guest(
                keys=[
                    self.k_presence,
                    self.k_log,
                    self.k_members,
                    self.k_guests,
                    self._k_registering(key),
                ],
                args=[key, self.node, name, STREAM_MAX],
            )
        except redis.RedisError as exc:
            self.settled(name)
            self._set_up(False, exc)
            raise ClusterUnavailable(f"the cluster is unreachable ({exc})") from exc
        if not ok:
            self.settled(name)
            return False
        with self._lock:
            self._owners[key] = self.node
            self._guests.add(key)
        return True

    def begin_registration(self, name: str) -> bool:
        """A new account of this name is about to be stored: False while an IRC guest
        holds the name on any node. Until :meth:`end_registration` (or, if this node
        dies meanwhile, for ``REGISTERING_MS``) no guest can claim it.
        ClusterUnavailable when Redis cannot be reached."""
        key = username_key(name)
        try:
            ok = self._begin_registration(
                keys=[self.k_guests, self._k_registering(key)], args=[key, REGISTERING_MS]
            )
        except redis.RedisError as exc:
            self._set_up(False, exc)
            raise ClusterUnavailable(f"the cluster is unreachable ({exc})") from exc
        return bool(ok)

    def end_registration(self, name: str) -> None:
        try:
            self._end_registration(keys=[self._k_registering(username_key(name))])
        except redis.RedisError as exc:
            # The mark expires by itself (REGISTERING_MS): guests wait until then.
            self._set_up(False, exc)

    def _k_registering(self, key: str) -> str:
        return f"{self.prefix}:registering:{key}"

    def settled(self, name: str) -> None:
        """The login that claimed ``name`` began its session here, or gave up."""
        key = username_key(name)
        with self._lock:
            n = self._claiming.get(key, 0) - 1
            if n > 0:
                self._claiming[key] = n
            else:
                self._claiming.pop(key, None)

    def release(self, name: str) -> None:
        """This node's session of ``name`` ended (not when another node took it over)."""
        key = username_key(name)
        with self._lock:
            if self._owners.get(key) == self.node:
                del self._owners[key]
            self._guests.discard(key)
        try:
            self._release(
                keys=[self.k_presence, self.k_log, self.k_members, self.k_guests],
                args=[key, self.node, name, STREAM_MAX],
            )
        except redis.RedisError as exc:
            # The resync after Redis returns releases it (users this node does not have).
            self._set_up(False, exc)

    def publish(self, stored: list[tuple[int, NewMessage]]) -> None:
        """Append stored messages to the stream, in seq order (under the seq lock).
        A failure is logged, not raised: they are stored, and the nodes' gap fill
        delivers them (module docstring)."""
        pipe = self._r.pipeline(transaction=False)
        for seq, m in stored:
            fields: dict[FieldT, EncodableT] = {
                "k": "m",
                "seq": seq,
                "ts": repr(m.ts),
                "s": m.sender,
                "t": m.to or "",
                "b": m.body,
                "q": "1" if m.inbox else "",
            }
            # Rooms (docs/PROTOCOL.md §Rooms): a public message's room, when not lobby,
            # and a room event's room and kind (its body is the change's detail), as
            # the log's row has them (chatroom_server.roomstore).
            if m.change is not None:
                fields["r"] = m.change.room
                fields["e"] = m.change.event.value
            elif m.room is not None and m.to is None:
                fields["r"] = m.room
            pipe.xadd(self.k_log, fields, maxlen=STREAM_MAX, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._set_up(False, exc)

    def ready(self) -> None:
        """Raise StorageError while Redis is known to be down: a send then gets
        ``unavailable`` instead of an ack for a message nobody can be told about."""
        if not self._up:
            raise StorageError("the cluster's Redis is unreachable")

    # ------------------------------------------------------------ the consumer

    def _consume(self) -> None:
        handler = self._handler
        assert handler is not None
        last_check = time.monotonic()
        last_resync = time.monotonic()
        pending: list[Stored] = []
        inbox: set[int] = set()
        while not self._stopping.is_set():
            try:
                reply = cast(
                    _XRead | None,
                    self._rx.xread({self.k_log: self._last_id}, count=1000, block=500),
                )
            except redis.RedisError as exc:
                self._set_up(False, exc)
                self._stopping.wait(0.5)
                reply = None
            else:
                if not self._up:
                    self._set_up(True)
                    self._resync(handler)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    if fields.get("k") == "m":
                        m = _stored(fields)
                        if m is not None:
                            pending.append(m)
                            if fields.get("q"):
                                inbox.add(m.seq)
                        continue
                    pending, inbox = self._deliver(handler, pending, inbox)
                    self._presence(handler, fields)
            pending, inbox = self._deliver(handler, pending, inbox)
            now = time.monotonic()
            if not reply and now - last_check >= 1.0:
                last_check = now
                self._catch_up(handler)
            if self._up and now - last_resync >= 10.0:
                last_resync = now
                self._resync(handler)

    def _deliver(
        self, handler: Handler, pending: list[Stored], inbox: set[int]
    ) -> tuple[list[Stored], set[int]]:
        """Hand ``pending`` over in seq order, gaps filled; what could not be (the
        database is unreachable for a gap) stays pending."""
        if not pending:
            return pending, inbox
        expected = self._last_seq() + 1
        out: list[Stored] = []
        for m in sorted(pending, key=lambda m: m.seq):
            if m.seq < expected:
                continue  # already delivered (a gap fill got there first)
            if m.seq > expected:
                try:
                    missing = self._range(expected - 1, m.seq - 1)
                except StorageError as exc:
                    log.error("cannot read seqs %d..%d to fill a gap: %s", expected, m.seq - 1, exc)
                    if out:
                        handler.cluster_deliver(out, inbox)
                    return [x for x in pending if x.seq >= m.seq], inbox
                self.gaps_filled += len(missing)
                out += missing
                inbox = inbox | _may_have_waited(missing)
            out.append(m)
            expected = m.seq + 1
        if out:
            handler.cluster_deliver(out, inbox)
        return [], set()

    def _catch_up(self, handler: Handler) -> None:
        """Quiet stream: deliver what PostgreSQL has beyond our last seq (a lost
        publication of the last messages)."""
        try:
            stored = self._stored_seq()
            last = self._last_seq()
            if stored > last:
                missing = self._range(last, stored)
                if missing:
                    log.warning(
                        "%d message(s) were stored but not published; delivering", len(missing)
                    )
                    self.gaps_filled += len(missing)
                    handler.cluster_deliver(missing, _may_have_waited(missing))
        except StorageError as exc:
            log.debug("catch-up check failed: %s", exc)

    def _presence(self, handler: Handler, fields: dict[str, str]) -> None:
        kind, name, node = fields.get("k"), fields.get("u", ""), fields.get("n", "")
        key = username_key(name)
        if kind in ("j", "t"):
            with self._lock:
                self._owners[key] = node
            if node != self.node:
                handler.cluster_joined(name)  # takes over a session here, if any
        elif kind == "l":
            with self._lock:
                if self._owners.get(key) != node:
                    return  # an older session's departure: the user is on another node
                del self._owners[key]
            if node != self.node:
                handler.cluster_left(name)

    def _resync(self, handler: Handler) -> None:
        """Compare the presence hash with what this node believes and repair both
        sides: others' users that were missed (Redis restarted, events trimmed), this
        node's users that Redis lost or still lists after they left."""
        try:
            presence = cast(dict[str, str], self._r.hgetall(self.k_presence))
        except redis.RedisError as exc:
            self._set_up(False, exc)
            return
        with self._lock:
            claiming = set(self._claiming)
        local = {username_key(n): n for n in handler.cluster_local_names()}
        theirs: dict[str, tuple[str, str]] = {}
        for key, value in presence.items():
            node, _, name = value.partition("|")
            theirs[key] = (node, name)
        with self._lock:
            mine = dict(self._owners)
        for key, (node, name) in theirs.items():
            if node == self.node:
                if key not in local and key not in claiming:
                    self.release(name)
            elif mine.get(key) != node:
                with self._lock:
                    self._owners[key] = node
                handler.cluster_joined(name)
        for key, node in mine.items():
            if node != self.node and key not in theirs:
                with self._lock:
                    if self._owners.get(key) == node:
                        del self._owners[key]
                handler.cluster_left(key)
        self._claim_back(
            handler, [n for k, n in local.items() if theirs.get(k, ("",))[0] != self.node]
        )

    def _claim_back(self, handler: Handler, names: Iterable[str]) -> None:
        for name in names:
            key = username_key(name)
            with self._lock:
                guest = key in self._guests
            try:
                ok = self._rejoin(
                    keys=[
                        self.k_presence,
                        self.k_log,
                        self.k_members,
                        self.k_guests,
                        self._k_registering(key),
                    ],
                    args=[key, self.node, name, STREAM_MAX, "1" if guest else ""],
                )
            except redis.RedisError as exc:
                self._set_up(False, exc)
                return
            if ok:
                with self._lock:
                    self._owners[key] = self.node
            else:
                log.info("%s logged in on another node meanwhile; closing this session", name)
                handler.cluster_drop(name)

    # ------------------------------------------------------------ heartbeat, reaper

    def _keep_alive(self) -> None:
        handler = self._handler
        assert handler is not None
        period = self.ttl / 5
        while not self._stopping.wait(period):
            try:
                alive = self._beat(
                    keys=[self.k_nodes, self.k_node], args=[self.node, int(self.ttl * 1000)]
                )
                if not alive:
                    log.warning(
                        "this node was struck off the cluster (stopped too long?); rejoining"
                    )
                    pipe = self._r.pipeline()
                    pipe.sadd(self.k_nodes, self.node)
                    pipe.set(self.k_node, "1", px=int(self.ttl * 1000))
                    pipe.execute()
                    self._claim_back(handler, handler.cluster_local_names())
                for other in cast(set[str], self._r.smembers(self.k_nodes)):
                    if other == self.node:
                        continue
                    n = self._reap(
                        keys=[
                            self.k_presence,
                            self.k_log,
                            self.k_nodes,
                            f"{self.prefix}:node:{other}",
                            f"{self.prefix}:members:{other}",
                            self.k_guests,
                        ],
                        args=[other, STREAM_MAX],
                    )
                    if n >= 0:
                        log.warning("node %s stopped answering; %d of its users left", other, n)
            except redis.RedisError as exc:
                self._set_up(False, exc)


def _stored(fields: dict[str, str]) -> Stored | None:
    try:
        return Stored(
            seq=int(fields["seq"]),
            ts=float(fields["ts"]),
            sender=fields["s"],
            to=fields.get("t") or None,
            body=fields["b"],
            room=fields.get("r") or (LOBBY if not fields.get("t") else None),
            event=fields.get("e") or None,
        )
    except (KeyError, ValueError) as exc:
        log.error("malformed message on the cluster stream (%s): %r", exc, fields)
        return None
