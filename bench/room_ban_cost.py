"""What a room's address bans (docs/PROTOCOL.md §Bans by address) cost a login: every
login asks, without the fan-out lock, whether any room bans its address
(chatroom_server.moderation.Moderation.may_ban_address), and takes the lock only if one
does. CPU time per check, with N bans spread over 100 rooms, for an address no room
bans (every login but the banned) and one a ban holds.

    .venv/bin/python bench/room_ban_cost.py [--bans 0,10,1000,10000]
"""

from __future__ import annotations

import argparse
import time

from chatroom.rooms import RoomEventKind
from chatroom_server.moderation import Moderation
from chatroom_server.rooms import RoomChange


def model(n: int) -> Moderation:
    m = Moderation()
    for i in range(n):
        net = f"10.{i // 250 % 250}.{i % 250}.0/24"
        m.apply(RoomChange(f"r{i % 100}", RoomEventKind.BAN, "oper", address=net), 0.0)
    return m


def cost(m: Moderation, ip: str, rounds: int) -> float:
    """CPU µs per check."""
    t0 = time.process_time()
    for _ in range(rounds):
        m.may_ban_address(ip, 1.0)
    return (time.process_time() - t0) / rounds * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bans", default="0,10,1000,10000")
    p.add_argument("--rounds", type=int, default=20000)
    args = p.parse_args()
    print("bans  miss_us  hit_us")
    for n in (int(x) for x in args.bans.split(",")):
        m = model(n)
        hit = cost(m, "10.0.0.7", args.rounds) if n else float("nan")
        print(f"{n:5d}  {cost(m, '192.0.2.1', args.rounds):7.2f}  {hit:6.2f}")


if __name__ == "__main__":
    main()
