"""Where the server's time goes under fan-out load: py-spy samples of our server while a
swarm of 100 bots sends at a fixed rate. Needs py-spy (pip install -e '.[bench]').

    .venv/bin/python bench/profile_server.py --rate 300 --seconds 10 [--gil]
                                             [--clients 1000 --rooms 100 --senders 100]

``--gil`` samples only the thread holding the GIL: where the Python work goes, without
the threads that are waiting in ``recv``. ``--clients 1000`` works; at 10,000 threads
py-spy 0.4 cannot attach here ("Failed to find a python interpreter"), so
docs/PERFORMANCE.md profiles that size with ``perf record -a -g`` instead. ``--rooms R``
puts the bots in R rooms (chat-load ``--rooms``, as bench/ab.py): ``--clients 1000 --rooms
100 --senders 100`` is 100 rooms of 10, each with a sender.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from common import start_server, wait_idle

from chatroom_bots.load import LoadConfig, Swarm


def attach(pid: int, a: argparse.Namespace, raw: Path) -> subprocess.Popen[str]:
    """py-spy recording ``pid``, attached before the load begins: attaching to a server
    of 10,000 threads under load failed here ("Failed to find a python interpreter in
    the .data section") where the same server idle took it. Three tries."""
    cmd = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(a.spy_rate),
        "--format",
        "raw",
        "--duration",
        str(int(a.seconds)),
        "--output",
        str(raw),
        "--nonblocking",
        *(["--gil"] if a.gil else []),
    ]
    err = ""
    for _ in range(3):
        spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert spy.stdout is not None
        for line in spy.stdout:  # "py-spy> Sampling process ..." once attached; EOF if not
            if "Sampling" in line:
                return spy
            err += line
        spy.wait(10)
    sys.exit(f"py-spy could not attach to {pid}: {err.strip()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--senders", type=int, default=10, help="of the bots")
    ap.add_argument("--rooms", type=int, default=0, help="bots in this many rooms")
    ap.add_argument("--gil", action="store_true", help="only the thread holding the GIL")
    ap.add_argument(
        "--spy-rate",
        type=int,
        default=200,
        help="samples/s (py-spy reads every thread per sample: at 10,000 threads use ~5)",
    )
    a = ap.parse_args()
    # Load-test hashes: this profiles the fan-out, and 10,000 full-cost argon2id logins
    # would take minutes (docs/SECURITY.md).
    hashes = ("--password-hash", "load-test")
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_server("ours", Path(tmp), *hashes) as (proc, port),
    ):
        raw = Path(tmp) / "profile.txt"
        cfg = LoadConfig(
            port=port,
            clients=a.clients,
            senders=a.senders,
            processes=2,
            drain=1.0,
            relay_frames=True,
            rooms=a.rooms,
        )
        with Swarm(cfg) as swarm:
            wait_idle(proc.pid)  # the logins' user-list deltas are not what is profiled
            spy = attach(proc.pid, a, raw)
            result: list[object] = []
            t = threading.Thread(target=lambda: result.append(swarm.step(a.rate, a.seconds)))
            t.start()
            try:
                # py-spy may lag behind its clock with thousands of threads to read.
                out, _ = spy.communicate(timeout=a.seconds * 4 + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
                sys.exit(f"py-spy did not finish: try a lower --spy-rate than {a.spy_rate}")
            t.join(a.seconds + 60)
        if not raw.exists():
            sys.exit(f"py-spy wrote nothing (exit {spy.returncode}): {out.strip()[-2000:]}")
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            n = int(count)
            total += n
            own[frames[-1] if frames else "?"] += n  # function (file:line)
            for fn in {f.split(" (")[0] for f in frames}:
                inclusive[fn] += n  # function, anywhere on the stack
        print(f"{total} samples at {a.spy_rate}/s over {a.seconds:g} s; own time, top 15:")
        for fn, n in own.most_common(15):
            print(f"  {100 * n / total:5.1f} %  {fn}")
        print("inclusive (the function or anything it called), top 15:")
        for fn, n in inclusive.most_common(15):
            print(f"  {100 * n / total:5.1f} %  {fn}")


if __name__ == "__main__":
    main()
