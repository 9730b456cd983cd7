"""Where the server's time goes under fan-out load: py-spy samples of our server while a
swarm of 100 bots sends at a fixed rate. Needs py-spy (pip install -e '.[bench]').

    .venv/bin/python bench/profile_server.py --rate 300 --seconds 10 [--gil]

``--gil`` samples only the thread holding the GIL: where the Python work goes, without
the threads that are waiting in ``recv``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from common import start_server

from chatroom_bots.load import LoadConfig, Swarm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--gil", action="store_true", help="only the thread holding the GIL")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_server("ours", Path(tmp)) as (proc, port):
        raw = Path(tmp) / "profile.txt"
        cfg = LoadConfig(
            port=port, clients=a.clients, senders=10, processes=2, drain=1.0, relay_frames=True
        )
        with Swarm(cfg) as swarm:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--duration",
                    str(int(a.seconds)),
                    "--output",
                    str(raw),
                    "--nonblocking",
                    *(["--gil"] if a.gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result: list[object] = []
            t = threading.Thread(target=lambda: result.append(swarm.step(a.rate, a.seconds)))
            t.start()
            spy.wait(a.seconds + 30)
            t.join(a.seconds + 60)
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
        print(f"{total} samples at 200/s over {a.seconds:g} s; own time, top 15:")
        for fn, n in own.most_common(15):
            print(f"  {100 * n / total:5.1f} %  {fn}")
        print("inclusive (the function or anything it called), top 15:")
        for fn, n in inclusive.most_common(15):
            print(f"  {100 * n / total:5.1f} %  {fn}")


if __name__ == "__main__":
    main()
