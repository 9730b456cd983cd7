"""An IRC O-line's operator in the cluster's shared state (docs/CLUSTER.md, "Server
operators"), on real Redis and PostgreSQL: a node started after the ``OPER`` knows the
session is an operator, and no node takes a later session of that user for one."""

from __future__ import annotations

from tests.cluster.conftest import Cluster
from tests.cluster.test_operators_cluster import OPERS, irc
from tests.cluster.test_rooms_cluster import v2
from tests.server.test_irc import Irc


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
