"""IRC channels are rooms (docs/IRC.md §Channels): JOIN with keys, PART, TOPIC, NAMES,
LIST, MODE, INVITE and the numerics for every refusal, over real sockets, with JSON
clients in the same rooms; and an IRC user back in all their rooms on connect."""

from __future__ import annotations

import time

from tests.server.test_irc import Irc, irc_address, irc_server
from tests.server.test_rooms_server import settle, v2


def test_join_part_topic_names_and_messages_between_irc_and_json() -> None:
    with irc_server() as srv:
        alice = Irc(irc_address(srv))
        alice.send("CAP REQ :multi-prefix userhost-in-names", "CAP END")
        alice.register("alice")
        # Creating a room makes its creator its operator.
        alice.send("JOIN #Dev")
        assert alice.until("JOIN", "#Dev") == ":alice!alice@chatroom JOIN #Dev"
        assert alice.until("353").endswith(":@alice!alice@chatroom")
        assert " 366 alice #Dev " in alice.line()
        bob, _ = v2(srv, "bob")
        bob.send(command="join", room="dev", id=1)
        assert bob.until("room_info", id=1)["info"]["roles"] == {"alice": "owner"}
        assert alice.until("JOIN", "#Dev") == ":bob!bob@chatroom JOIN #Dev"
        # Messages both ways, in the room and nowhere else.
        alice.send("PRIVMSG #dev :hello room")
        got = bob.until("broadcast")
        assert (got["room"], got["from"], got["message"]) == ("Dev", "alice", "hello room")
        bob.send(command="pm", room="dev", message="hi irc", id=2)
        assert alice.until("PRIVMSG") == ":bob!bob@chatroom PRIVMSG #Dev :hi irc"
        # TOPIC: set by the operator, read back as 332/333; the JSON side sees the event.
        alice.send("TOPIC #dev :release Friday", "TOPIC #dev")
        assert alice.until("TOPIC", "#Dev") == ":alice!alice@chatroom TOPIC #Dev :release Friday"
        assert alice.until("332").endswith(" 332 alice #Dev :release Friday")
        assert " 333 alice #Dev alice!alice@chatroom " in alice.line()
        assert bob.until("room_event", event="topic")["topic"] == "release Friday"
        # +t: bob is no operator (482); a JSON topic change shows as a TOPIC line.
        bob.send(command="topic", room="dev", topic="mine", id=3)
        assert bob.until("error", id=3)["code"] == "not_operator"
        alice.send("MODE #dev +o bob")
        assert alice.until("MODE", "#Dev") == ":alice!alice@chatroom MODE #Dev +o bob"
        bob.send(command="topic", room="dev", topic="mine", id=4)
        assert alice.until("TOPIC", "#Dev") == ":bob!bob@chatroom TOPIC #Dev :mine"
        alice.send("NAMES #dev")
        assert alice.until("353").endswith(":@alice!alice@chatroom @bob!bob@chatroom")
        # PART with a reason, both ways; then PRIVMSG is refused (404), TOPIC 442.
        bob.send(command="part", room="dev", reason="lunch", id=5)
        assert alice.until("PART", "#Dev") == ":bob!bob@chatroom PART #Dev :lunch"
        alice.send("PART #dev :bye now")
        assert alice.until("PART", "#Dev") == ":alice!alice@chatroom PART #Dev :bye now"
        alice.send("PRIVMSG #dev :anyone?", "TOPIC #dev", "PART #dev", "PRIVMSG #nowhere :x")
        assert " 404 alice #dev " in alice.until("404")
        assert " 442 alice #dev " in alice.until("442")
        assert " 442 alice #dev " in alice.until("442")
        assert " 403 alice #nowhere " in alice.until("403")
        # The lobby channel is as before.
        alice.send("PRIVMSG #lobby :still here")
        assert bob.until("broadcast")["message"] == "still here"


