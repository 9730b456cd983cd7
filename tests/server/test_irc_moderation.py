"""IRC OPER (docs/PROTOCOL.md §Moderation, docs/IRC.md): a server operator, granted by
``chat-server admin grant`` only, says so with its own account's password: 464 for a
wrong one, 491 for an account that is not an operator or is not one's own, 381."""

from __future__ import annotations

import sqlite3

from chatroom_server import servergate
from tests.helpers import PASSWORD
from tests.server.test_irc import Irc, irc_address, irc_server


def test_oper_is_for_granted_accounts_with_their_password() -> None:
    with irc_server() as srv:
        alice = Irc(irc_address(srv))
        alice.register("alice")
        bob = Irc(irc_address(srv))
        bob.register("bob")
        alice.send("OPER alice")
        assert " 461 " in alice.until("461")
        alice.send("OPER alice :not the password")
        assert "Password incorrect" in alice.until("464")
        alice.send(f"OPER alice :{PASSWORD}")
        alice.until("491")
        db = sqlite3.connect(srv.db_path)
        try:
            assert servergate.grant(servergate.SqliteSql.of(db), "alice")
        finally:
            db.close()
        bob.send(f"OPER alice :{PASSWORD}")  # not one's own account
        assert "own account" in bob.until("491")
        alice.send(f"OPER ALICE :{PASSWORD}")
        assert "You are now an IRC operator" in alice.until("381")
        assert alice.line().endswith("MODE alice :+o")
        bob.send("WHOIS alice", "WHOIS bob")
        assert bob.until(" 313 ").endswith(" 313 bob alice :is an IRC operator")
        assert " 318 bob alice " in bob.until(" 318 ")
        bob.until(" 312 ")  # bob's own: no 313 for him
        assert " 318 bob bob " in bob.line()
