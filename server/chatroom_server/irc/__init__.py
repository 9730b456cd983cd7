"""The IRC gateway (docs/IRC.md): IRC clients in the same room as JSON clients.

An IRC connection is an ordinary connection of the server (chatroom_server.server) with
two translators at its edges, so that everything between them is the JSON side's own
code: the account store, the fan-out, the message log, the user list, and every limit
(flood control, slow consumers, login and idle timeouts, connection caps).

- **In** (:class:`IrcSession`, the connection's reader thread): IRC lines are parsed
  (:func:`parse`) and either answered here (CAP, NICK, USER, PASS, AUTHENTICATE, PING,
  WHO, WHOIS, MODE, ...) or turned into the JSON command they mean (``login``, ``pm``,
  ``dm``, ``users``, ``history``, ``exit``) and handed to the server's command path
  (:class:`Core`'s ``runner``, called directly) as the struct. The request id of such a
  command is a number under which the session keeps what it came from
  (:mod:`~chatroom_server.irc.asked`: ``PRIVMSG bob``, typed), so that an answer coming
  back can be shown as IRC expects (a numeric for an error).
- **Out** (:class:`IrcOutbox`): every frame the server sends this connection (a
  broadcast queued by the fan-out, a DM, a users_delta, an error, ``bye``) becomes IRC
  lines before it is queued: ``broadcast`` is ``PRIVMSG #lobby``, ``users_delta`` is JOIN
  and QUIT lines, ``login_ok`` is the welcome burst (001-005, MOTD, JOIN, NAMES). A
  public message, a DM and their acks come as frames that carry their events
  (chatroom_server.frames): their lines are rendered from the events' fields, never from
  the JSON. The fan-out hands the same bytes to every recipient, so the lines of the
  last frames seen are cached (:class:`Translations`): N IRC recipients cost one
  rendering per capability set, not N.

Lines are at most 512 bytes (plus IRCv3 tags); longer messages from JSON users are split
on word boundaries where possible and never inside a UTF-8 character. Input that is not
UTF-8 is read as Latin-1.

Threads: an :class:`IrcSession` belongs to its connection's reader thread. An
:class:`IrcOutbox` is called from any thread (as every Outbox is); what it reads of the
session (nick, capabilities) is set before the frames that depend on it can arrive, and
each is one attribute assignment. Translation runs wherever a frame is sent, and some
are sent under the server's locks (``login_ok`` under ``Presence.lock``, deltas under
the publisher's): it must never take a lock or call back into the server.
:class:`Translations` is shared: one dict of tuples, each replaced whole.

The package: :mod:`~chatroom_server.irc.parse` (lines and their limits),
:mod:`~chatroom_server.irc.core` (:class:`Core`, all the gateway asks of the server),
:mod:`~chatroom_server.irc.session` (in: the client's lines),
:mod:`~chatroom_server.irc.channels` (in: the channel commands, each the room command it
means: channels are rooms), :mod:`~chatroom_server.irc.asked` (the requests awaiting
their answers), :mod:`~chatroom_server.irc.answers` (errors as numerics),
:mod:`~chatroom_server.irc.render` (out: events as lines),
:mod:`~chatroom_server.irc.outbox` (out: the connection's outbox),
:mod:`~chatroom_server.irc.pusher` (out: the lines owed to connections, written in
batches) and :mod:`~chatroom_server.irc.translations` (out: the translations all share).
"""

from chatroom_server.irc.core import Core
from chatroom_server.irc.outbox import IrcOutbox
from chatroom_server.irc.parse import LineDecoder, Message, decode_line, parse, split_text
from chatroom_server.irc.render import IrcRender
from chatroom_server.irc.session import IrcSession
from chatroom_server.irc.translations import Translations

__all__ = [
    "Core",
    "IrcOutbox",
    "IrcRender",
    "IrcSession",
    "LineDecoder",
    "Message",
    "Translations",
    "decode_line",
    "parse",
    "split_text",
]
