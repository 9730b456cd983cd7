"""The REPL's room commands (docs/PROTOCOL.md §Rooms): ``/join``, ``/switch``, ``/part``,
``/rooms``, ``/topic``, ``/mode``, ``/members``, and the moderation ones (§Moderation:
``/kick``, ``/ban``, ``/mute``, ``/op``...), run on the REPL's thread. A part of
:class:`chatroom_cli.repl.Repl`, in a module of its own so that each stays one idea:
the session there, the rooms here."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from chatroom import ChatClient
from chatroom.rooms import LOBBY, room_key
from chatroom_cli.commands import is_address

# The role commands as mode changes (docs/PROTOCOL.md §Modes).
_ROLE_MODES = {"op": "+o", "deop": "-o", "voice": "+v", "devoice": "-v"}
_DONE = {
    "kick": "removed",
    "ban": "banned",
    "mute": "muted",
    "unban": "unbanned",
    "unmute": "unmuted",
}

if TYPE_CHECKING:
    from chatroom_cli.terminal import Terminal

__all__ = ["RoomCommands"]


class RoomCommands:
    """What the room commands need of the REPL, and the commands."""

    client: ChatClient
    term: Terminal
    current: str
    _rooms_lock: threading.Lock
    _unread: dict[str, int]

    def info(self, text: str) -> None:
        raise NotImplementedError  # the REPL's

    def error(self, text: str) -> None:
        raise NotImplementedError  # the REPL's

    def _set_current(self, room: str) -> None:
        self.current = room
        with self._rooms_lock:
            self._unread.pop(room_key(room), None)
        self.term.refresh()

    def cycle(self, step: int) -> None:
        """Make the next (``step`` 1) or previous (-1) of our rooms current, lobby
        first (Alt-N, Alt-P)."""
        names = [LOBBY, *(r.name for r in self.client.rooms)]
        keys = [room_key(n) for n in names]
        here = keys.index(room_key(self.current)) if room_key(self.current) in keys else 0
        self._set_current(names[(here + step) % len(names)])
        self.info(f"now in #{self.current}")

    def _join(self, room: str, key: str | None) -> None:
        info = self.client.join(room, key=key)
        self._set_current(info.name)
        topic = f"; topic: {info.topic}" if info.topic else ""
        n = len(info.members)
        self.info(
            f"you are in #{info.name} ({n} member{'s' * (n != 1)}: "
            f"{', '.join(info.members)}{topic}); plain text goes here now"
        )

    def _switch(self, room: str) -> None:
        if room_key(room) == LOBBY:
            self._set_current(LOBBY)
        else:
            mine = {room_key(r.name): r.name for r in self.client.rooms}
            if room_key(room) not in mine:
                self.error(f"you are not in #{room}: /join {room}")
                return
            self._set_current(mine[room_key(room)])
        self.info(f"now in #{self.current}")

    def _part(self, room: str, reason: str | None) -> None:
        if room_key(room) == LOBBY:
            self.error("everyone is always in lobby; /part a room you joined")
            return
        self.client.part(room, reason=reason)
        self.info(f"you left #{room}")
        if room_key(room) == room_key(self.current):
            self._set_current(LOBBY)

    def _list_rooms(self) -> None:
        rooms = self.client.list_rooms()
        if not rooms:
            self.info("no rooms yet: /join <name> makes one")
            return
        for r in rooms:
            mark = "*" if r.joined else " "
            topic = f" - {r.topic}" if r.topic else ""
            self.info(f"{mark} #{r.name} ({r.count}) {r.modes}{topic}")

    def _topic(self, room: str, topic: str | None) -> None:
        if topic is None:
            text = self.client.topic(room)
            self.info(f"#{room} topic: {text}" if text else f"#{room} has no topic")
        else:
            self.client.set_topic(room, topic)

    def _mode(self, room: str, modes: str | None, args: tuple[str, ...]) -> None:
        if modes is None:
            info = self.client.room_info(room)
            extra = " ".join(x for x in (info.key, str(info.limit) if info.limit else None) if x)
            self.info(f"#{info.name} modes: {info.modes or 'none'} {extra}".rstrip())
        else:
            self.client.mode(room, modes, *args)

    def _members(self, room: str) -> None:
        if room_key(room) == LOBBY:
            users = self.client.request_users()
            self.info(f"#lobby: everyone; {len(users)} online: {', '.join(users)}")
            return
        info = self.client.room_info(room)
        voiced = set(info.voiced)  # an operator with voice too (docs/PROTOCOL.md §Modes)
        names = [
            f"{m} ({info.roles[m]}{', voice' if m in voiced else ''})" if m in info.roles else m
            for m in info.members
        ]
        self.info(f"#{info.name}: {len(names)} members: {', '.join(names)}")

    def _moderate(
        self, verb: str, user: str, room: str, duration: int | None, reason: str | None
    ) -> None:
        c = self.client
        if verb in _ROLE_MODES:
            c.mode(room, _ROLE_MODES[verb], user)
            return  # the room_event says it
        if verb == "kick":
            r = c.kick(room, user, reason=reason)
        elif verb == "ban" and is_address(user):  # server operators: §Bans by address
            r = c.ban_address(room, user, reason=reason, duration=duration)
        elif verb == "unban" and is_address(user):
            r = c.unban_address(room, user)
        elif verb == "ban":
            r = c.ban(room, user, reason=reason, duration=duration)
        elif verb == "mute":
            r = c.mute(room, user, reason=reason, duration=duration)
        elif verb == "unban":
            r = c.unban(room, user)
        else:
            r = c.unmute(room, user)
        name = r.to or user
        if r.seq is None:  # an unban or unmute of nobody
            self.info(f"{name} was not {_DONE[verb[2:]]} in #{room}")
            return
        self.info(f"{_DONE[verb]} {name} in #{room}")

    def _bans(self, room: str) -> None:
        bans = self.client.bans(room)
        if not bans:
            self.info(f"#{room} bans nobody")
        for b in bans:
            until = f" until {time.strftime('%Y-%m-%d %H:%M', time.localtime(b.expires))}"
            why = f" ({b.reason})" if b.reason else ""
            who = b.user or f"address {b.address}"  # addresses: to server operators only
            self.info(f"#{room}: {who} banned by {b.by}{until if b.expires else ''}{why}")
