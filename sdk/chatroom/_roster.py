"""The user list a client session keeps (docs/PROTOCOL.md §login, §Extensions
``users_delta``): full lists and deltas, and the ``count`` check that catches a list out
of step. No I/O; the session owns it (one owner, or the session's lock)."""

from __future__ import annotations

import logging

from chatroom.protocol import UsersDelta

__all__ = ["Roster"]

log = logging.getLogger("chatroom.session")  # the session's records, as before the split


class Roster:
    """The active users. ``track``: keep them at all (a swarm bot that never reads the
    list says False: deltas then cost it nothing)."""

    __slots__ = ("_sorted", "_users", "track")

    def __init__(self, track: bool = True) -> None:
        self.track = track
        self._users: set[str] = set()
        self._sorted: tuple[str, ...] | None = ()  # None: stale, sorted on demand

    @property
    def users(self) -> tuple[str, ...]:
        """The active users, sorted ignoring case (built only when asked for)."""
        if self._sorted is None:
            self._sorted = tuple(sorted(self._users, key=str.lower))
        return self._sorted

    def __len__(self) -> int:
        return len(self._users)

    def replace(self, users: tuple[str, ...]) -> None:
        """A full list (``login_ok``, ``user_list``)."""
        if self.track:
            self._users = set(users)
            self._sorted = users  # the server sends it sorted (docs/PROTOCOL.md §login)

    def apply(self, delta: UsersDelta) -> bool:
        """A ``users_delta``; False when the list is out of step with the server's count
        (then ask for the whole list again)."""
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
