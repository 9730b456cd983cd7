"""ngircd, the IRC baseline of bench/irc_fanout.py (docs/IRC.md, docs/PERFORMANCE.md):
its configuration for the bench and its process, started and stopped.

It runs with MaxPenaltyTime = 0 (no flood penalties, as the performance anchors
measured it). Needs Debian's ngircd (make bench-irc installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from irc_clients import PASSWORD

NGIRCD = Path("/usr/sbin/ngircd")


def installed() -> bool:
    return shutil.which("ngircd") is not None or NGIRCD.exists()


def ngircd_conf(tmp: Path, ports: list[int]) -> Path:
    conf = tmp / "ngircd.conf"
    conf.write_text(
        f"""[Global]
Name = bench.chatroom
Info = bench
Listen = 127.0.0.1
Ports = {", ".join(map(str, ports))}
MotdPhrase = bench
Password = {PASSWORD}
[Limits]
MaxPenaltyTime = 0
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
"""
    )
    return conf


@contextlib.contextmanager
def ngircd(tmp: Path, ports: list[int]) -> Iterator[int]:
    """ngircd listening on ``ports`` (the first answering connects) for the block: its
    process id."""
    exe = shutil.which("ngircd") or str(NGIRCD)
    port = ports[0]
    proc = subprocess.Popen(
        [exe, "-n", "-f", str(ngircd_conf(tmp, ports))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                try:  # a bounded wait on the process: it exits or starts listening
                    proc.wait(0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError("ngircd exited") from None
        yield proc.pid
    finally:
        proc.terminate()
        try:  # at 10,000 clients ngircd takes longer than this to say goodbye to each
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
