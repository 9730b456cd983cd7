"""How events look in the terminal: (style, text) fragments. Plain functions, no I/O."""

from __future__ import annotations

import time
import zlib

from prompt_toolkit.styles import Style

from chatroom import Broadcast, DirectMessage, HistoryMessage, UsersChanged
from chatroom.protocol import username_key

__all__ = ["STYLE", "Fragments", "format_event", "plain", "user_style"]

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
        "bottom-toolbar": "reverse",
    }
)


def user_style(name: str) -> str:
    """A colour per user, stable across runs and machines (crc32, not hash())."""
    return _PALETTE[zlib.crc32(username_key(name).encode()) % len(_PALETTE)]


def _ts(ts: float) -> tuple[str, str]:
    return ("class:ts", time.strftime("%H:%M ", time.localtime(ts)))


def format_event(event: object, me: str | None) -> Fragments | None:
    """The line for an incoming event, or None if it shows nothing."""
    if isinstance(event, Broadcast):
        return [
            _ts(event.ts),
            (user_style(event.sender), f"<{event.sender}>"),
            ("", f" {event.message}"),
        ]
    if isinstance(event, DirectMessage):
        return [
            _ts(event.ts),
            ("class:dm", "[DM] "),
            (user_style(event.sender), f"*{event.sender}*"),
            ("class:dm", f" -> you: {event.message}"),
        ]
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


def format_stored(m: HistoryMessage) -> Fragments:
    """A message from history (the login backlog, /history), dimmed: it is the past."""
    who = f"<{m.sender}>" if m.kind == "pm" else f"[DM] {m.sender} -> {m.to}:"
    when = time.strftime("%H:%M ", time.localtime(m.ts))
    return [("class:earlier", when), ("class:earlier", f"{who} {m.message}")]


def _names(names: list[str], most: int = 5) -> str:
    """A few names in full; a storm of logins as a count, not a wall of text."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{len(names)} users ({', '.join(names[:3])}, ...)"


def sent_dm(to: str, message: str, queued: bool = False) -> Fragments:
    """A DM we sent; ``queued``: they are offline and get it at their next login."""
    out: Fragments = [
        _ts(time.time()),
        ("class:dm", "[DM] you -> "),
        (user_style(to), f"*{to}*"),
        ("class:dm", f": {message}"),
    ]
    if queued:
        out.append(("class:info", f"  (queued: {to} is offline and gets it on return)"))
    return out


def plain(fragments: Fragments) -> str:
    return "".join(text for _, text in fragments)
