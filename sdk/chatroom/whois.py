"""The frames of docs/PROTOCOL.md §whois: whether a user is online and whether they are a
server operator, so that a client (a bot's ``server_operator()`` check) can tell who may
run what without a list of its own that goes stale when an operator is revoked.
"""

from __future__ import annotations

from chatroom._wire import NAME_RE, _Command, _Event
from chatroom.errors import ErrorCode, ProtocolError, RequestId

__all__ = ["Whois", "WhoisCommand", "validate_whois"]


class WhoisCommand(_Command, tag="whois", frozen=True):
    """Ask about ``user``; answered by :class:`Whois` (no such account: ``unknown_user``)."""

    user: str


class Whois(_Event, tag="whois", frozen=True):
    """``user`` (as the server spells it): logged in now (on this node), and a server
    operator, as the server reads it at the moment it answers."""

    user: str
    online: bool
    server_operator: bool
    id: RequestId = None


def validate_whois(cmd: WhoisCommand) -> None:
    """A name no account can have is a ``bad_request``."""
    if NAME_RE.fullmatch(cmd.user) is None:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"no user can be named {cmd.user[:40]!r}", cmd.id
        )
