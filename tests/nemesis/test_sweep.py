"""The nemesis harness sweeps what a killed run left behind, and nothing of a live run's
(tests.nemesis.services.sweep)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nemesis.services import OWNER, PG_PREFIX, Tmpfs, sweep


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def mounted(point: Path) -> bool:
    return os.path.ismount(point)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[tuple[Tmpfs, Tmpfs]]:
    """Two run disks as Tmpfs mounts them; unmounted afterwards whatever happens."""
    why = Tmpfs.possible()
    if why is not None:
        pytest.skip(why)
    made = [Tmpfs(tmp_path / f"single-{seed}" / "disk", 1) for seed in (1, 2)]
    try:
        yield made[0], made[1]
    finally:
        for t in made:
            if mounted(t.path):
                t.unmount()


def test_a_killed_run_s_tmpfs_is_unmounted_a_live_one_s_kept(
    disks: tuple[Tmpfs, Tmpfs], dead_pid: int
) -> None:
    killed, live = disks
    (killed.path / OWNER).write_text(f"{dead_pid}\n")
    swept = sweep(killed.path.parent)  # no PostgreSQL directories there
    assert not mounted(killed.path)
    assert any(str(killed.path) in line for line in swept)
    assert mounted(live.path)  # its owner is this process


def test_an_unowned_tmpfs_is_unmounted_only_when_nobody_uses_it(
    disks: tuple[Tmpfs, Tmpfs],
) -> None:
    """pytest's rotation of old temporary directories deletes the owner file inside a
    mount it cannot remove: then only the mount's users say it is live."""
    idle, busy = disks
    (idle.path / OWNER).unlink()
    (busy.path / OWNER).unlink()
    with (busy.path / "chat.db").open("wb"):  # a server's open database
        sweep(idle.path.parent)
        assert mounted(busy.path)
    assert not mounted(idle.path)


def test_a_killed_run_s_postgres_directory_goes(tmp_path: Path, dead_pid: int) -> None:
    killed = tmp_path / f"{PG_PREFIX}killed"
    live = tmp_path / f"{PG_PREFIX}live"
    unowned = tmp_path / f"{PG_PREFIX}unowned"  # made before owners: young, so kept
    other = tmp_path / "somebody-else"
    for d in (killed, live, unowned, other):
        (d / "data").mkdir(parents=True)
    (killed / OWNER).write_text(f"{dead_pid}\n")
    (live / OWNER).write_text(f"{os.getpid()}\n")
    (other / OWNER).write_text(f"{dead_pid}\n")
    swept = [line for line in sweep(tmp_path) if "PostgreSQL" in line]
    assert not killed.exists()
    assert swept == [f"deleted a killed run's PostgreSQL directory {killed}"]
    assert live.exists() and unowned.exists() and other.exists()