def test_keys_invites_limits_modes_and_their_numerics() -> None:
    with irc_server() as srv:
        op = Irc(irc_address(srv))
        op.register("op")
        guest = Irc(irc_address(srv))
        guest.register("guest")
        op.send("JOIN #vault", "MODE #vault +k s3cret", "MODE #vault")
        op.until("366")
        assert op.until("MODE", "#vault") == ":op!op@chatroom MODE #vault +k s3cret"
        assert op.until("324").endswith(" 324 op #vault +knt s3cret")
        guest.send("JOIN #vault", "JOIN #vault wrong", "JOIN #bad.name", "JOIN nohash")
        assert " 475 guest #vault " in guest.until("475")
        assert " 475 guest #vault " in guest.until("475")
        assert " 476 guest #bad.name " in guest.until("476")
        assert " 476 guest nohash " in guest.until("476")
        guest.send("JOIN #vault s3cret")
        assert guest.until("JOIN", "#vault") == ":guest!guest@chatroom JOIN #vault"
        assert guest.until("353").endswith(":guest @op")
        assert op.until("JOIN", "#vault") == ":guest!guest@chatroom JOIN #vault"
        # A non-operator changes no mode (482); an unknown letter is 472.
        guest.send("MODE #vault +i", "MODE #vault +Z")
        assert " 482 guest #vault " in guest.until("482")
        op.send("MODE #vault +Z")
        assert " 472 op Z " in op.until("472")
        # +i and +l: refused with 473 and 471; an invite lets one in (341, INVITE).
        op.send("MODE #vault -k+il 2")
        assert op.until("MODE", "#vault") == ":op!op@chatroom MODE #vault -k+il 2"
        third = Irc(irc_address(srv))
        third.register("third")
        third.send("JOIN #vault")
        assert " 473 third #vault " in third.until("473")
        op.send("INVITE third #vault", "INVITE guest #vault", "INVITE nobody #vault")
        assert op.until("341").endswith(" 341 op third #vault")
        assert " 443 op guest #vault " in op.until("443")
        assert " 401 op nobody " in op.until("401")
        assert third.until("INVITE") == ":op!op@chatroom INVITE third #vault"
        third.send("JOIN #vault")  # the invite passes +i and +l
        assert third.until("JOIN", "#vault") == ":third!third@chatroom JOIN #vault"
        guest.send("PART #vault")
        guest.until("PART")
        guest.send("JOIN #vault")
        assert " 473 guest #vault " in guest.until("473")
        op.send("MODE #vault -i")
        op.until("MODE")
        op.send("JOIN #vault")  # a member already: nothing at all
        op.send("MODE #vault -l")
        assert op.until("MODE", "#vault") == ":op!op@chatroom MODE #vault -l"
        guest.send("JOIN #vault")
        assert guest.until("JOIN", "#vault") == ":guest!guest@chatroom JOIN #vault"
        guest.send("INVITE op #lobby")
        assert " 443 guest op #lobby " in guest.until("443")


def test_list_hides_secret_rooms_and_names_of_unknown_channels() -> None:
    with irc_server() as srv:
        irc = Irc(irc_address(srv))
        irc.register("lister")
        json_user, _ = v2(srv, "owner")
        # The owner's arrival in lobby reaches the lister whenever the user list is
        # pushed: take it before LIST, whose replies it could otherwise split.
        irc.until(":owner!owner@chatroom", "JOIN")
        for rid, room in enumerate(("open", "hidden")):
            json_user.send(command="join", room=room, id=rid)
            json_user.until("room_info", id=rid)
        json_user.send(command="topic", room="open", topic="come in", id=10)
        json_user.send(command="mode", room="hidden", modes="+s", id=11)
        json_user.until("ack", id=11)
        irc.send("LIST")
        assert " 321 " in irc.until("321")
        assert " 322 lister #lobby 2 :" in irc.line()
        assert irc.line().endswith(" 322 lister #open 1 :[+nt] come in")
        assert " 323 " in irc.line()
        irc.send("LIST #open", "NAMES #hidden", "NAMES #nowhere")
        assert " 322 lister #open 1 " in irc.until("322")
        assert " 323 " in irc.line()
        assert " 366 lister #hidden " in irc.line()
        assert " 366 lister #nowhere " in irc.line()


def test_an_irc_user_is_back_in_all_their_rooms_on_connect() -> None:
    with irc_server() as srv:
        first = Irc(irc_address(srv))
        first.register("carol")
        before = int(time.time())
        first.send("JOIN #one", "JOIN #two", "TOPIC #two :second")
        first.until("TOPIC")
        after = int(time.time()) + 1
        first.send("QUIT")
        first.closed()
        json_user, _ = v2(srv, "dave")
        json_user.send(command="join", room="two", id=1)
        json_user.until("room_info", id=1)
        again = Irc(irc_address(srv))
        burst = again.register("carol")  # through lobby's 366
        rest = [again.line() for _ in range(8)]
        set_at = int(rest[5].rsplit(" ", 1)[1])  # 333 says when the topic was set
        assert before <= set_at <= after
        assert rest == [
            ":carol!carol@chatroom JOIN #one",
            ":chatroom 353 carol = #one :@carol",
            ":chatroom 366 carol #one :End of /NAMES list",
            ":carol!carol@chatroom JOIN #two",
            ":chatroom 332 carol #two :second",
            f":chatroom 333 carol #two carol!carol@chatroom {set_at}",
            ":chatroom 353 carol = #two :@carol dave",
            ":chatroom 366 carol #two :End of /NAMES list",
        ]
        assert ":carol!carol@chatroom JOIN #lobby" in burst
        # Room history per channel, members only.
        json_user.send(command="pm", room="two", message="for two", id=2)
        json_user.until("ack", id=2)
        assert again.until("PRIVMSG") == ":dave!dave@chatroom PRIVMSG #two :for two"
        settle(json_user)
        again.send("CHATHISTORY LATEST #two * 10")
        assert again.until("PRIVMSG", "for") == ":dave!dave@chatroom PRIVMSG #two :for two"
        again.send("PART #two", "CHATHISTORY LATEST #two * 10")
        again.until("PART")
        assert again.until("FAIL").startswith("FAIL CHATHISTORY MESSAGE_ERROR #two")


