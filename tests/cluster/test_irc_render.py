"""IRC lines rendered from the events the frames carry (chatroom_server.frames), on a
cluster node too: what reaches its IRC clients from the cluster's stream (a public
message, a room's, a DM, chatroom_server.node and chatroom_server.noderooms) is
rendered without decoding its JSON again, as on one node
(tests/server/test_irc_render.py). Real Redis and PostgreSQL (tests/cluster/conftest.py)."""

from __future__ import annotations

from chatroom.testing import TestServer
from tests.cluster.conftest import Cluster
from tests.helpers import connect
from tests.server.test_irc import Irc


def irc(node: TestServer, nick: str) -> Irc:
    client = Irc(node.server.irc_addresses[0])
    client.send("CAP REQ :message-tags server-time", "CAP END")
    client.register(nick)
    return client


def test_the_streams_messages_are_rendered_without_decoding(
    cluster: Cluster, decoded: list[str]
) -> None:
    a, b = cluster.add(irc_port=0), cluster.add(irc_port=0)
    json_user = connect(b.address, "jsonuser")
    here, there = irc(a, "ircuser"), irc(b, "otheruser")
    # JSON on b -> IRC on a and b: the public message with its seq (msgid) from the log.
    json_user.send(command="pm", message="hello irc", id=1)
    seq = json_user.until("ack", id=1)["seq"]
    for client in (here, there):
        line = client.until("PRIVMSG")
        assert line.startswith("@time=") and f";msgid={seq} " in line
        assert line.endswith(":jsonuser!jsonuser@chatroom PRIVMSG #lobby :hello irc")
    # IRC on a -> IRC on b and JSON on b, and its sender's ack (no line).
    here.send("PRIVMSG #lobby :from irc")
    assert there.until("from irc").endswith(":ircuser!ircuser@chatroom PRIVMSG #lobby :from irc")
    assert json_user.until("broadcast")["message"] == "from irc"
    # DMs from the other node, both ways.
    json_user.send(command="dm", to="ircuser", message="psst", id=2)
    assert here.until("psst").endswith(":jsonuser!jsonuser@chatroom PRIVMSG ircuser :psst")
    here.send("PRIVMSG otheruser :across")
    assert there.until("across").endswith(":ircuser!ircuser@chatroom PRIVMSG otheruser :across")
    # A room's message, between the nodes (a room row of the stream).
    here.send("JOIN #den")
    here.until("366")
    there.send("JOIN #den")
    there.until("366")
    here.send("PRIVMSG #Den :in the den")
    assert there.until("in the den").endswith("PRIVMSG #den :in the den")
    there.send("PRIVMSG #den :and back")
    assert here.until("and back").endswith(":otheruser!otheruser@chatroom PRIVMSG #den :and back")
    # Every frame the stream brought carried its events; what was decoded is only the
    # replies made by encode() alone (login_ok, user lists).
    carried = {"Broadcast", "DirectMessage", "Ack", "UsersDelta", "RoomEvent"}
    assert not carried & set(decoded), decoded
