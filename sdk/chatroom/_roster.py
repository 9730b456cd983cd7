"""The user list a client session keeps (docs/PROTOCOL.md §login, §Extensions
``users_delta``): full lists and deltas, and the ``count`` check that catches a list out
of step; with ``lazy_users``, only the count until a full list comes. No I/O; the
session owns it (one owner, or the session's lock)."""

from __future__ import annotations

import logging

from chatroom.protocol import UsersDelta

__all__ = ["Roster"]

log = logging.getLogger("chatroom.session")  # the session's records, as before the split


class Roster:
    """The active users. ``track``: keep them at all (a swarm bot that never reads the
    list says False: deltas then cost it nothing)."""

    __slots__ = ("_count", "_sorted", "_users", "track")

    def __init__(self, track: bool = True) -> None:
        self.track = track
        self._users: set[str] = set()
        self._sorted: tuple[str, ...] | None = ()  # None: stale, sorted on demand
        # How many users the server counts while the names are not known (a login_ok
        # without them, docs/PROTOCOL.md §lazy_users); None: the names are known.
        self._count: int | None = None

    @property
    def known(self) -> bool:
        """Whether the names are known (False from a login_ok with only a count until
        a full list)."""
        return self._count is None

    @property
    def users(self) -> tuple[str, ...]:
        """The active users, sorted ignoring case (built only when asked for)."""
        if self._sorted is None:
            self._sorted = tuple(sorted(self._users, key=str.lower))
        return self._sorted

    def __len__(self) -> int:
        return len(self._users) if self._count is None else self._count

    def replace(self, users: tuple[str, ...]) -> None:
        """A full list (``login_ok``, ``user_list``)."""
        if self.track:
            self._count = None
            self._users = set(users)
            self._sorted = users  # the server sends it sorted (docs/PROTOCOL.md §login)
        elif self._count is not None:
            self._count = len(users)

    def counted(self, count: int) -> None:
        """A ``login_ok`` with the number of users and not their names (``lazy_users``):
        the list is unknown, and only the count is kept, until a full list."""
        self._count = count
        self._users = set()
        self._sorted = ()

    def apply(self, delta: UsersDelta) -> bool:
        """A ``users_delta``; False when the list is out of step with the server's count
        (then ask for the whole list again)."""
        if self._count is not None:
            # No list to apply it to: the full list asked for includes this delta
            # (docs/PROTOCOL.md §lazy_users), and its count is the server's.
            self._count = delta.count
            return True
        if not self.track:
            return True
        users = self._users
        if delta.joined or delta.left:
            # In place: O(changes), not O(users); a swarm applies every delta N times.
            users.difference_update(delta.left)
            users.update(delta.joined)
            self._sorted = None
        if len(users) != delta.count:
            # Cannot happen with a correct server; heal instead of drifting for ever.
            log.warning(
                "user list out of step (%d here, %d on the server); asking for it again",
                len(users),
                delta.count,
            )
            return False
        return True