def test_a_guest_without_the_message_log_has_lobby_only() -> None:
    # No message log, no rooms: for guests as for everyone (a guest's own rooms, never
    # stored, are tests/server/test_irc_guests.py's).
    with irc_server(irc_guests=True, history=False) as srv:
        guest = Irc(irc_address(srv))
        guest.send("NICK visitor", "USER u 0 * :R", "JOIN #lobby")
        guest.until("366")
        guest.send("JOIN #dev", "PRIVMSG #dev :x", "LIST", "NAMES #dev")
        assert " 403 visitor #dev " in guest.until("403")
        assert " 403 visitor #dev " in guest.until("403")
        assert " 322 visitor #lobby 1 " in guest.until("322")
        assert " 323 " in guest.line()
        assert " 366 visitor #dev " in guest.line()
        guest.send("CHATHISTORY LATEST #dev * 10", "NOTICE #dev :quiet", "PING :end")
        assert guest.line().startswith("FAIL CHATHISTORY INVALID_TARGET #dev")
        assert guest.line() == ":chatroom PONG chatroom :end"  # the NOTICE: no reply


def test_kick_ban_mute_and_roles_over_irc_with_json_users() -> None:
    # Moderation over IRC (docs/IRC.md §Moderation): each rule is the room service's,
    # so the same refusals as over JSON, as numerics; JSON moderation as IRC lines.
    with irc_server() as srv:
        op = Irc(irc_address(srv))
        op.send("CAP REQ :multi-prefix", "CAP END")
        op.register("op")
        pat = Irc(irc_address(srv))
        pat.register("pat")
        json_user, _ = v2(srv, "jo")
        op.send("JOIN #mod")
        op.until("366")
        pat.send("JOIN #mod")
        pat.until("366")
        json_user.send(command="join", room="mod", id=1)
        json_user.until("room_info", id=1)
        # (jo's JOIN #lobby, from users_delta, may come before or after this one)
        assert op.until(":jo!jo@chatroom", "JOIN", "#mod") == ":jo!jo@chatroom JOIN #mod"
        # A member who is no operator: 482; an unknown channel 403; not on it 442.
        pat.send("KICK #mod jo :go", "MODE #mod +b jo!*@*", "KICK #nowhere jo")
        assert " 482 pat #mod " in pat.until("482")
        assert " 482 pat #mod " in pat.until("482")
        assert " 403 pat #nowhere " in pat.until("403")
        # +v, +m: only voiced and operators speak (404 for the rest).
        op.send("MODE #mod +vm pat")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod +vm pat"
        assert json_user.until("room_event", event="mode")["modes"] == "+vm"
        op.send("NAMES #mod")
        assert op.until("353").endswith(":jo @op +pat")
        json_user.send(command="pm", room="mod", message="hush", id=2)
        assert json_user.until("error", id=2)["code"] == "muted"
        pat.send("PRIVMSG #mod :voiced")
        assert op.until("PRIVMSG") == ":pat!pat@chatroom PRIVMSG #mod :voiced"
        op.send("MODE #mod -v pat", "MODE #mod -m")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod -v pat"
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod -m"
        # The mute extban m: (per user), and the JSON mute shown as one.
        op.send("MODE #mod +b m:pat!*@*")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod +b m:pat!*@*"
        assert pat.until("+b") == ":op!op@chatroom MODE #mod +b m:pat!*@*"
        pat.send("PRIVMSG #mod :let me")
        assert " 404 pat #mod " in pat.until("404")
        op.send("MODE #mod -b m:pat")
        assert pat.until("-b") == ":op!op@chatroom MODE #mod -b m:pat!*@*"
        # KICK: a target not on the channel 441, an unknown nick 401; a kick with a
        # reason reaches IRC and JSON members.
        op.send("KICK #mod nobody")
        assert " 401 op nobody " in op.until("401")
        other = Irc(irc_address(srv))
        other.register("lobbyonly")
        op.send("KICK #mod lobbyonly")
        assert " 441 op lobbyonly #mod " in op.until("441")
        other.close()
        op.send("KICK #mod pat :flooding")
        assert op.until("KICK") == ":op!op@chatroom KICK #mod pat :flooding"
        assert pat.until("KICK") == ":op!op@chatroom KICK #mod pat :flooding"
        got = json_user.until("room_event", event="kick")
        assert (got["user"], got["reason"]) == ("pat", "flooding")
        # A ban by nick mask: the list (367/368), the banned user kept out (474).
        op.send("MODE #mod +b pat!*@*", "MODE #mod b")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod +b pat!*@*"
        assert op.until("367").startswith(":chatroom 367 op #mod pat!*@* op!op@chatroom ")
        assert op.line() == ":chatroom 368 op #mod :End of channel ban list"
        pat.send("JOIN #mod")
        assert " 474 pat #mod " in pat.until("474")
        op.send("MODE #mod +b *!*@host", "MODE #mod -b pat!*@*", "MODE #mod +b")
        assert " 696 op #mod b *!*@host " in op.until("696")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod -b pat!*@*"
        assert op.until("368").endswith(" 368 op #mod :End of channel ban list")
        pat.send("JOIN #mod")
        assert pat.until("JOIN", "#mod") == ":pat!pat@chatroom JOIN #mod"
        # A JSON operator's ban and kick: MODE +b and KICK lines for IRC members.
        op.send("MODE #mod +o jo")
        op.until("MODE", "#mod")
        json_user.send(command="ban", room="mod", user="pat", reason="again", id=3)
        json_user.until("ack", id=3)
        assert pat.until(":jo!jo@chatroom", "MODE") == ":jo!jo@chatroom MODE #mod +b pat!*@*"
        assert pat.until("KICK") == ":jo!jo@chatroom KICK #mod pat :Banned: again"
        assert op.until(":jo!jo@chatroom", "MODE") == ":jo!jo@chatroom MODE #mod +b pat!*@*"
        op.send("MODE #mod -o jo")
        assert op.until("MODE", "#mod") == ":op!op@chatroom MODE #mod -o jo"


