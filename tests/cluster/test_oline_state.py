"""An IRC O-line's operator in the cluster's shared state (docs/CLUSTER.md, "Server
operators"), on real Redis and PostgreSQL: a node started after the ``OPER`` knows the
session is an operator, and no node takes a later session of that user for one."""

from __future__ import annotations

import threading

import redis

from chatroom.protocol import username_key
from tests.cluster.conftest import Cluster, PrivateRedis
from tests.cluster.test_operators_cluster import OPERS, irc
from tests.cluster.test_rooms_cluster import v2
from tests.server.test_irc import Irc

T = 20.0


def whois_313(asker: Irc, nick: str) -> bool:
    """Whether WHOIS ``nick`` says it is an operator (313), to the end of the reply."""
    asker.send(f"WHOIS {nick}")
    lines = [asker.until(" 311 ")]
    while " 318 " not in lines[-1]:
        lines.append(asker.line())
    return any(" 313 " in line and f" {nick} :is an IRC operator" in line for line in lines)


def joined(c: Irc, nick: str) -> None:
    """Until ``c`` sees ``nick`` join (others may join before)."""
    while not c.until("JOIN").startswith(f":{nick}!"):
        pass


def wallops_barrier(op: Irc, watcher: Irc, tag: str) -> None:
    """A WALLOPS from ``op``, seen by ``watcher`` (+w) on another node: that node's
    consumer has applied every entry before it."""
    op.send(f"WALLOPS :{tag}")
    assert watcher.until("WALLOPS").endswith(f":{tag}")


def test_a_node_started_after_the_oper_knows_the_operator(cluster: Cluster) -> None:
    a = cluster.add(irc_port=0, irc_opers=OPERS)
    op = irc(a, "op")
    op.send("OPER operuser operpassword")
    op.until("381")
    b = cluster.add(irc_port=0, irc_opers=OPERS)  # after the OPER
    asker = irc(b, "asker")
    asker.send("MODE asker +w")
    asker.until("MODE")
    wallops_barrier(op, asker, "after b started")
    assert whois_313(asker, "op")
    json_asker, _ = v2(b.address, "jsonasker")
    json_asker.send(command="whois", user="op", id=1)
    assert json_asker.until("whois", id=1)["server_operator"] is True
    # Gone: neither node b nor one started afterwards takes its user for an operator.
    op.send("QUIT")
    op.closed()
    assert asker.until("QUIT").startswith(":op!")
    c = cluster.add(irc_port=0)
    later = irc(c, "later")
    irc(a, "op")  # a new session, no OPER
    joined(later, "op")
    joined(asker, "op")
    assert not whois_313(later, "op")
    assert not whois_313(asker, "op")


def test_a_new_session_on_the_operators_node_is_no_operator_anywhere(cluster: Cluster) -> None:
    """Logging in again on the same node writes no takeover entry on the stream: the
    other nodes learn from an operator entry that the O-line's session is over."""
    a = cluster.add(irc_port=0, irc_opers=OPERS)
    b = cluster.add(irc_port=0, irc_opers=OPERS)
    asker = irc(b, "asker")
    asker.send("MODE asker +w")
    asker.until("MODE")
    op = irc(a, "op")
    op.send("OPER operuser operpassword")
    op.until("381")
    wallops_barrier(op, asker, "opered")
    assert whois_313(asker, "op")
    again = irc(a, "op")  # replaces the operator's session on node a
    op.closed()
    # A lobby message from node a after the new login: node b has read everything
    # before it, the new session's claim included.
    again.send("PRIVMSG #lobby :barrier")
    assert asker.until("PRIVMSG").endswith(":barrier")
    assert not whois_313(asker, "op")
    # A node started now does not take it for one either.
    c = cluster.add(irc_port=0)
    later = irc(c, "later")
    assert not whois_313(later, "op")


def opers_entry(url: str, prefix: str, nick: str, timeout: float = T) -> bool:
    """Whether ``P:opers`` gets an entry for ``nick`` within ``timeout``: a node writes
    it from a thread of its own (its resync after Redis returns), which offers nothing
    to wait on but Redis itself."""
    r = redis.Redis.from_url(url, socket_timeout=2)
    pause = threading.Event()
    try:
        for _ in range(int(timeout / 0.05)):
            if r.hget(f"{prefix}:opers", username_key(nick)) is not None:
                return True
            pause.wait(0.05)
        return r.hget(f"{prefix}:opers", username_key(nick)) is not None
    finally:
        r.close()


def test_redis_restarted_empty_learns_the_operators_again(
    private_redis: PrivateRedis, pg_url: str, redis_prefix: str
) -> None:
    """docs/CLUSTER.md "Server operators": Redis restarted empty loses ``P:opers``; the
    operator's node writes it again when it claims its users back, so a node started
    afterwards knows the operator, and so does one that was running (the claim back's
    ``j`` entry told it the user has a new session)."""
    cluster = Cluster(private_redis.url, pg_url, redis_prefix)
    with cluster.stack:
        a = cluster.add(irc_port=0, irc_opers=OPERS)
        b = cluster.add(irc_port=0, irc_opers=OPERS)
        asker = irc(b, "asker")
        asker.send("MODE asker +w")
        asker.until("MODE")
        op = irc(a, "op")
        op.send("OPER operuser operpassword")
        op.until("381")
        wallops_barrier(op, asker, "opered")
        assert whois_313(asker, "op")

        private_redis.stop()
        private_redis.start()  # empty
        for node in (a, b):
            bus = node.server._b.bus
            assert bus is not None and bus.wait_available(T)
        assert opers_entry(private_redis.url, redis_prefix, "op"), "P:opers was not rewritten"
        # Published after the entry was written, so node b has applied it first.
        wallops_barrier(op, asker, "after the restart")
        assert whois_313(asker, "op")
        c = cluster.add(irc_port=0)
        later = irc(c, "later")
        assert whois_313(later, "op")
