"""Out: the errors that answer an IRC session's requests, as the numerics IRC has for
them (chatroom_server.irc, "Out"). What the request asked (chatroom_server.irc.asked)
picks the numeric: a PRIVMSG to nobody is 401, a JOIN of a full room 471, a refused
mode 472 or 696. Called by :class:`~chatroom_server.irc.render.IrcRender` wherever the
error is sent: it takes no lock and calls nothing of the server."""

from __future__ import annotations

from typing import Final, Protocol

from chatroom.protocol import ErrorEvent
from chatroom.rooms import MODE_LETTERS
from chatroom_server.irc.asked import Asked
from chatroom_server.irc.parse import HOST


class Renders(Protocol):
    """What the errors read of the session's renderer (IrcRender implements it): its
    names, and how it words a numeric."""

    name: str  # the server's, in prefixes
    nick: str
    channel: str

    def numeric(self, code: str, *params: str, text: str | None = None) -> str: ...


def error_lines(r: Renders, e: ErrorEvent, asked: Asked, out: list[str]) -> None:
    """The lines for an error that answers ``asked``: the numeric IRC has for it, else
    a NOTICE."""
    cmd, target, args = asked.command, asked.target, asked.args
    if cmd == "NOTICE":
        return  # RFC 1459: never an automatic reply to a NOTICE
    if cmd == "login":
        if e.code == "invalid_username":
            out.append(r.numeric("432", r.nick, text=e.message))
        elif e.code in ("rate_limited", "unavailable"):
            out.append(f":{r.name} NOTICE {r.nick} :{e.message}")
            out.append(f"ERROR :Closing link: {HOST} ({e.message})")
        else:
            out.append(r.numeric("464", text=f"Password incorrect: {e.message}"))
            out.append(f"ERROR :Closing link: {HOST} (Bad password)")
        return
    if cmd == "sasl":  # a password check refused, and why (wrong, throttled, busy)
        out.append(r.numeric("904", text=f"SASL authentication failed: {e.message}"))
        return
    if cmd == "KILL":  # the server's kill (chatroom_server.serverops)
        if e.code == "not_operator":
            out.append(r.numeric("481", text="Permission Denied- You're not an IRC operator"))
        elif e.code in ("user_offline", "unknown_user"):
            out.append(r.numeric("401", target, text="No such nick/channel"))
        else:
            out.append(f":{r.name} NOTICE {r.nick} :KILL {target}: {e.message}")
        return
    if cmd == "PRIVMSG" and e.code in ("unknown_user", "user_offline"):
        out.append(r.numeric("401", target, text=e.message))
        return
    chan = target
    if cmd == "PRIVMSG" and e.code in ("not_in_room", "muted", "banned", "guest_not_allowed"):
        out.append(r.numeric("404", chan, text=f"Cannot send to channel: {e.message}"))
        return
    if cmd == "NAMES" and e.code in ("no_such_room", "invalid_room"):
        out.append(r.numeric("366", chan, text="End of /NAMES list"))
        return
    if cmd == "INVITE" and e.code == "unknown_user":
        out.append(r.numeric("401", args[0] if args else "", text=e.message))
        return
    if cmd == "MODE" and e.code == "bad_request":
        out.append(_bad_mode(r, chan, " ".join(args), e.message))
        return
    if cmd in ("KICK", "MODE") and e.code == "not_in_room" and not e.message.startswith("you"):
        # The room service's "<nick> is not in <room>": 441, not 442 (this user's).
        nick = _named(asked)
        out.append(r.numeric("441", nick, chan, text=e.message))
        return
    if cmd in ("KICK", "MODE") and e.code == "unknown_user":
        nick = _named(asked)
        out.append(r.numeric("401", nick.removeprefix("m:").partition("!")[0], text=e.message))
        return
    code = _ROOM_ERRORS.get(e.code)
    if code is not None and cmd in _CHANNEL_COMMANDS:
        out.append(r.numeric(code, chan, text=e.message))
        return
    if e.code == "not_logged_in":
        out.append(r.numeric("451", text="You have not registered"))
        return
    if e.code == "unknown_command" and cmd in ("LIST", "NAMES"):
        # No rooms on this connection (a guest, or a server without them): only lobby.
        end = ("323", "End of /LIST") if cmd == "LIST" else ("366", "End of /NAMES list")
        params = () if cmd == "LIST" else (target,)
        out.append(r.numeric(end[0], *params, text=end[1]))
        return
    if e.code == "unknown_command" and cmd in _CHANNEL_COMMANDS:
        why = f"No such channel: only {r.channel} (no rooms for guests, or no history)"
        out.append(r.numeric("403", target, text=why))
        return
    if e.code == "unknown_command" and cmd:
        out.append(r.numeric("421", cmd, text=e.message))
        return
    if cmd == "CHATHISTORY":
        out.append(f"FAIL CHATHISTORY MESSAGE_ERROR {target} :{e.message}")
        return
    if e.code == "bad_request" and cmd in ("KICK", "TOPIC"):
        # The server's words ("a reason is 400 characters; the limit is 300") name no
        # command: say which one was refused.
        what = f"KICK {target} {_named(asked)}" if cmd == "KICK" else f"TOPIC {target}"
        out.append(f":{r.name} NOTICE {r.nick} :{what}: {e.message}")
        return
    if e.code == "server_full":
        out.append(f"ERROR :Closing link: {HOST} ({e.message})")
        return
    out.append(f":{r.name} NOTICE {r.nick} :{e.message}")


def _bad_mode(r: Renders, chan: str, change: str, why: str) -> str:
    """A refused mode change: 472 for a letter not known here, else 696
    (ERR_INVALIDMODEPARAM) for the argument of the first letter that takes one."""
    modes, _, rest = change.partition(" ")
    args = rest.split(" ") if rest else []
    if any(c not in "+-" and c not in MODE_LETTERS + "b" for c in modes):
        letter = next(c for c in modes if c not in "+-" and c not in MODE_LETTERS + "b")
        return r.numeric("472", letter, text=f"is unknown mode char: {why}")
    add = True
    for c in modes:
        if c in "+-":
            add = c == "+"
        elif c in "ovb" or (add and c in "kl"):
            # A refused key is not echoed (Modern IRC shows it as "*").
            arg = "*" if c == "k" else (args or ["*"])[0] or "*"
            return r.numeric("696", chan, c, arg, text=why)
    letter = next((c for c in modes if c not in "+-"), "?")
    return r.numeric("696", chan, letter, "*", text=why)


def _named(asked: Asked) -> str:
    """The user a KICK or a MODE change named: KICK's nick, MODE's last argument."""
    if asked.command == "KICK":
        return asked.args[0] if asked.args else ""
    return asked.args[-1] if asked.args else asked.target


# The room service's refusals as the numerics of the channel commands.
_ROOM_ERRORS: Final = {
    "no_such_room": "403",
    "not_in_room": "442",
    "invite_only": "473",
    "bad_key": "475",
    "room_full": "471",
    "invalid_room": "476",
    "not_operator": "482",
    "too_many_rooms": "405",
    "banned": "474",
    "guest_not_allowed": "477",  # ERR_NEEDREGGEDNICK: a guest joins guest rooms only
}
_CHANNEL_COMMANDS: Final = frozenset(("JOIN", "PART", "TOPIC", "MODE", "INVITE", "PRIVMSG", "KICK"))
