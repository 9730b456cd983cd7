"""NICK after registration (docs/IRC.md): a guest (--irc-guests) may take a free nick,
case changes included; everyone who shares a channel with it sees one NICK line, JSON
clients a users_delta that says ``renamed`` and a guest room's ``nick`` event; the old
nick is free at once. An account's nick is its name (447)."""

from __future__ import annotations

from tests.helpers import PASSWORD, RawClient, connect
from tests.server.test_irc import Irc, irc_address
from tests.server.test_irc_guests import guest, guests


def _quiet(irc: Irc) -> list[str]:
    """What ``irc`` gets before the answer to a PING: its lines since."""
    irc.send("PING :sync")
    lines = []
    while "PONG" not in (line := irc.line()):
        lines.append(line)
    return lines


def test_a_taken_nick_is_433_and_changes_nothing() -> None:
    with guests() as srv:
        alice, bob = guest(srv, "alice"), guest(srv, "bob")
        bob.send("NICK alice")
        assert _quiet(bob) == [":chatroom 433 bob alice :Nickname is already in use"]
        alice.send("PRIVMSG bob :hi")
        assert bob.until("PRIVMSG") == ":alice!alice@chatroom PRIVMSG bob :hi"
        # An account's name is taken too, online or not; an account keeps its nick.
        connect(srv.address, "holder").close()
        bob.send("NICK Holder", "NICK bad.nick")
        assert _quiet(bob) == [
            ":chatroom 433 bob Holder :Nickname is already in use",
            ":chatroom 432 bob bad.nick :Erroneous nickname: 1-32 of A-Z a-z 0-9 _ -",
        ]
        account = Irc(irc_address(srv))
        account.register("holder", PASSWORD)
        account.send("NICK other")
        assert " 447 holder " in _quiet(account)[-1]


def test_a_case_change_reaches_the_channel_once_and_a_no_op_says_nothing() -> None:
    with guests() as srv:
        alice, bob = guest(srv, "alice"), guest(srv, "bob")
        alice.send("JOIN #test")
        alice.until("366")
        bob.send("JOIN #test")
        bob.until("366")
        alice.until("JOIN")
        bob.send("NICK Alice")
        assert _quiet(bob) == [":chatroom 433 bob Alice :Nickname is already in use"]
        alice.send("NICK Alice")
        assert _quiet(alice) == [":alice!alice@chatroom NICK :Alice"]
        assert _quiet(bob) == [":alice!alice@chatroom NICK :Alice"]
        alice.send("NICK Alice")
        assert _quiet(alice) == []
        assert _quiet(bob) == []
        bob.send("PRIVMSG #test :hello", "NAMES #test")
        assert alice.until("PRIVMSG") == ":bob!bob@chatroom PRIVMSG #test :hello"
        assert bob.until("353").endswith(":@Alice bob")


def test_the_old_nick_is_free_at_once_and_everyone_hears_of_the_new_one() -> None:
    with guests() as srv:
        watcher = RawClient(srv.address)
        watcher.send(
            command="login",
            username="watcher",
            password=PASSWORD,
            features=["rooms", "users_delta"],
        )
        watcher.expect("login_ok")
        connect(srv.address, "lobbyuser").close()  # an account: in #lobby at once
        lobby = Irc(irc_address(srv))
        lobby.register("lobbyuser")
        alice = guest(srv, "alice")
        alice.send("JOIN #g")
        alice.until("366")
        watcher.send(command="join", room="g", id=1)
        watcher.until("room_info", id=1)
        lobby.until(":alice!alice@chatroom", "JOIN", "#lobby")
        alice.send("NICK malice")
        assert alice.until("NICK") == ":alice!alice@chatroom NICK :malice"
        got = watcher.until("room_event", event="nick")
        assert (got["room"], got["by"], got["user"], got.get("seq")) == (
            "g",
            "alice",
            "malice",
            None,
        )
        delta = watcher.until("users_delta", renamed=[["alice", "malice"]])
        assert (delta["left"], delta["joined"]) == (["alice"], ["malice"])
        # An IRC client in the lobby channel: one NICK line, no QUIT and JOIN.
        seen = _quiet(lobby)
        assert seen[-1:] == [":alice!alice@chatroom NICK :malice"]
        assert not [x for x in seen if " QUIT " in x or x.startswith(":malice!")]
        again = Irc(irc_address(srv))
        again.send("NICK alice", "USER u 0 * :R")
        assert " 001 alice " in again.until("001")
        watcher.send(command="pm", room="g", message="to the renamed", id=2)
        assert alice.until("PRIVMSG") == ":watcher!watcher@chatroom PRIVMSG #g :to the renamed"
        alice.send("PRIVMSG #g :as malice")
        got = watcher.until("broadcast", room="g")
        assert (got["from"], got["message"]) == ("malice", "as malice")


def test_what_was_said_before_the_nick_change_goes_out_under_the_old_nick() -> None:
    with guests() as srv:
        alice, bob = guest(srv, "alice"), guest(srv, "bob")
        alice.send("JOIN #test")
        alice.until("366")
        bob.send("JOIN #test")
        bob.until("366")
        alice.until("JOIN")
        # One read: the message, the change, a message under the new nick.
        alice.send("PRIVMSG #test :before", "NICK later", "PRIVMSG #test :after")
        assert _quiet(alice) == [":alice!alice@chatroom NICK :later"]  # all three taken
        assert _quiet(bob) == [
            ":alice!alice@chatroom PRIVMSG #test :before",
            ":alice!alice@chatroom NICK :later",
            ":later!later@chatroom PRIVMSG #test :after",
        ]
