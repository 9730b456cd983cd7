"""Nothing lost, nothing twice, on the cluster (docs/PROTOCOL.md §Offline DMs,
§Idempotent sends, §Resume): the same promises as one process, on real Redis and real
PostgreSQL."""

from __future__ import annotations

from chatroom_server.cluster.pg import PgDatabase, PgMessageLog
from chatroom_server.messagelog import Conflict, Duplicate, NewMessage
from tests.cluster.conftest import Cluster
from tests.helpers import connect
from tests.server.test_messagelog import cid_conflicts, own_messages_replayed_with_their_cid


def test_a_cid_reused_with_another_message_is_a_conflict(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    zoe, carol = connect(b.address, "zoe"), connect(b.address, "carol")
    cid_conflicts(connect(a.address, "reuser"), zoe, carol)


def test_a_cid_conflict_within_one_group_and_against_the_stored(pg_url: str) -> None:
    pg = PgDatabase(pg_url)
    try:
        mlog = PgMessageLog(pg, publish=lambda stored: None)
        (seq,) = mlog.append([NewMessage("ann", "zoe", "hi", 1.0, cid="X")])
        assert isinstance(seq, int)
        got = mlog.append(
            [
                NewMessage("ann", "carol", "hi", 2.0, cid="X"),  # stored: other recipient
                NewMessage("ann", None, "a", 2.0, cid="Y"),
                NewMessage("ann", None, "b", 2.0, cid="Y"),  # this group: other text
                NewMessage("ANN", "ZOE", "hi", 2.0, cid="X"),  # a resend, any case
                NewMessage("bob", "carol", "hi", 2.0, cid="X"),  # another sender's cid
            ]
        )
        assert got == [Conflict(seq), seq + 1, Conflict(seq + 1), Duplicate(seq, "zoe"), seq + 2]
        mlog.close()
    finally:
        pg.close()


def test_replayed_own_messages_carry_their_cid(cluster: Cluster) -> None:
    a, b = cluster.add(), cluster.add()
    own_messages_replayed_with_their_cid(a.address, b.address)
