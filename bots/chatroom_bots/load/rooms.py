"""``chat-load --rooms R``: which bots are in which rooms, and who sends to which.

A run with rooms spreads its bots over R rooms (docs/PROTOCOL.md §Rooms) whose sizes
follow a distribution: ``uniform`` (every room the same size, give or take one) or
``zipf`` (room k of 1..R holds a share of the memberships proportional to 1/k: one large
room and many small ones, the shape real chat systems have). Every bot is in
``per_bot`` rooms (and, as every user, in ``lobby``, where nobody sends in such a run);
every room has at least two members, so that each of its messages has a recipient.

The plan is a pure function of its settings (the seed included): the parent computes it
once and hands it to every worker, and the checker counts against it. A message to a
room is expected by the room's every other member, and by nobody else.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from chatroom.rooms import room_key

__all__ = [
    "DISTRIBUTIONS",
    "Distribution",
    "RoomPlan",
    "choose_rooms",
    "plan_rooms",
    "reconcile",
    "room_name",
    "size_label",
]

Distribution = Literal["uniform", "zipf"]
DISTRIBUTIONS: tuple[Distribution, ...] = get_args(Distribution)

# The rooms' names: valid room names (docs/PROTOCOL.md §Names and membership) that say
# what they are for in `chat-server admin rooms`. Fixed, not per run: rooms are never
# deleted, and the server holds at most --max-rooms of them, so a run reuses the rooms of
# the runs before it (and its bots part what the plan no longer gives them).
PREFIX = "load-"


def room_name(index: int) -> str:
    return f"{PREFIX}{index}"


def size_label(size: int) -> str:
    """The class of a room size in the report: powers of two (2, 3-4, 5-8, 9-16, ...)."""
    if size <= 2:
        return str(size)
    high = 1 << (size - 1).bit_length()
    return f"{high // 2 + 1}-{high}"


@dataclass(frozen=True)
class RoomPlan:
    """Room ``r`` is named ``names[r]`` and holds the bots ``members[r]`` (by number);
    rooms are numbered largest first."""

    names: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]

    def rooms_of(self, clients: int) -> list[tuple[int, ...]]:
        """Bot number -> the rooms it is in, in room order."""
        mine: list[list[int]] = [[] for _ in range(clients)]
        for r, members in enumerate(self.members):
            for bot in members:
                mine[bot].append(r)
        return [tuple(rooms) for rooms in mine]

    def senders(self, count: int, clients: int) -> list[int]:
        """``count`` senders: one member of each room, the largest room first, so that
        up to R senders give every room its own traffic; then the other bots by number."""
        chosen: list[int] = []
        taken: set[int] = set()
        for members in self.members:
            if len(chosen) >= count:
                break
            for bot in members:
                if bot not in taken:
                    chosen.append(bot)
                    taken.add(bot)
                    break
        chosen += [i for i in range(clients) if i not in taken][: max(0, count - len(chosen))]
        return chosen

    @property
    def sizes(self) -> list[int]:
        return [len(m) for m in self.members]


def _weights(rooms: int, distribution: Distribution) -> list[float]:
    """Room k's (from 0) share of the memberships, unnormalised: Zipf's 1/(k+1), or even."""
    return [1.0 / (k + 1) for k in range(rooms)] if distribution == "zipf" else [1.0] * rooms


def choose_rooms(
    rooms: int, distribution: Distribution, per_user: int, rng: random.Random
) -> list[str]:
    """``per_user`` distinct rooms for one user of a swarm whose size nobody knows in
    advance (Locust's): each drawn with the distribution's weight, so that the rooms'
    sizes follow it in expectation, where :func:`plan_rooms` deals them exactly."""
    if not 1 <= per_user <= rooms:
        raise ValueError(f"rooms per user must be from 1 to the number of rooms ({rooms})")
    weights = _weights(rooms, distribution)
    chosen: list[int] = []
    while len(chosen) < per_user:
        r = rng.choices(range(rooms), weights)[0]
        if r not in chosen:
            chosen.append(r)
            weights[r] = 0.0  # without replacement
    return [room_name(r) for r in sorted(chosen)]


def room_sizes(clients: int, rooms: int, distribution: Distribution, per_bot: int) -> list[int]:
    """The rooms' sizes, largest first, adding up to ``clients * per_bot`` memberships,
    each from 2 to ``clients``; ValueError for settings no plan can meet."""
    if rooms < 1:
        raise ValueError("--rooms must be at least 1")
    if not 1 <= per_bot <= rooms:
        raise ValueError(f"--rooms-per-bot must be from 1 to --rooms ({rooms})")
    total = clients * per_bot
    if total < 2 * rooms:
        raise ValueError(
            f"{rooms} rooms of at least 2 members need {2 * rooms} memberships; "
            f"{clients} clients in {per_bot} room(s) each make {total}"
        )
    weights = _weights(rooms, distribution)
    scale = total / sum(weights)
    sizes = [min(clients, max(2, round(w * scale))) for w in weights]
    # Rounding and the bounds leave the sum a little off: take the difference from (or
    # give it to) the largest rooms that can spare it, which barely moves the shape.
    diff = total - sum(sizes)
    while diff:
        for r in range(rooms):
            if diff > 0 and sizes[r] < clients:
                sizes[r] += 1
                diff -= 1
            elif diff < 0 and sizes[r] > 2:
                sizes[r] -= 1
                diff += 1
            if not diff:
                break
    return sorted(sizes, reverse=True)


def plan_rooms(
    clients: int, rooms: int, distribution: Distribution, per_bot: int = 1, seed: int = 1
) -> RoomPlan:
    """Bots in rooms: the sizes from :func:`room_sizes`, the seats dealt round-robin over
    the bots in a shuffled order. Every bot then gets exactly ``per_bot`` rooms, and a
    room's members are distinct, since each room takes the next ``size <= clients`` bots
    of the cycle. The shuffle keeps a room's members apart from the workers' shares
    (which are by number), so that a room's deliveries are spread over processes."""
    sizes = room_sizes(clients, rooms, distribution, per_bot)
    order = list(range(clients))
    random.Random(seed).shuffle(order)
    members = []
    at = 0
    for size in sizes:
        members.append(tuple(sorted(order[(at + i) % clients] for i in range(size))))
        at += size
    return RoomPlan(tuple(room_name(r) for r in range(rooms)), tuple(members))


def reconcile(current: Iterable[str], wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(rooms to part, rooms to join) for a bot in ``current`` (its login_ok's rooms)
    that the plan puts in ``wanted``. Membership is durable (docs/PROTOCOL.md §Rooms), so
    a bot may still be in the rooms an earlier run gave it: it parts them, since what
    it receives must be what the checker expects of this plan."""
    want = {room_key(r) for r in wanted}
    have = {room_key(r): r for r in current}
    leave = [r for k, r in have.items() if k not in want]
    return leave, [r for r in wanted if room_key(r) not in have]
