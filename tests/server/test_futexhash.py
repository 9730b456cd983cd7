"""chatroom_server.futexhash: a futex hash sized for a thread per connection (Linux 6.16
and later; docs/PERFORMANCE.md, "The futex hash")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatroom_server import futexhash


def test_slots_are_the_power_of_two_at_or_above_the_threads_within_bounds() -> None:
    assert futexhash.slots_for(0) == 16
    assert futexhash.slots_for(16) == 16
    assert futexhash.slots_for(17) == 32
    assert futexhash.slots_for(10_064) == 16_384
    assert futexhash.slots_for(16_384) == 16_384
    assert futexhash.slots_for(10**9) == 1 << 16


# In a process of its own: the setting is the whole process's.
WIDEN = """
import threading, time
from chatroom_server import futexhash
print(futexhash.widen(10_000))
threads = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(50)]
for t in threads: t.start()
for t in threads: t.join()
print(futexhash.slots())  # the kernel resizes only tables it sized itself
print(futexhash.widen(100))  # never narrower
"""


def test_widen_sizes_the_table_for_the_threads_and_it_stays() -> None:
    if futexhash.slots() is None:
        pytest.skip("this kernel has no per-process futex hash (Linux 6.16+)")
    out = subprocess.run(
        [sys.executable, "-c", WIDEN], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert out == ["16384", "16384", "16384"]


def test_chat_server_widens_it_for_its_connections(tmp_path: Path) -> None:
    if futexhash.slots() is None:
        pytest.skip("this kernel has no per-process futex hash (Linux 6.16+)")
    db = str(tmp_path / "c.db")
    cmd = [sys.executable, "-m", "chatroom_server", "--port", "0", "--db", db]
    with subprocess.Popen(
        [*cmd, "--max-connections", "20000"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # once it listens, before it serves anyone
            lines.append(line)
            if "futex hash" in line or len(lines) > 10:
                break
        proc.terminate()
        proc.communicate(timeout=10)
    assert any("futex hash: 32768 buckets" in line for line in lines), lines
