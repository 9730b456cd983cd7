"""IRC guests in a cluster (docs/IRC.md, docs/CLUSTER.md): a guest's nick is one session
in the whole cluster. A second guest with it, on any node, gets 433; a registration of
it waits until the guest leaves; a node that dies frees its guests' nicks."""

from __future__ import annotations

import signal
from collections.abc import Callable

from chatroom.testing import TestServer
from tests.cluster.conftest import Cluster, free_port
from tests.helpers import PASSWORD, RawClient, WsClient
from tests.server.test_irc import Irc

T = 10.0


def guest_node(cluster: Cluster) -> TestServer:
    return cluster.add(irc_port=0, irc_guests=True)


def irc(node: TestServer) -> Irc:
    return Irc(node.server.irc_addresses[0])


def test_a_guest_nick_is_433_on_every_other_node(cluster: Cluster) -> None:
    a, b = guest_node(cluster), guest_node(cluster)
    first = irc(a)
    first.send("NICK visitor", "USER u 0 * :R")
    first.until("376")  # a guest is in no channel at the welcome
    second = irc(b)
    second.send("NICK visitor", "USER u 0 * :R")
    # Before, the second node's guest claimed the nick as a login does and took the
    # first one's session over (ERROR ... Logged in from another connection).
    assert " 433 " in second.until("433")
    second.send("NICK VISITOR")  # the same nick ignoring case
    assert " 433 " in second.until("433")
    first.send("PING :still mine")
    assert first.until("PONG").endswith(":still mine")
    # A registration of that name, on either node, waits for the guest to leave.
    for node in (a, b):
        c = RawClient(node.address)
        c.send(command="login", username="visitor", password=PASSWORD, id=1)
        assert "guest" in c.expect_error("unavailable", id=1)["message"]
    first.send("QUIT")
    first.closed()
    second.send("NICK visitor")
    assert second.until(" 001 ").startswith(":chatroom 001 visitor ")
    second.send("QUIT")
    second.closed()
    c = RawClient(b.address)
    c.send(command="login", username="visitor", password=PASSWORD, id=2)
    assert c.expect("login_ok", id=2)["new_user"] is True


def test_a_dead_nodes_guests_free_their_nicks(cluster: Cluster) -> None:
    port = free_port()
    victim = cluster.process("--irc-port", str(port), "--irc-guests")
    survivor = guest_node(cluster)
    doomed = Irc(("127.0.0.1", port))
    doomed.send("NICK visitor", "USER u 0 * :R")
    doomed.until("376")
    watcher = RawClient(survivor.address)
    watcher.send(command="login", username="watcher", password=PASSWORD)
    assert "visitor" in watcher.expect("login_ok")["users"]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(T)
    # The survivor reaps the dead node (--node-timeout 2): the guest leaves ...
    watcher.until("users", left="visitor")
    # ... and its nick is free again, for a guest or for an account.
    heir = irc(survivor)
    heir.send("NICK visitor", "USER u 0 * :R")
    assert heir.until(" 001 ").startswith(":chatroom 001 visitor ")


def _privmsgs_until(read: Callable[[], str], text: str) -> list[str]:
    """The PRIVMSG lines ``read`` gets up to the one with ``text`` (tags cut off)."""
    lines = []
    while True:
        line = read()
        line = line.split(" ", 1)[1] if line.startswith("@") else line
        if " PRIVMSG " in line:
            lines.append(line)
            if line.endswith(f" :{text}"):
                return lines


def test_a_guest_never_gets_its_own_public_message_from_the_stream(cluster: Cluster) -> None:
    # On one node a sender never gets its own broadcast back: with echo-message, one
    # echo (its ack); without, nothing. Every node's clients get the stream's messages in
    # seq order, so whatever a guest got of its own comes before a later message of
    # someone else's.
    a, b = guest_node(cluster), cluster.add(irc_port=0, irc_guests=True, web_port=0)
    here = RawClient(a.address)
    here.login("herewatch")
    there = RawClient(b.address)
    there.login("therewatch")
    echo = irc(a)
    echo.send("CAP REQ :echo-message", "CAP END", "NICK echoguest", "USER u 0 * :R")
    echo.until("376")
    plain = irc(a)
    plain.send("NICK plainguest", "USER u 0 * :R")
    plain.until("376")
    far = irc(b)  # a guest on the other node, which gets both from the stream
    far.send("CAP REQ :echo-message", "CAP END", "NICK farguest", "USER u 0 * :R")
    far.until("376")
    for guest in (echo, plain, far):
        guest.send("JOIN #lobby")
        guest.until("366")
    # And IRC over WebSocket (chatroom_server.web), on b: a guest as the others are.
    web = WsClient(b.web_address, subprotocols=["text.ircv3.net"])
    for line in ("CAP REQ :echo-message", "CAP END", "NICK webguest", "USER u 0 * :R"):
        web.send_text(line)
    while " 376 " not in web.recv_line():
        pass
    web.send_text("JOIN #lobby")
    while " 366 " not in web.recv_line():
        pass
    echo.send("PRIVMSG #lobby :echoed once")
    assert here.until("broadcast", message="echoed once")["from"] == "echoguest"
    plain.send("PRIVMSG #lobby :never back")
    # On b under the fan-out's lock (ClusterNode.cluster_deliver), which far's ack (its
    # echo) waits for: the echo comes after what b's stream brought before.
    there.until("broadcast", message="never back")
    far.send("PRIVMSG #lobby :from afar")
    there.until("broadcast", message="from afar")
    web.send_text("PRIVMSG #lobby :over the web")
    there.until("broadcast", message="over the web")
    there.send(command="pm", message="last")
    said = {
        "echoed once": ":echoguest!echoguest@chatroom PRIVMSG #lobby :echoed once",
        "never back": ":plainguest!plainguest@chatroom PRIVMSG #lobby :never back",
        "from afar": ":farguest!farguest@chatroom PRIVMSG #lobby :from afar",
        "over the web": ":webguest!webguest@chatroom PRIVMSG #lobby :over the web",
        "last": ":therewatch!therewatch@chatroom PRIVMSG #lobby :last",
    }
    everything = list(said.values())
    assert _privmsgs_until(echo.line, "last") == everything
    assert _privmsgs_until(far.line, "last") == everything
    assert _privmsgs_until(web.recv_line, "last") == everything
    assert _privmsgs_until(plain.line, "last") == [m for m in everything if "plainguest" not in m]
