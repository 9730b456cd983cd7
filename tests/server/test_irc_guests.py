"""--irc-guests (docs/IRC.md): a guest is one session. Its nick is checked and claimed
in one step, so it never takes over an account registered meanwhile; its DMs are
delivered live and never stored, so nobody who holds the nick later reads them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from chatroom import ChatClient, DirectMessage
from chatroom.testing import TestServer
from tests.helpers import PASSWORD, RawClient, connect, quiet_server
from tests.server.test_irc import Irc, irc_address

T = 10.0


@contextmanager
def guests(**options: Any) -> Iterator[TestServer]:
    with quiet_server(irc_port=0, irc_guests=True, password_hash="load-test", **options) as srv:
        yield srv


def guest(srv: TestServer, nick: str, *caps: str) -> Irc:
    irc = Irc(irc_address(srv))
    if caps:
        irc.send(f"CAP REQ :{' '.join(caps)}", "CAP END")
    irc.send(f"NICK {nick}", "USER u 0 * :R")
    irc.until("376")  # the end of the welcome: a guest is in no channel yet
    return irc


def test_a_guest_never_takes_over_an_account_registered_meanwhile() -> None:
    with guests() as srv:
        server = srv.server
        real_enter = server._logins.enter  # chatroom_server.login
        checked, go_on = threading.Event(), threading.Event()

        def enter(conn: Any, name: str, *args: Any) -> bool:
            if conn.irc is not None and name == "racer":
                checked.set()  # the guest found no account and no session ...
                go_on.wait(T)  # ... and someone registers the name before it begins
            return real_enter(conn, name, *args)

        server._logins.enter = enter  # type: ignore[method-assign, assignment]
        irc = Irc(irc_address(srv))
        irc.send("NICK racer", "USER u 0 * :R")
        assert checked.wait(T)
        owner = RawClient(srv.address)
        owner.send(command="login", username="racer", password=PASSWORD, id="reg")
        # Before, the registration went through, and then the guest's session began
        # and replaced the new account's (bye session_replaced). Now the guest holds
        # the nick from its check on: the registration is told to wait.
        refused = owner.expect_error("unavailable", id="reg")
        assert "guest" in refused["message"]
        go_on.set()
        assert irc.until(" 001 ").startswith(":chatroom 001 racer ")
        owner.send(command="ping", id="still")
        owner.expect("pong", id="still")  # refused, not closed
        assert srv.server.online == ("racer",)


def test_a_registration_waits_for_a_guest_to_leave() -> None:
    with guests() as srv:
        held = guest(srv, "visitor")
        c = RawClient(srv.address)
        c.send(command="login", username="visitor", password=PASSWORD, id=1)
        refused = c.expect_error("unavailable", id=1)
        assert "guest" in refused["message"]
        held.send("PING :alive")  # the guest's session is untouched
        assert held.until("PONG").endswith(":alive")
        held.send("QUIT")
        held.closed()
        c.send(command="login", username="visitor", password=PASSWORD, id=2)
        assert c.expect("login_ok", id=2)["new_user"] is True


def test_a_race_of_guests_and_registrations_never_shares_a_session() -> None:
    with guests() as srv:
        for i in range(40):
            name = f"race{i}"
            irc = Irc(irc_address(srv))
            json = RawClient(srv.address)
            go = threading.Barrier(2)

            def as_guest(irc: Irc = irc, name: str = name, go: threading.Barrier = go) -> None:
                go.wait(T)
                irc.send(f"NICK {name}", "USER u 0 * :R")

            t = threading.Thread(target=as_guest)
            t.start()
            go.wait(T)
            json.send(command="login", username=name, password=PASSWORD, id="r")
            t.join(T)
            got = json.recv()
            first = irc.line()
            while not any(f" {code} " in first for code in ("001", "433", "464")):
                first = irc.line()
            if got["type"] == "login_ok":
                # The account won: the guest was refused (433) or, having looked after
                # the registration, asked for the account's password (464).
                assert " 001 " not in first, (name, first)
                json.send(command="ping", id="p")
                assert json.until("pong", id="p")
            else:
                # The guest won: the registration waits for it to leave.
                assert got["code"] == "unavailable", got
                assert " 001 " in first, (name, first)
            irc.close()
            json.close()


def test_a_guests_dms_are_never_stored_for_whoever_holds_the_nick_next() -> None:
    with guests() as srv, ChatClient(srv.host, srv.port) as alice:
        alice.login("alice", PASSWORD)
        first = guest(srv, "drifter", "batch", "draft/chathistory")
        with alice.expect(DirectMessage) as got:
            first.send("PRIVMSG alice :my secret")
            dm = got.wait(T)
        assert (dm.sender, dm.message, dm.seq) == ("drifter", "my secret", None)
        receipt = alice.dm("drifter", "your secret")
        assert receipt.seq is None  # delivered, not stored
        assert first.until("PRIVMSG").endswith("PRIVMSG drifter :your secret")
        first.send("QUIT")
        first.closed()
        # The next guest with the nick: its history with alice is empty.
        second = guest(srv, "drifter", "batch", "draft/chathistory")
        second.send("CHATHISTORY LATEST alice * 10")
        assert second.until("BATCH").startswith("BATCH +")
        assert second.line().startswith("BATCH -")
        second.send("QUIT")
        second.closed()
        # A later account of that name: nothing in its history or its replay.
        later = RawClient(srv.address)
        later.send(command="login", username="drifter", password=PASSWORD, since=0)
        assert later.expect("login_ok")["new_user"] is True
        replayed = later.until("replay_done")
        assert replayed["count"] == 0
        later.send(command="history", id="h", **{"with": "alice"})
        assert later.until("history", id="h")["messages"] == []
        # Nor is anything in alice's own history with that name.
        assert alice.history(with_user="drifter").messages == ()


def test_a_guest_dm_reaches_only_someone_online() -> None:
    with guests() as srv:
        witness = connect(srv.address, "witness")
        connect(srv.address, "absent").close()
        # Offline before the DM: its departure is the server's, after the close.
        witness.until("users", left="absent")
        visitor = guest(srv, "visitor")
        visitor.send("PRIVMSG absent :hello?", "PRIVMSG nobody :hello?")
        assert " 401 visitor absent " in visitor.until("401")  # live only: not queued
        assert " 401 visitor nobody " in visitor.until("401")
        member = connect(srv.address, "member")
        member.send(command="dm", to="visitor", message="hi", id=1)
        ack = member.until("ack", id=1)
        assert "seq" not in ack and not ack.get("queued")
        assert visitor.until("PRIVMSG").endswith("PRIVMSG visitor :hi")
        visitor.send("QUIT")
        visitor.closed()
        member.send(command="dm", to="visitor", message="still there?", id=2)
        gone = member.until("error", id=2)  # no account: nothing waits for it
        assert gone["code"] == "unknown_user"


@pytest.mark.parametrize("command", ["NICK visitor", "NICK VISITOR"])
def test_two_guests_never_share_a_nick(command: str) -> None:
    with guests() as srv:
        first = guest(srv, "visitor")
        second = Irc(irc_address(srv))
        second.send(command, "USER u 0 * :R")
        assert " 433 " in second.until("433")
        first.send("PING :alive")
        assert first.until("PONG").endswith(":alive")


def _names(irc: Irc, chan: str) -> set[str]:
    irc.send(f"NAMES {chan}")
    line = irc.until("353")
    irc.until("366")
    return set(line.partition(" :")[2].split())


def test_a_guest_room_lives_as_long_as_someone_is_in_it_and_is_never_stored() -> None:
    with guests() as srv:
        a, b = guest(srv, "ana"), guest(srv, "ben")
        a.send("JOIN #g")
        assert a.until("366")
        assert _names(a, "#g") == {"@ana"}  # its creator is its operator
        a.send("TOPIC #g :guests only")
        assert a.until("TOPIC").endswith("TOPIC #g :guests only")
        b.send("JOIN #g")
        assert b.until("332").endswith(":guests only")
        assert a.until("JOIN").startswith(":ben!")
        b.send("PRIVMSG #g :hi")
        assert a.until("PRIVMSG").endswith("PRIVMSG #g :hi")
        # The operator leaves without a word (no QUIT): the room stays, with ben in it.
        a.close()
        b.send("PRIVMSG #g :still here")
        b.send("PART #g :bye")
        assert b.until("PART").endswith("PART #g :bye")
        # Empty, it is gone: the next guest to join makes it anew, and is its operator.
        c = guest(srv, "cy")
        c.send("JOIN #g")
        c.until("JOIN")
        assert " 332 " not in c.until("366")  # no topic: a new room
        assert _names(c, "#g") == {"@cy"}
        # Nothing of it was ever stored: no room, no event, no message.
        log = srv.server._log
        assert log is not None
        rooms, members, invites = log.load_rooms()
        assert (list(rooms), list(members), list(invites)) == ([], [], [])
        assert log.last_seq == 0


def test_a_guest_cannot_join_an_accounts_room_nor_an_account_keep_a_guest_room() -> None:
    with guests() as srv:
        connect(srv.address, "owner").close()  # an account: its PASS is checked
        owner = Irc(irc_address(srv))
        owner.register("owner")
        owner.send("JOIN #kept")
        owner.until("366")
        visitor = guest(srv, "visitor")
        visitor.send("JOIN #kept")
        assert " 477 visitor #kept " in visitor.until("477")  # its membership would outlive it
        visitor.send("JOIN #passing")
        visitor.until("366")
        owner.send("JOIN #passing")
        owner.until("366")
        assert _names(owner, "#passing") == {"@visitor", "owner"}
        # An account's membership of a guest room is its session's: back without it.
        owner.send("QUIT")
        owner.closed()
        again = Irc(irc_address(srv))
        burst = again.register("owner")
        assert not any("#passing" in line for line in burst)
        assert _names(visitor, "#passing") == {"@visitor"}


def test_a_guests_nick_is_free_as_soon_as_its_client_hangs_up() -> None:
    with guests() as srv:
        held = guest(srv, "again")
        for _ in range(5):  # irctest reuses nicks between tests: close, then connect
            held.close()
            held = guest(srv, "again")  # 001 and NAMES, not 433


def test_a_guest_sees_the_lobby_once_it_joins_it_and_a_quit_with_its_reason() -> None:
    with guests() as srv:
        a, b = guest(srv, "ana"), guest(srv, "ben")
        json_user = connect(srv.address, "jsonuser")
        json_user.send(command="pm", message="to the lobby", id=1)
        json_user.until("ack", id=1)
        a.send("PRIVMSG #lobby :not in it", "JOIN #g")
        assert " 404 ana #lobby " in a.until("404")  # +n: join it first
        line = a.until("366")
        assert "to the lobby" not in line and "jsonuser" not in line
        b.send("JOIN #g", "JOIN #lobby")
        assert " 353 ben = #lobby " in b.until("353", "#lobby")
        a.until("JOIN")
        b.send("QUIT :gone fishing")
        # ana shares only #g with ben: one QUIT, with ben's reason.
        assert a.until("QUIT") == ":ben!ben@chatroom QUIT :Quit: gone fishing"
        a.send("PING :end")
        assert a.until("PONG").endswith(":end")  # and nothing of the lobby meanwhile


def test_who_whowas_away_userhost_lusers_and_time() -> None:
    with guests() as srv:
        a, b = guest(srv, "ana"), guest(srv, "ben")
        a.send("JOIN #g")
        a.until("366")
        b.send("JOIN #g")
        b.until("366")
        a.send("AWAY :lunch")
        assert " 306 ana " in a.until("306")
        b.send("PRIVMSG ana :hi", "WHO #g")
        assert b.until("301") == ":chatroom 301 ben ana :lunch"
        who = [b.until("352"), b.line(), b.line()]
        assert who == [
            ":chatroom 352 ben #g u chatroom chatroom ana G@ :0 R",
            ":chatroom 352 ben #g u chatroom chatroom ben H :0 R",
            ":chatroom 315 ben #g :End of WHO list",
        ]
        b.send("WHO A*", "USERHOST ana ben nobody", "WHOIS ana")
        assert b.until("352") == ":chatroom 352 ben * u chatroom chatroom ana G :0 R"
        assert b.line() == ":chatroom 315 ben A* :End of WHO list"
        assert b.until("302") == ":chatroom 302 ben :ana=-u@chatroom ben=+u@chatroom"
        assert b.until("301") == ":chatroom 301 ben ana :lunch"
        a.send("AWAY")
        assert " 305 ana " in a.until("305")
        a.send("QUIT :bye")
        a.closed()
        b.send("WHOWAS ana", "WHOWAS nobody", "LUSERS", "TIME")
        assert b.until("314") == ":chatroom 314 ben ana u chatroom * :R"
        assert " 312 ben ana chatroom " in b.line()
        assert b.line() == ":chatroom 369 ben ana :End of WHOWAS"
        assert b.line() == ":chatroom 406 ben nobody :There was no such nickname"
        assert b.line() == ":chatroom 369 ben nobody :End of WHOWAS"
        assert b.until("251") == ":chatroom 251 ben :There are 1 users and 0 invisible on 1 servers"
        assert b.until("391").startswith(":chatroom 391 ben chatroom ")


def test_a_guest_rooms_modes_bans_and_listing_as_irc_clients_expect() -> None:
    with guests() as srv:
        op = guest(srv, "chanop")
        op.send("JOIN #chan")
        op.until("366")
        op.send("MODE #chan +l 0", "MODE #chan +k :a b", "MODE #chan +Z")
        assert op.until("696") == (
            ":chatroom 696 chanop #chan l 0 :mode '+l': a member limit is an integer"
            " from 1 to 100000"
        )
        assert op.until("696").startswith(":chatroom 696 chanop #chan k * :a key is ")  # not echoed
        assert " 472 chanop Z " in op.until("472")
        # A ban is by name, of anyone: in a guest room, whether or not the nick is
        # taken now (its bans go with the room). +o needs someone online: 401.
        op.send("MODE #chan +b nobody!*@*", "MODE #chan +o nobody", "LIST")
        assert op.until("MODE") == ":chanop!chanop@chatroom MODE #chan +b nobody!*@*"
        assert " 401 chanop nobody " in op.until("401")
        # No #lobby in LIST for a guest that has not joined it: #chan alone.
        assert op.until("322").startswith(":chatroom 322 chanop #chan 1 ")
        assert " 323 " in op.line()
        op.send("CAP LS 302")
        assert "invite-notify" in op.until("CAP").split()


def test_whois_channels_kick_comment_owner_op_secret_names_and_isupport_lines() -> None:
    with guests() as srv:
        a = Irc(irc_address(srv))
        a.send("NICK ana", "USER u 0 * :R")
        welcome = []
        while " 376 " not in (line := a.line()):
            welcome.append(line)
        isupport = [w for w in welcome if " 005 " in w]
        assert len(isupport) == 2 and all(
            len(w.split(" :", 1)[0].split()) - 3 <= 13 for w in isupport
        )
        b = guest(srv, "ben")
        a.send("JOIN #one", "JOIN #two", "MODE #two +s", "MODE #one +o ana")
        assert a.until("MODE", "+o") == ":ana!ana@chatroom MODE #one +o ana"  # owner: a no-op
        b.send("JOIN #one", "WHOIS ana", "NAMES #two", "WHO #ONE")
        assert b.until("319") == ":chatroom 319 ben ana :@#one"  # #two is secret, #lobby unjoined
        assert b.until("366", "#two")  # not a member of a +s room: no names
        assert b.until("352").startswith(":chatroom 352 ben #one ")  # the channel as it is
        a.send("NAMES #two", "KICK #one ben")
        assert a.until("353", "#two") == ":chatroom 353 ana @ #two :@ana"
        assert b.until("KICK") == ":ana!ana@chatroom KICK #one ben :ana"
        # A client's tags past message-tags' 4094 bytes: 417, nothing relayed.
        a.send("@+x=" + "a" * 4096 + " PRIVMSG #two :hi", "PING :end")
        assert " 417 ana " in a.until("417")
        assert a.until("PONG").endswith(":end")


def test_a_message_that_would_not_fit_one_relayed_line_is_417_not_cut() -> None:
    with guests() as srv:
        a, b = guest(srv, "ana"), guest(srv, "ben")
        head = ":ana!ana@chatroom PRIVMSG ben :"
        fits = "é" * ((512 - 2 - len(head)) // 2)  # the longest relay that is one line
        a.send("PRIVMSG ben :" + fits + "xx", "PRIVMSG ben :" + fits)
        assert " 417 ana " in a.until("417")
        assert b.until("PRIVMSG") == head + fits  # the one that fits, whole
        assert len((head + fits).encode()) + 2 <= 512


def test_a_notice_is_relayed_as_a_notice() -> None:
    with guests() as srv:
        a, b = guest(srv, "ana"), guest(srv, "ben")
        json_user = connect(srv.address, "jsonuser")
        a.send("JOIN #g", "JOIN #lobby")
        a.until("366", "#lobby")
        b.send("JOIN #g")
        b.until("366")
        a.send("NOTICE #g :in the room", "NOTICE ben :to you", "NOTICE #lobby :to all")
        assert b.until("NOTICE", "#g") == ":ana!ana@chatroom NOTICE #g :in the room"
        assert b.until("NOTICE", "ben") == ":ana!ana@chatroom NOTICE ben :to you"
        got = json_user.until("broadcast")
        assert (got["message"], got["notice"]) == ("to all", True)


def test_mode_says_when_a_channel_was_made() -> None:
    with guests() as srv:
        a = guest(srv, "ana")
        before = int(time.time())
        a.send("JOIN #g", "MODE #g")
        assert a.until("324") == ":chatroom 324 ana #g +nt"  # every room is +n
        made = a.line().split(" ")
        assert made[:4] == [":chatroom", "329", "ana", "#g"]
        assert before <= int(made[4]) <= time.time() + 1


def test_an_invisible_user_is_left_out_of_who_masks_only() -> None:
    with guests() as srv:
        evan, shiv = guest(srv, "evan"), guest(srv, "shivaram")
        evan.send("MODE evan +i", "MODE evan")
        assert evan.until("MODE") == ":evan!evan@chatroom MODE evan :+i"
        assert evan.until("221") == ":chatroom 221 evan +i"
        shiv.send("WHO eva*", "WHO evan")
        assert shiv.until("315") == ":chatroom 315 shivaram eva* :End of WHO list"
        assert shiv.until("352") == ":chatroom 352 shivaram * u chatroom chatroom evan H :0 R"


def test_plus_n_and_invisibility_ends_at_a_shared_channel() -> None:
    with guests() as srv:
        evan, shiv = guest(srv, "evan"), guest(srv, "shivaram")
        evan.send("JOIN #chan", "MODE #chan +int", "MODE #chan +o ghost", "MODE #chan +o shivaram")
        assert evan.until("MODE", "#chan") == ":evan!evan@chatroom MODE #chan +int"
        assert " 401 evan ghost " in evan.until("401")  # nobody has the nick
        assert " 441 evan shivaram #chan " in evan.until("441")  # online, not in it
        evan.send("MODE #chan", "MODE evan +i")
        assert evan.until("324") == ":chatroom 324 evan #chan +int"
        evan.until("MODE", "evan")
        shiv.send("WHO eva*", "JOIN #other")
        assert shiv.until("315") == ":chatroom 315 shivaram eva* :End of WHO list"
        shiv.until("366")
        evan.send("INVITE shivaram #chan")
        evan.until("341")
        shiv.send("JOIN #chan", "WHO eva*")
        # Sharing #chan now: a mask finds them.
        assert shiv.until("352") == ":chatroom 352 shivaram * u chatroom chatroom evan H :0 R"


def test_a_ban_kicks_a_member_only() -> None:
    with guests() as srv:
        op, ben = guest(srv, "chanop"), guest(srv, "ben")
        op.send("JOIN #chan")
        op.until("366")
        ben.send("JOIN #chan")
        op.until("JOIN", "ben")
        op.send("MODE #chan +b outsider!*@*", "MODE #chan +b ben!*@*", "PING :end")
        lines = [op.line(), op.line(), op.line(), op.line()]
        assert lines == [
            ":chanop!chanop@chatroom MODE #chan +b outsider!*@*",  # no KICK: not a member
            ":chanop!chanop@chatroom MODE #chan +b ben!*@*",
            ":chanop!chanop@chatroom KICK #chan ben :Banned",
            ":chatroom PONG chatroom :end",
        ]
        assert ben.until("KICK") == ":chanop!chanop@chatroom KICK #chan ben :Banned"


def test_a_user_banned_from_outside_hears_nothing_of_the_channel() -> None:
    with guests() as srv:
        op, bar = guest(srv, "chanop"), guest(srv, "bar")
        op.send("JOIN #chan", "MODE #chan +b bar!*@*")
        op.until("MODE", "+b")
        bar.send("JOIN #chan")
        assert " 474 bar #chan " in bar.until("474")
        op.send("MODE #chan -b bar!*@*")
        op.until("MODE", "-b")
        bar.send("JOIN #chan")
        assert bar.line() == ":bar!bar@chatroom JOIN #chan"  # no MODE lines before it


def test_a_guest_rooms_creator_is_an_op_another_op_kicks_and_who_deops_itself() -> None:
    # irctest's KickTestCase::testKickPrivileges and InviteTestCase::testInviteInviteOnly:
    # a guest room has no owner (docs/PROTOCOL.md §Guest rooms).
    with guests() as srv:
        foo, bar, baz = guest(srv, "foo"), guest(srv, "bar"), guest(srv, "baz")
        foo.send("JOIN #chan")
        foo.until("366")
        bar.send("JOIN #chan")
        assert bar.until("353").endswith(":bar @foo")
        baz.send("JOIN #chan")
        baz.until("366")
        foo.send("MODE #chan +o baz")
        # The reply means done: baz's KICK right after it finds baz an op.
        assert foo.until("MODE") == ":foo!foo@chatroom MODE #chan +o baz"
        baz.send("KICK #chan bar", "KICK #chan foo")
        assert baz.until("KICK", "bar") == ":baz!baz@chatroom KICK #chan bar :baz"
        assert baz.until("KICK", "foo") == ":baz!baz@chatroom KICK #chan foo :baz"
        assert foo.until("KICK", "foo") == ":baz!baz@chatroom KICK #chan foo :baz"
        # The creator of another room deops itself, and is no operator any more.
        foo.send("JOIN #inv", "MODE #inv +i", "MODE #inv -o foo", "INVITE bar #inv")
        assert foo.until("MODE", "+i") == ":foo!foo@chatroom MODE #inv +i"
        assert foo.until("MODE", "-o") == ":foo!foo@chatroom MODE #inv -o foo"
        assert " 482 foo #inv " in foo.until("482")


def test_minus_n_lets_a_user_outside_the_channel_speak_in_it() -> None:
    # irctest's NoExternalMessagesTestCase and RplChannelModeIsTestCase.
    with guests() as srv:
        chanop, outsider = guest(srv, "chanop"), guest(srv, "outsider")
        chanop.send("JOIN #chan")
        chanop.until("366")
        outsider.send("PRIVMSG #chan :+n keeps me out")
        assert " 404 outsider #chan " in outsider.until("404")
        chanop.send("MODE #chan -n", "MODE #chan")
        assert chanop.until("MODE") == ":chanop!chanop@chatroom MODE #chan -n"
        assert chanop.until("324") == ":chatroom 324 chanop #chan +t"
        outsider.send("PRIVMSG #chan :hello from outside", "PING :end")
        got = chanop.until("PRIVMSG")
        assert got == ":outsider!outsider@chatroom PRIVMSG #chan :hello from outside"
        assert outsider.until("PONG").endswith(":end")  # no error, no copy of its own


def test_a_resent_message_to_a_guest_room_is_delivered_once() -> None:
    # Never stored, a guest room's message has no seq for the log's cid check: the
    # server remembers recent cids of such messages (docs/PROTOCOL.md §Guest rooms).
    with guests() as srv:
        from tests.server.test_rooms_server import v2

        host = guest(srv, "host")
        host.send("JOIN #g")
        host.until("366")
        first, _ = v2(srv, "member")
        first.send(command="join", room="g", id=1)
        first.until("room_info", id=1)
        first.send(command="pm", room="g", message="once", cid="c-1", id=2)
        assert first.until("ack", id=2).get("seq") is None
        # Its connection is taken over before the ack is seen (a reconnect): the
        # session goes on, in the room still, and the SDK sends the message again.
        again, _ = v2(srv, "member")
        again.send(command="pm", room="g", message="once", cid="c-1", id=3)
        again.until("ack", id=3)
        again.send(command="pm", room="g", message="other text", cid="c-1", id=4)
        assert again.until("error", id=4)["code"] == "cid_conflict"
        again.send(command="pm", room="g", message="next", cid="c-2", id=5)
        again.until("ack", id=5)
        assert host.until("PRIVMSG") == ":member!member@chatroom PRIVMSG #g :once"
        assert host.until("PRIVMSG") == ":member!member@chatroom PRIVMSG #g :next"
