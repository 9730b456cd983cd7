"""The server's side of one connection, without I/O: bytes in, actions out.

Like h11's ``Connection`` (``h11/_connection.py``: ``receive_data`` then ``next_event``,
state that knows no transport) and the SDK's own :mod:`chatroom.session`, a
:class:`ServerSession` holds one connection's protocol state (its framing, strikes,
flood meter and rate bucket, whether it has logged in) and applies the rules every
frame meets before it runs: flood control, the pre-login frame limit, decoding,
validation, and closing after too many protocol errors in a row (docs/PROTOCOL.md
§Errors, §Flood control). It never touches a socket, a lock or the clock's source: the
transport (:mod:`chatroom_server.server`'s reader thread for JSON lines) feeds it what
it read and carries out what it yields:

- a :data:`~chatroom.protocol.ClientCommand`, decoded and validated: run it (the command
  table, :mod:`chatroom_server.commands`); if its handler refuses it with a
  :class:`~chatroom.errors.ProtocolError`, carry out :meth:`ServerSession.refused`, else
  call :meth:`ServerSession.succeeded`;
- :class:`Reply`: an error frame of the session's own, for its client, after what it
  has queued (the pending batch of public messages) so that replies keep request order;
- :class:`Close`: stop reading and close, after sending ``bye`` if there is one.

:meth:`ServerSession.receive_data` is a generator, consumed as it goes: a command run
by the caller (a login) changes what the rules say about the next frame of the same
read, as it did when the server checked each frame in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from chatroom.errors import FrameTooLarge, ProtocolError, RequestId
from chatroom.protocol import (
    Bye,
    ByeReason,
    ClientCommand,
    ErrorCode,
    ErrorEvent,
    FrameDecoder,
    Limits,
    decode_command,
    encode,
    validate_command,
)
from chatroom_server.config import ServerConfig
from chatroom_server.limits import FloodMeter, TokenBucket

log = logging.getLogger(__name__)

# Errors that mean "this client is speaking the protocol wrongly"; docs/PROTOCOL.md §Errors:
# ten of them in a row close the connection.
STRIKE_CODES = frozenset(
    {
        ErrorCode.BAD_JSON,
        ErrorCode.BAD_REQUEST,
        ErrorCode.UNKNOWN_COMMAND,
        ErrorCode.NOT_LOGGED_IN,
        ErrorCode.ALREADY_LOGGED_IN,
    }
)

BYE_FLOOD = encode(Bye(reason=ByeReason.FLOOD))


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``data`` (one frame) to this session's client, behind what it has queued."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Read no more and close the connection; first send ``bye``, if given, behind
    everything queued (the pending batch included)."""

    reason: str
    bye: bytes | None = None


Action = ClientCommand | Reply | Close


