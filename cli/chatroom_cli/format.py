"""How events look in the terminal: (style, text) fragments. Plain functions, no I/O."""

from __future__ import annotations

import time
import zlib

from prompt_toolkit.styles import Style

from chatroom import Broadcast, DirectMessage, UserList

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
        "me": "bold",
        "bottom-toolbar": "reverse",
    }
)


def user_style(name: str) -> str:
    """A colour per user, stable across runs and machines (crc32, not hash())."""
    return _PALETTE[zlib.crc32(name.lower().encode()) % len(_PALETTE)]


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
    if isinstance(event, UserList):
        now = time.time()
        if event.joined and event.joined != me:
            return [_ts(now), ("class:join", f"--> {event.joined} joined")]
        if event.left and event.left != me:
            return [_ts(now), ("class:leave", f"<-- {event.left} left")]
    return None


def sent_dm(to: str, message: str) -> Fragments:
    return [
        _ts(time.time()),
        ("class:dm", "[DM] you -> "),
        (user_style(to), f"*{to}*"),
        ("class:dm", f": {message}"),
    ]


def plain(fragments: Fragments) -> str:
    return "".join(text for _, text in fragments)
