"""chat-server new-epoch on the cluster's PostgreSQL: after a pg_restore, resumes from
before are told (docs/OPERATIONS.md, Backups, The cluster)."""

from __future__ import annotations

import pytest

from chatroom_server.__main__ import main
from chatroom_server.cluster import PgDatabase


def test_new_epoch_on_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    pg = PgDatabase(pg_url)
    before = pg.epoch
    pg.close()
    assert main(["new-epoch", "--db", pg_url]) == 0
    printed = capsys.readouterr().out
    pg = PgDatabase(pg_url)
    try:
        assert pg.epoch != before
        assert f"new epoch {pg.epoch}" in printed
    finally:
        pg.close()
