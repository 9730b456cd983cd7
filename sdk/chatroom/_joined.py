"""The rooms a client session is in (docs/PROTOCOL.md §Rooms), kept up to date from
``login_ok``, the replies to room commands and every ``room_event``. No I/O; the session
owns it (one owner, or the session's lock)."""

from __future__ import annotations

from collections.abc import Callable

from chatroom.rooms import RoomEvent, RoomInfo, apply_event, room_key

__all__ = ["JoinedRooms"]


class JoinedRooms:
    """The rooms joined (``lobby`` not included), by :func:`~chatroom.rooms.room_key`."""

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[str, RoomInfo] = {}

    @property
    def rooms(self) -> tuple[RoomInfo, ...]:
        """Sorted ignoring case."""
        return tuple(sorted(self._rooms.values(), key=lambda r: r.name.lower()))

    def get(self, name: str) -> RoomInfo | None:
        """The room ``name`` (any case), if the user is in it."""
        return self._rooms.get(room_key(name))

    def reset(self, rooms: tuple[RoomInfo, ...]) -> None:
        """What a ``login_ok`` says the user is in."""
        self._rooms = {room_key(r.name): r for r in rooms}

    def parted(self, room: str) -> None:
        """Our ``part`` was acked."""
        self._rooms.pop(room_key(room), None)

    def reply(self, command: str, info: RoomInfo) -> None:
        """A ``room_info`` reply to ``command``: the room joined, or fresher news of one
        the user is in."""
        key = room_key(info.name)
        if command == "join" or key in self._rooms:
            self._rooms[key] = info

    def event(self, event: RoomEvent, me: str, is_me: Callable[[str], bool]) -> None:
        """Keep the rooms as ``event`` leaves them; ``me``: our name, ``is_me``: whether
        a name is ours (any case)."""
        key = room_key(event.room)
        # A part, or being put out (kick, ban: docs/PROTOCOL.md §Moderation).
        gone = event.by if event.event == "part" else None
        if event.event in ("kick", "ban"):
            gone = event.user
        if gone is not None and is_me(gone):
            self._rooms.pop(key, None)
            return
        info = self._rooms.get(key)
        if info is None:
            if event.event == "join" and is_me(event.by):
                # Our own join, made by another session of ours: the rest comes with
                # the next room_info (members) or login.
                self._rooms[key] = RoomInfo(name=event.room, members=(me,))
            return
        self._rooms[key] = apply_event(info, event)
