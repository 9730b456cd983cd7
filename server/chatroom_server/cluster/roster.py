"""Who is online on which node of the cluster (docs/CLUSTER.md), this node's view of
Redis's ``P:presence`` and the changes it makes to it.

A login here claims its user (:meth:`Roster.claim`: taken over from another node if
there), an IRC guest only a nick nobody has and nobody is registering
(:meth:`Roster.claim_guest`, docs/IRC.md), and a registration excludes guests of its
name while it runs (:meth:`Roster.begin_registration`). Every change is a script of
:mod:`chatroom_server.cluster.scripts` that also appends the event to the stream; the
consumer applies the events of every node here (:meth:`Roster.apply`). The resync
(:meth:`Roster.resync`) repairs both sides after events were missed.

Each value of the hash names the session as well as its node (``node|name|session``,
:func:`chatroom_server.cluster.scripts.holder`): a server operator's kill is aimed at one
session (:meth:`Roster.holder`), and a later session of the same user is never ended by
it (docs/CLUSTER.md, "Server operators").

The O-line operators of this node's sessions are kept here too (``_opers``), so that
``P:opers`` is written again whenever Redis has lost it (restarted empty) or never got
it (the ``OPER`` came while Redis was unreachable): :meth:`republish_operators`, after
every claim back of this node's users, as presence is (docs/CLUSTER.md, "Server
operators").

A claim here also remembers the id of the stream entry it wrote (``_claim_ids``): the
consumer may read other nodes' entries about that user written *before* it after the
claim (this node was paused, or behind), and such an entry ends no session here
(:meth:`apply`; docs/RELIABILITY.md F13).

``_lock`` guards ``_owners``, ``_sessions``, ``_claiming``, ``_claimed``, ``_guests``,
``_opers`` and ``_claim_ids``; no callback into the server runs under it, and no call to Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol, cast

import redis

from chatroom.protocol import username_key
from chatroom_server.cluster import scripts
from chatroom_server.cluster.errors import ClusterUnavailable
from chatroom_server.cluster.link import Link
from chatroom_server.cluster.scripts import STREAM_MAX, Keys, holder
from chatroom_server.messagelog import Stored

log = logging.getLogger(__name__)


class Handler(Protocol):
    """What the bus calls on the server, on the consumer thread."""

    def cluster_deliver(self, messages: list[Stored], inbox: set[int]) -> None: ...
    def cluster_joined(self, name: str) -> None: ...
    def cluster_left(self, name: str) -> None: ...
    def cluster_local_names(self) -> list[str]: ...
    def cluster_drop(self, name: str) -> None: ...
    def cluster_operator(self, fields: dict[str, str]) -> None: ...


class Roster:
    """See the module docstring."""

    def __init__(self, link: Link, keys: Keys) -> None:
        self._link = link
        self._keys = keys
        self.node = keys.node
        r = link.r
        self._claim = r.register_script(scripts.CLAIM)
        self._claim_guest = r.register_script(scripts.CLAIM_GUEST)
        self._begin_registration = r.register_script(scripts.BEGIN_REGISTRATION)
        self._end_registration = r.register_script(scripts.END_REGISTRATION)
        self._release = r.register_script(scripts.RELEASE)
        self._rejoin = r.register_script(scripts.REJOIN)
        self._oper = r.register_script(scripts.OPER)
        self._reoper = r.register_script(scripts.REOPER)
        self._lock = threading.Lock()  # guards the seven below
        self._owners: dict[str, str] = {}  # username key -> node, the whole cluster
        # username key -> the id of this node's session of that user, as its last claim
        # here wrote it (claim_back writes it again).
        self._sessions: dict[str, str] = {}
        # Keys claimed by logins here whose sessions are not in the server's maps yet:
        # the resync must not take them for leftovers of a session that ended.
        self._claiming: dict[str, int] = {}
        # Keys claimed here since the resync under way (or the last) began: newer than
        # its read of the hash (``resync``; one at a time, on the consumer thread).
        self._claimed: set[str] = set()
        self._guests: set[str] = set()  # the keys this node's guests hold (for REJOIN)
        # username key -> (name, session id): this node's sessions an IRC O-line made
        # operators, until the session ends or another takes the user (republished).
        self._opers: dict[str, tuple[str, str]] = {}
        # username key -> the stream id of this node's latest claim entry of that user,
        # until the consumer reads an entry about that user at or after it.
        self._claim_ids: dict[str, tuple[int, int]] = {}

    def load(self, presence: dict[str, str]) -> list[str]:
        """Take the presence hash as it is now; the names online."""
        names = []
        with self._lock:
            for key, value in presence.items():
                node, name, _ = holder(value)
                self._owners[key] = node
                names.append(name)
        return names

    def online(self, key: str) -> bool:
        """Whether the user (by username key) is logged in on any node."""
        return key in self._owners

    def holder(self, key: str) -> tuple[str, str] | None:
        """The node and session id of the user's session now, read from Redis (not
        this node's view, which lags by the stream); None: not online anywhere.
        ClusterUnavailable when Redis cannot be reached."""
        try:
            value = self._link.r.hget(self._keys.presence, key)
        except redis.RedisError as exc:
            raise self._unreachable(exc) from exc
        if value is None:
            return None
        node, _, session = holder(str(value))
        return node, session

    # ------------------------------------------------------------ changes from here

    def _unreachable(self, exc: redis.RedisError) -> ClusterUnavailable:
        self._link.set_up(False, exc)
        return ClusterUnavailable(f"the cluster is unreachable ({exc})")

    def claim(self, name: str, session: str) -> str | None:
        """A login on this node, of the session ``session`` (its id here): the node that
        had this user before (None: nobody). ClusterUnavailable when Redis cannot be
        reached."""
        key = username_key(name)
        with self._lock:
            self._claiming[key] = self._claiming.get(key, 0) + 1
            self._claimed.add(key)
        k = self._keys
        try:
            reply = self._claim(
                keys=[k.presence, k.log, k.members, k.opers],
                args=[key, self.node, name, STREAM_MAX, k.prefix, self._link.deadline(), session],
            )
        except redis.RedisError as exc:
            # It may still run when the partition heals, long after its client was
            # answered: its deadline makes it change nothing then (scripts.CLAIM).
            self.settled(name)
            raise self._unreachable(exc) from exc
        if reply == scripts.LATE:
            self.settled(name)
            raise ClusterUnavailable("the cluster answered too late")
        old, entry = (str(x) for x in reply)
        with self._lock:
            self._owners[key] = self.node
            self._sessions[key] = session
            self._opers.pop(key, None)  # a new session: no operator (scripts.CLAIM)
            if entry:
                self._claim_ids[key] = _stream_id(entry)
        return holder(old)[0] if old else None

    def claim_guest(self, name: str, session: str) -> bool:
        """An IRC guest's claim of a nick (docs/IRC.md): False if any node has a
        session of that name or a registration of it is under way (the guest gets 433).
        True: a claim in progress, as :meth:`claim`'s, until the caller's
        :meth:`settled`. ClusterUnavailable when Redis cannot be reached."""
        key = username_key(name)
        with self._lock:
            self._claiming[key] = self._claiming.get(key, 0) + 1
            self._claimed.add(key)
        k = self._keys
        try:
            ok = self._claim_guest(
                keys=[k.presence, k.log, k.members, k.guests, k.registering(key)],
                args=[key, self.node, name, STREAM_MAX, session],
            )
        except redis.RedisError as exc:
            self.settled(name)
            raise self._unreachable(exc) from exc
        if not ok:
            self.settled(name)
            return False
        with self._lock:
            self._owners[key] = self.node
            self._sessions[key] = session
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
                keys=[self._keys.guests, self._keys.registering(key)],
                args=[key, scripts.REGISTERING_MS],
            )
        except redis.RedisError as exc:
            raise self._unreachable(exc) from exc
        return bool(ok)

    def end_registration(self, name: str) -> None:
        try:
            self._end_registration(keys=[self._keys.registering(username_key(name))])
        except redis.RedisError as exc:
            # The mark expires by itself (REGISTERING_MS): guests wait until then.
            self._link.set_up(False, exc)

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
            self._sessions.pop(key, None)
            self._guests.discard(key)
            self._opers.pop(key, None)
        k = self._keys
        try:
            self._release(
                keys=[k.presence, k.log, k.members, k.guests, k.opers],
                args=[key, self.node, name, STREAM_MAX],
            )
        except redis.RedisError as exc:
            # The resync after Redis returns releases it (users this node does not have).
            self._link.set_up(False, exc)

    def oper(self, name: str, session: str) -> bool:
        """An IRC O-line made this node's session ``session`` of ``name`` an operator:
        recorded in Redis (``P:opers``, for the nodes that start later) and announced
        on the stream, if that session still holds the user. False if not, or if Redis
        cannot be reached: then it is written once Redis answers again
        (:meth:`republish_operators`), as long as the session lasts."""
        key = username_key(name)
        k = self._keys
        with self._lock:
            self._opers[key] = (name, session)
        try:
            ok = self._oper(
                keys=[k.presence, k.opers, k.log], args=[key, self.node, name, session, STREAM_MAX]
            )
        except redis.RedisError as exc:
            self._link.set_up(False, exc)
            return False
        if not ok:
            self._forget_oper(key, session)
        return bool(ok)

    def _forget_oper(self, key: str, session: str) -> None:
        with self._lock:
            if self._opers.get(key, ("", ""))[1] == session:
                del self._opers[key]

    def republish_operators(self) -> int:
        """Write this node's O-line operators into ``P:opers`` again where it lacks them
        (Redis restarted empty: the nodes that start later read it; and the others,
        which the claim back's ``j`` entries told the user had a new session, learn from
        the ``oper`` entry that follows it). Called after each claim back; the operators
        written."""
        with self._lock:
            opers = list(self._opers.items())
        k = self._keys
        written = 0
        for key, (name, session) in opers:
            try:
                done = self._reoper(
                    keys=[k.presence, k.opers, k.log],
                    args=[key, self.node, name, session, STREAM_MAX],
                )
            except redis.RedisError as exc:
                self._link.set_up(False, exc)
                return written
            if done == 0:
                self._forget_oper(key, session)  # another session holds the user now
            elif done == 1:
                written += 1
                log.info("%s's O-line operator session written to the cluster again", name)
        return written

    def operators(self, presence: dict[str, str], opers: dict[str, str]) -> list[dict[str, str]]:
        """The O-line operators' sessions in ``opers`` (``P:opers`` read with
        ``presence``) that still hold their users, as the operator entries that
        announced them: what a node that starts now applies first."""
        out = []
        for key, value in opers.items():
            node, _, session = value.partition("|")
            now = presence.get(key)
            if now is None:
                continue
            held, name, held_session = holder(now)
            if (held, held_session) == (node, session):
                out.append({"k": "o", "a": "oper", "u": name, "n": node})
        return out

    # ------------------------------------------------------------ changes from the stream

    def apply(self, handler: Handler, fields: dict[str, str], entry_id: str = "") -> None:
        """A presence event read from the stream (``j`` joined, ``t`` taken over, ``l``
        left), of any node; ``entry_id``, its id in the stream.

        Another node's ``j`` or ``t`` before this node's latest claim of that user in
        the stream is older than the claim, which took the user over from whatever it
        says: it ends no session here (docs/RELIABILITY.md F13). A ``l`` is judged as
        ever: it counts only if it names the node that holds the user."""
        kind, name, node = fields.get("k"), fields.get("u", ""), fields.get("n", "")
        key = username_key(name)
        if kind in ("j", "t") and entry_id:
            at = _stream_id(entry_id)
            with self._lock:
                mine = self._claim_ids.get(key)
                if mine is not None and at >= mine:
                    del self._claim_ids[key]  # read up to this node's claim: done
                elif mine is not None and node != self.node:
                    log.info(
                        "%s's entry from %s is older than this node's claim; ignored", name, node
                    )
                    return
        if kind in ("j", "t"):
            with self._lock:
                self._owners[key] = node
                if node != self.node:
                    self._opers.pop(key, None)
            if node != self.node:
                handler.cluster_joined(name)  # takes over a session here, if any
        elif kind == "l":
            with self._lock:
                if self._owners.get(key) != node:
                    return  # an older session's departure: the user is on another node
                del self._owners[key]
            if node != self.node:
                handler.cluster_left(name)

    def resync(self, handler: Handler) -> None:
        """Compare the presence hash with what this node believes and repair both
        sides: others' users that were missed (Redis restarted, events trimmed), this
        node's users that Redis lost or still lists after they left.

        A claim here that the read of the hash may not show (under way as it began, or
        begun since) is left alone when the hash has another node's session of that
        user: that one is older, and a takeover after the claim comes as a stream
        entry. Ending the session here would leave the user with none."""
        with self._lock:
            newer = set(self._claiming)
            self._claimed.clear()
        try:
            presence = cast(dict[str, str], self._link.r.hgetall(self._keys.presence))
        except redis.RedisError as exc:
            self._link.set_up(False, exc)
            return
        with self._lock:
            claiming = set(self._claiming)
        local = {username_key(n): n for n in handler.cluster_local_names()}
        theirs: dict[str, tuple[str, str]] = {}
        for key, value in presence.items():
            node, name, _ = holder(value)
            theirs[key] = (node, name)
        with self._lock:
            mine = dict(self._owners)
        for key, (node, name) in theirs.items():
            if node == self.node:
                if key not in local and key not in claiming:
                    self.release(name)
            elif mine.get(key) != node:
                with self._lock:
                    if key in newer or key in self._claimed:
                        continue  # claimed here after the hash's session (docstring)
                    self._owners[key] = node
                handler.cluster_joined(name)
        for key, node in mine.items():
            if node != self.node and key not in theirs:
                with self._lock:
                    if self._owners.get(key) == node:
                        del self._owners[key]
                handler.cluster_left(key)
        self.claim_back(
            handler, [n for k, n in local.items() if theirs.get(k, ("",))[0] != self.node]
        )

    def claim_back(self, handler: Handler, names: Iterable[str]) -> None:
        """Hold this node's users in Redis again (it lost them, or struck this node
        off); a user who logged in on another node meanwhile is dropped here. Then
        this node's O-line operators, where Redis lacks them
        (:meth:`republish_operators`)."""
        k = self._keys
        for name in names:
            key = username_key(name)
            with self._lock:
                guest = key in self._guests
                session = self._sessions.get(key, "")
            try:
                ok = self._rejoin(
                    keys=[k.presence, k.log, k.members, k.guests, k.registering(key)],
                    args=[key, self.node, name, STREAM_MAX, "1" if guest else "", session],
                )
            except redis.RedisError as exc:
                self._link.set_up(False, exc)
                return
            if ok:
                with self._lock:
                    self._owners[key] = self.node
            else:
                log.info("%s logged in on another node meanwhile; closing this session", name)
                with self._lock:
                    self._opers.pop(key, None)
                handler.cluster_drop(name)
        self.republish_operators()


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry's id (``ms-seq``) as a pair that orders as the stream does."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
