"""The server gate's one read per login (``ServerGate.at_login``) on the cluster's
PostgreSQL: the same statement as SQLite's, and a ban or a closing of registrations
written by another connection applies at the next login."""

from __future__ import annotations

import time

import pytest

from chatroom.errors import ProtocolError
from chatroom_server import servergate
from chatroom_server.cluster.pg import PgDatabase, PgSql


def test_another_connections_bans_and_closing_apply_at_the_next_login(pg_url: str) -> None:
    node, admin = PgDatabase(pg_url), PgDatabase(pg_url)  # a node's pool; chat-server admin's
    try:
        gate, other = servergate.ServerGate(PgSql.pooled(node)), PgSql.pooled(admin)
        seen = gate.at_login("198.51.100.7", "Mallory", time.time(), 1)
        assert seen.registrations_open and seen.banned(time.time()) is None

        now = time.time()
        servergate.ban(other, "mallory", "spam", None, now)
        servergate.set_registrations(other, False, now)
        seen = gate.at_login("198.51.100.7", "MALLORY", time.time(), 2)
        ban = seen.banned(time.time())
        assert ban is not None and ban.user == "mallory" and ban.reason == "spam"
        assert not seen.registrations_open

        servergate.ban_address(other, "198.51.100.0/24", "flood", None, time.time())
        with pytest.raises(ProtocolError) as refused:
            gate.at_login("198.51.100.7", "alice", time.time(), 3)
        assert refused.value.code == "banned" and refused.value.request_id == 3

        servergate.unban(other, "mallory", time.time())
        servergate.set_registrations(other, True, time.time())
        seen = gate.at_login("203.0.113.9", "mallory", time.time(), 4)
        assert seen.registrations_open and seen.banned(time.time()) is None
    finally:
        node.close()
        admin.close()
