"""What an IRC session asked the server, kept by request id until the answer comes.

The gateway turns IRC commands into the server's commands (chatroom_server.irc.session,
.channels), and the answer (an ack, a reply, an error) comes back through the same path
as a JSON client's, carrying the request's ``id``. How IRC shows it depends on what was
asked: the channel a PART named and its reason, the nick a KICK named, whether a
PRIVMSG was a NOTICE (never answered). So each request's id is a number, and what it
was for is an :class:`Asked`, typed, in the session's :class:`Pending` until its answer
is rendered (chatroom_server.irc.render), rather than a string such as ``"PRIVMSG #x"``
built here and parsed again there.

Threads: :meth:`Pending.ask` runs on the session's reader thread, before the command
that carries the id is handed to the server; :meth:`Pending.answer` wherever the answer
is sent (any thread, sometimes under the server's locks). Each is a few dict operations,
each atomic under the GIL; ``_last`` is the reader thread's alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from chatroom.protocol import RequestId


@dataclass(frozen=True, slots=True)
class Asked:
    """One request: the IRC ``command`` it came from (``login`` and ``sasl`` for the
    registration's), the ``target`` it named (a channel, a nick; LIST's channels), and
    the rest of what it said: PART's reason, TOPIC's text, MODE's change and arguments,
    KICK's nick and reason, INVITE's nick; with echo-message, PRIVMSG's and NOTICE's
    text."""

    command: str
    target: str = ""
    args: tuple[str, ...] = ()


# The answer to no request of this session (an id it never gave, or none).
NOTHING: Final = Asked("")

# How many requests back an unanswered one is forgotten: a request whose answer never
# comes (QUIT's: the connection ends) must not stay for the session's lifetime. Every
# answer comes in the order of the requests, long before this many more.
KEPT: Final = 1024


class Pending:
    """One IRC session's requests awaiting their answer (module docstring)."""

    __slots__ = ("_asked", "_last")

    def __init__(self) -> None:
        self._asked: dict[int, Asked] = {}
        self._last = 0  # the last id given

    def ask(self, command: str, target: str = "", *args: str) -> int:
        """A new request id for what ``command`` asks."""
        self._last += 1
        rid = self._last
        self._asked[rid] = Asked(command, target, args)
        self._asked.pop(rid - KEPT, None)
        return rid

    def answer(self, rid: RequestId) -> Asked:
        """What the request ``rid`` asked; its record goes, as one request gets one
        answer (an ack, a reply or an error)."""
        if type(rid) is not int:
            return NOTHING
        return self._asked.pop(rid, NOTHING)
