"""How events look in the terminal: (style, text) fragments. Plain functions, no I/O."""

from __future__ import annotations

import time
import zlib

from prompt_toolkit.styles import Style

from chatroom import Broadcast, DirectMessage, DmSent, HistoryMessage, RoomEvent, UsersChanged
from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, room_key

__all__ = [
    "STYLE",
    "Fragments",
    "format_event",
    "format_room_event",
    "format_stored",
    "plain",
    "room_label",
    "sent_dm",
    "user_style",
]

Fragments = list[tuple[str, str]]

_PALETTE = (
    "ansicyan",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansibrightcyan",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansired",
)

STYLE = Style.from_dict(
    {
        "ts": "ansibrightblack",
        "dm": "ansimagenta bold",
        "join": "ansigreen",
        "leave": "ansibrightblack",
        "error": "ansired bold",
        "info": "ansibrightblack italic",
        "earlier": "ansibrightblack",
        "me": "bold",
        "room": "ansibrightcyan",
        "bottom-toolbar": "reverse",
    }
)


def user_style(name: str) -> str:
    """A colour per user, stable across runs and machines (crc32, not hash())."""
    return _PALETTE[zlib.crc32(username_key(name).encode()) % len(_PALETTE)]


def _ts(ts: float) -> tuple[str, str]:
    return ("class:ts", time.strftime("%H:%M ", time.localtime(ts)))


def _is(name: str, me: str | None) -> bool:
    return me is not None and username_key(name) == username_key(me)


def _dm(sender: str, to: str, message: str, me: str | None) -> Fragments:
    """A DM's words, the same live and from history: ``[DM] *bob* -> you: text`` for
    one we received, ``[DM] you -> *bob*: text`` for one we sent (by its ``to``)."""
    if _is(sender, me):
        return [
            ("class:dm", "[DM] you -> "),
            (user_style(to), f"*{to}*"),
            ("class:dm", f": {message}"),
        ]
    target = "you" if _is(to, me) else f"*{to}*"
    return [
        ("class:dm", "[DM] "),
        (user_style(sender), f"*{sender}*"),
        ("class:dm", f" -> {target}: {message}"),
    ]


def room_label(room: str | None, current: str | None) -> Fragments:
    """``#dev `` before a message from a room other than the current one (none for the
    current room: one stream, labelled where it leaves the room you are looking at)."""
    room = room or LOBBY
    if room_key(room) == room_key(current or LOBBY):
        return []
    return [("class:room", f"#{room} ")]


def format_event(event: object, me: str | None, current: str | None = None) -> Fragments | None:
    """The line for an incoming event, or None if it shows nothing; ``current``: the
    room the user is in now (messages from others are labelled with their room)."""
    if isinstance(event, Broadcast):
        return [
            _ts(event.ts),
            *room_label(event.room, current),
            (user_style(event.sender), f"<{event.sender}>"),
            ("", f" {event.message}"),
        ]
    if isinstance(event, RoomEvent):
        return format_room_event(event, me)
    if isinstance(event, DirectMessage):
        # Always to us: the SDK passes the DMs we sent as DmSent.
        return [_ts(event.ts), *_dm(event.sender, event.to, event.message, event.to)]
    if isinstance(event, DmSent):
        return [_ts(event.ts), *_dm(event.sender, event.to, event.message, event.sender)]
    if isinstance(event, UsersChanged):
        joined = [n for n in event.joined if n != me]
        left = [n for n in event.left if n != me]
        if not joined and not left:
            return None
        out: Fragments = [_ts(time.time())]
        if joined:
            out.append(("class:join", f"--> {_names(joined)} joined"))
        if left:
            out.append(("", "; " if joined else ""))
            out.append(("class:leave", f"<-- {_names(left)} left"))
        return out
    return None


def format_room_event(event: RoomEvent, me: str | None) -> Fragments:
    """A change to a room: ``-- #dev: bob joined``."""
    by, room = event.by, f"#{event.room}"
    kind = event.event
    if kind == "invite" and event.user is not None and _is(event.user, me):
        return [_ts(event.ts), ("class:join", f"-- {by} invited you to {room}: /join {event.room}")]
    why = f" ({event.reason})" if event.reason else ""
    until = ""
    if event.expires is not None:
        until = f" until {time.strftime('%Y-%m-%d %H:%M', time.localtime(event.expires))}"
    if kind in ("kick", "ban") and event.user is not None and _is(event.user, me):
        # Put out of the room: say by whom and why; we are no longer in it.
        did = "removed you from" if kind == "kick" else "banned you from"
        text = f"-- {by} {did} {room}{until}{why}; you are no longer in it"
        return [_ts(event.ts), ("class:leave", text)]
    if kind == "join":
        text, style = f"{by} joined", "class:join"
    elif kind == "part":
        text, style = f"{by} left{why}", "class:leave"
    elif kind == "kick":
        text, style = f"{by} removed {event.user}{why}", "class:leave"
    elif kind == "topic":
        text = f"{by} set the topic: {event.topic}" if event.topic else f"{by} cleared the topic"
        style = "class:info"
    elif kind == "mode":
        text, style = f"{by} set mode {' '.join((event.modes or '', *event.args))}", "class:info"
    elif kind == "invite":
        text, style = f"{by} invited {event.user}", "class:info"
    elif kind in ("ban", "unban") and event.address:  # which one is private
        did = "banned an address" if kind == "ban" else "lifted a ban of an address"
        text, style = f"{by} {did}{until}{why}", "class:info"
    elif kind == "ban":
        text, style = f"{by} banned {event.user}{until}{why}", "class:leave"
    elif kind == "mute":
        text, style = f"{by} muted {event.user}{until}{why}", "class:info"
    elif kind in ("unban", "unmute"):
        text, style = f"{by} {kind}{'ned' if kind == 'unban' else 'd'} {event.user}", "class:info"
    else:
        text, style = f"{kind} by {by}", "class:info"
    return [_ts(event.ts), ("class:room", f"{room}: "), (style, text)]


def format_stored(m: HistoryMessage, me: str | None = None) -> Fragments:
    """A message from history (the login backlog, /history), dimmed: it is the past. It
    reads as the same message live would (``me``: whose history it is)."""
    when = time.strftime("%H:%M ", time.localtime(m.ts))
    if m.kind == "dm":
        words = _dm(m.sender, m.to or "?", m.message, me)
    else:
        words = [("", f"<{m.sender}> {m.message}")]
    return [("class:earlier", when), *(("class:earlier", text) for _, text in words)]


def _names(names: list[str], most: int = 5) -> str:
    """A few names in full; a storm of logins as a count, not a wall of text."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{len(names)} users ({', '.join(names[:3])}, ...)"


def sent_dm(to: str, message: str, queued: bool = False) -> Fragments:
    """A DM we sent; ``queued``: they are offline and get it at their next login."""
    out: Fragments = [_ts(time.time()), *_dm("you", to, message, "you")]
    if queued:
        out.append(("class:info", f"  (queued: {to} is offline and gets it on return)"))
    return out


def plain(fragments: Fragments) -> str:
    return "".join(text for _, text in fragments)