def test_mode_minus_k_takes_the_key_irc_clients_send() -> None:
    with irc_server() as srv:
        op = Irc(irc_address(srv))
        op.register("op")
        op.send("JOIN #k", "MODE #k +k sesame", "MODE #k -k sesame", "MODE #k")
        assert op.until("MODE", "#k") == ":op!op@chatroom MODE #k +k sesame"
        assert op.until("MODE", "#k") == ":op!op@chatroom MODE #k -k"
        assert op.until("324").endswith(" 324 op #k +nt")


def test_multi_prefix_shows_an_operator_voiced_too() -> None:
    """docs/IRC.md: voice is kept alongside op (docs/PROTOCOL.md §Modes): NAMES, WHO and
    WHOIS show ``@+`` to a client with multi-prefix, ``@`` to the others; -o leaves +."""
    with irc_server() as srv:
        foo = Irc(irc_address(srv))
        foo.send("CAP REQ :multi-prefix", "CAP END")
        foo.register("foo")
        bar = Irc(irc_address(srv))
        bar.register("bar")
        foo.send("JOIN #chan")
        foo.until("366")
        bar.send("JOIN #chan")
        bar.until("366")
        foo.send("MODE #chan +vo bar bar", "MODE #chan +v foo")
        assert foo.until("MODE", "#chan") == ":foo!foo@chatroom MODE #chan +vo bar bar"
        assert foo.until("MODE", "#chan") == ":foo!foo@chatroom MODE #chan +v foo"
        foo.send("NAMES #chan", "WHO #chan", "WHOIS bar")
        assert foo.until("353").endswith(" #chan :@+bar @+foo")
        assert [foo.until(" 352 ").split(" ")[8] for _ in range(2)] == ["H@+", "H@+"]
        assert foo.until(" 319 ").endswith(":#lobby @+#chan")
        bar.send("NAMES #chan", "WHO #chan")
        assert bar.until("353").endswith(" #chan :@bar @foo")
        assert [bar.until(" 352 ").split(" ")[8] for _ in range(2)] == ["H@", "H@"]
        foo.send("MODE #chan -o bar", "NAMES #chan")
        assert foo.until("353").endswith(" #chan :+bar @+foo")
        json_user, _ = v2(srv, "jo")
        json_user.send(command="members", room="chan", id=1)
        info = json_user.until("room_info", id=1)["info"]
        assert (info["roles"], info["voiced"]) == ({"bar": "voice", "foo": "owner"}, ["foo"])