class SessionRules:
    """What every session of one server shares: its limits and its clock (read-only
    once made, so every reader thread may use it without a lock)."""

    __slots__ = (
        "clock",
        "flood_factor",
        "flood_seconds",
        "limits",
        "max_errors_in_row",
        "max_frames_before_login",
        "rate_burst",
        "rate_limit",
    )

    def __init__(self, config: ServerConfig, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or config.clock
        self.limits: Limits = config.limits
        self.rate_limit = config.rate_limit
        self.rate_burst = config.rate_burst
        self.flood_factor = config.flood_factor
        self.flood_seconds = config.flood_seconds
        self.max_frames_before_login = config.max_frames_before_login
        self.max_errors_in_row = config.max_errors_in_row

    def rate_limited_text(self) -> str:
        return (
            f"slow down: at most {self.rate_limit:g} commands/s "
            f"(bursts of {self.rate_burst}); this one was not delivered"
        )

    def too_many_before_login(self) -> str:
        return f"log in within {self.max_frames_before_login} frames"


def error_frame(code: str, message: str, rid: str | int | None) -> bytes:
    return encode(ErrorEvent(code=code, message=message, id=rid))


class BannedError(ProtocolError):
    """``banned`` (docs/PROTOCOL.md §Moderation), a room's or the server's, with the
    ban's reason and end (unix time; None: none) for the error frame, which a client
    keeps (chatroom.errors.Banned) besides the words of ``message``."""

    def __init__(
        self, message: str, rid: RequestId, reason: str | None, expires: float | None
    ) -> None:
        super().__init__(ErrorCode.BANNED, message, rid)
        self.reason = reason
        self.expires = expires


def refusal_frame(exc: ProtocolError) -> bytes:
    """The error frame that answers ``exc``: a ban's with its reason and end."""
    if isinstance(exc, BannedError):
        return encode(
            ErrorEvent(
                code=exc.code,
                message=exc.message,
                id=exc.request_id,
                reason=exc.reason,
                expires=exc.expires,
            )
        )
    return error_frame(exc.code, exc.message, exc.request_id)


class ServerSession:
    """One connection's protocol state and rules (module docstring). The fields are
    its reader thread's alone; ``username`` is set by the server at login (and read by
    other threads, see chatroom_server.server)."""

    # A base of the server's per-connection object (server._Conn): slots, no dict, and
    # no second object per connection (memory per connection, docs/PERFORMANCE.md).
    __slots__ = ("bucket", "decoder", "errors_in_row", "flood", "frames", "rules", "username")

    def __init__(self, rules: SessionRules, now: float) -> None:
        self.rules = rules
        self.username: str | None = None
        self.decoder = FrameDecoder(rules.limits.max_frame)
        self.frames = 0  # frames (or IRC lines) received
        self.errors_in_row = 0
        self.bucket: TokenBucket | None = None
        self.flood: FloodMeter | None = None
        if rules.rate_limit:
            self.bucket = TokenBucket(rules.rate_limit, rules.rate_burst, now)
            self.flood = FloodMeter(rules.rate_limit * rules.flood_factor, rules.flood_seconds)

    def receive_data(self, data: bytes) -> Iterator[Action]:
        """The actions for what was read (module docstring); after a :class:`Close`
        it yields nothing more."""
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            yield Reply(error_frame(exc.code, exc.message, None))
            yield Close("frame too large")
            return
        for frame in frames:
            got = self._apply(frame)
            if isinstance(got, list):
                yield from got
                if type(got[-1]) is Close:
                    return
            else:
                yield got  # the usual case: a command to run, no list made for it

    def receive_frame(self, frame: bytes) -> list[Action]:
        """The actions for one whole frame (a transport with framing of its own, as
        WebSocket's messages: chatroom_server.web); what :meth:`receive_data` does for
        each frame it splits off."""
        got = self._apply(frame)
        return got if isinstance(got, list) else [got]

    def receive_decoded(self, cmd: ClientCommand) -> list[Action]:
        """The actions for one whole frame that the caller has decoded already, with
        ``decode_command`` (a first frame, by the admission thread:
        chatroom_server.earlylogin): every rule :meth:`receive_data` applies to a
        frame but the decoding, which is not done twice. The caller has checked the
        frame against ``max_frame`` as the decoder would."""
        allowed = self.meter()
        if allowed is None:
            return [Close("flooding", BYE_FLOOD)]
        got = self._rules(cmd, allowed)
        return got if isinstance(got, list) else [got]

    def _apply(self, frame: bytes) -> ClientCommand | list[Action]:
        """The rules for one frame: the command to run, or what to do instead."""
        allowed = self.meter()
        if allowed is None:
            return [Close("flooding", BYE_FLOOD)]
        try:
            cmd = decode_command(frame)
        except ProtocolError as exc:
            return self.refused(exc)
        return self._rules(cmd, allowed)

    def _rules(self, cmd: ClientCommand, allowed: bool) -> ClientCommand | list[Action]:
        """The rules for one decoded frame, counted (``meter``: ``allowed``)."""
        rules = self.rules
        try:
            if self.username is None and self.frames > rules.max_frames_before_login:
                text = rules.too_many_before_login()
                return [
                    Reply(error_frame(ErrorCode.NOT_LOGGED_IN, text, cmd.id)),
                    Close("no login"),
                ]
            if not allowed:
                raise ProtocolError(ErrorCode.RATE_LIMITED, rules.rate_limited_text(), cmd.id)
            validate_command(cmd, rules.limits)
        except ProtocolError as exc:
            return self.refused(exc)
        return cmd

    def meter(self) -> bool | None:
        """Count one frame (or IRC line) against flood control (docs/PROTOCOL.md §Flood
        control): True if allowed, False if over the rate (refuse it), None when the
        connection floods (close it, with ``bye``)."""
        self.frames += 1
        if self.bucket is None or self.flood is None:
            return True
        now = self.rules.clock()
        allowed = self.bucket.take(now)
        if self.flood.abusive(now):
            log.warning(
                "disconnecting %r: flooding (over %g frames/s for %d s)",
                self,
                self.flood.limit,
                self.flood.seconds,
            )
            return None
        return allowed

    def refused(self, exc: ProtocolError) -> list[Action]:
        """Answer a refused command; and a :class:`Close` after too many protocol
        errors in a row."""
        reply = Reply(refusal_frame(exc))
        if exc.code not in STRIKE_CODES:
            return [reply]
        self.errors_in_row += 1
        if self.errors_in_row >= self.rules.max_errors_in_row:
            log.info("closing %r after %d protocol errors in a row", self, self.errors_in_row)
            return [reply, Close("protocol errors")]
        return [reply]

    def succeeded(self) -> None:
        """A command ran: the protocol errors in a row start again from none."""
        self.errors_in_row = 0
