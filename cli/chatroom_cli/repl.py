"""The ``chat`` REPL: one command loop, two terminals.

- :class:`InteractiveTerminal`: prompt_toolkit prompts with completion, history and a bottom
  toolbar. Incoming events are printed above the prompt from the SDK's dispatch thread:
  everything runs inside one ``patch_stdout`` whose proxy is thread-safe and redraws the
  prompt (and whatever the user was typing) below each printed line.
- :class:`PipeTerminal`: stdin is not a terminal, so lines are read from stdin and events
  printed as plain lines (``printf 'PM hi\\nEX\\n' | chat --user alice --password-file pw``).

Rooms (docs/PROTOCOL.md §Rooms, when the server offers them): the REPL has a *current
room* (``lobby`` at first; ``/join`` and ``/switch`` change it), where plain text goes.
Every room's messages are printed in the one stream, those from a room other than the
current one labelled with its name, and the toolbar counts what arrived unread in the
other rooms. One stream, not a buffer per room: a terminal's scrollback is the only
history a person can scroll, and a message hidden in another room's buffer is a message
missed; the label and the counts say where each belongs.

The REPL uses the SDK only; it has no socket code of its own. Until login it may use
several clients one after the other (``Repl.client`` is the current one): the server
closes a connection that has not logged in within its login timeout (docs/PROTOCOL.md
§Timeouts), and a person may take longer than that at a prompt, so the REPL opens a new
connection when it next needs the server. Only the REPL's thread replaces the client.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from prompt_toolkit.application import (
    get_app_or_none,
)
from prompt_toolkit.formatted_text import FormattedText

from chatroom import (
    AuthError,
    Banned,
    Broadcast,
    ChatClient,
    ChatConnectionError,
    ChatError,
    ChatTimeout,
    ConnectFailed,
    ConnectionLost,
    DirectMessage,
    Disconnect,
    DmSent,
    LoginResult,
    Reconnected,
    RoomEvent,
    ServerError,
    UsageError,
    UsersChanged,
)
from chatroom.protocol import ErrorCode, PasswordRequired, is_valid_username, username_key
from chatroom.rooms import LOBBY, room_key
from chatroom_cli.bots import BotCommandsCache, hint
from chatroom_cli.commands import (
    HELP,
    Action,
    AskDm,
    AskPm,
    Bans,
    Exit,
    Help,
    HistoryOf,
    Invalid,
    Invite,
    Join,
    Members,
    Mode,
    Moderate,
    Nothing,
    Part,
    RoomPm,
    Rooms,
    SendDm,
    SendPm,
    Switch,
    Topic,
    Who,
    parse,
)
from chatroom_cli.format import format_event, format_stored, sent_dm
from chatroom_cli.rooms import RoomCommands
from chatroom_cli.terminal import Ask, InteractiveTerminal, PipeTerminal, Terminal

__all__ = ["InteractiveTerminal", "PipeTerminal", "Repl", "Terminal"]

T = TypeVar("T")

BACKLOG = 20  # public messages shown at login, under "earlier"


class Repl(RoomCommands):
    """The chat session: login, then read commands until EX, Ctrl-D or end of input.

    ``new_client`` makes an unconnected client (the REPL connects it): one for the
    session, and another whenever the server has closed the connection before login.

    Hooks run on the SDK's dispatch thread and only print and refresh; everything that
    talks to the server runs on the REPL's own thread.
    """

    def __init__(
        self,
        new_client: Callable[[], ChatClient],
        terminal: Terminal,
        *,
        user: str | None = None,
        password: str | None = None,
        max_login_attempts: int = 3,
    ) -> None:
        self._new_client = new_client
        self.term = terminal
        self._user = user
        self._password = password
        self._max_attempts = max_login_attempts
        self._recent: deque[str] = deque(maxlen=20)  # REPL thread and dispatch thread
        self._recent_lock = threading.Lock()
        self._state = "connecting"
        self._ended = threading.Event()  # set when the session cannot go on
        # DMs replayed at the first login (sent while we were away) wait here until the
        # public backlog is printed above them; guarded by _away_lock.
        self._away_lock = threading.Condition()
        self._away: list[DirectMessage | DmSent] | None = None  # None: not collecting
        # /history paging: where the next page of each conversation ends (REPL thread).
        # Set at login below what is on screen (the backlog, the DMs from while we were
        # away); a conversation not in it starts below the login's seq, since everything
        # after it was shown live: /history never prints a line again.
        self._older: dict[str | None, int] = {}
        self._login_seq: int | None = None
        # Set once logged in (REPL thread; hooks read it): before, a lost connection is
        # the REPL's to replace, not the end of the session.
        self._logged_in = False
        # The current room (REPL thread writes; hooks and the toolbar read a str, which
        # is atomic) and what arrived unread in the others (under _rooms_lock).
        self.current = LOBBY
        self._rooms_lock = threading.Lock()
        self._unread: dict[str, int] = {}  # room_key -> count
        self.bots = BotCommandsCache()  # what bots announced (Tab, the toolbar's hint)
        self.client = self._attach(new_client())

    def _attach(self, client: ChatClient) -> ChatClient:
        client.on_broadcast(self._on_message)
        client.on_dm(self._on_message)
        client.on_dm_sent(self._on_message)
        client.on_users(self._on_users)
        client.on_room_event(self._on_room_event)
        client.on_disconnect(self._on_disconnect)
        client.on_reconnect(self._on_reconnect)
        return client

    # -------------------------------------------------------------- live state for the UI

    def online(self) -> tuple[str, ...]:
        """Whom Tab offers: the online users, and the current room's members."""
        users = self.client.users
        if room_key(self.current) == LOBBY:
            return users
        room = next(
            (r for r in self.client.rooms if room_key(r.name) == room_key(self.current)), None
        )
        if room is None:
            return users
        seen = {username_key(u) for u in users}
        return users + tuple(m for m in room.members if username_key(m) not in seen)

    def me(self) -> str | None:
        return self.client.username

    def rooms(self) -> list[str]:
        """The rooms we are in, lobby first (Tab completion)."""
        return [LOBBY, *(r.name for r in self.client.rooms)]

    def unread(self) -> dict[str, int]:
        with self._rooms_lock:
            return dict(self._unread)

    def recent(self) -> list[str]:
        with self._recent_lock:
            return list(self._recent)

    def _touch(self, name: str) -> None:
        with self._recent_lock:
            if name in self._recent:
                self._recent.remove(name)
            self._recent.appendleft(name)

    def toolbar(self) -> FormattedText:
        me = self.client.username or "-"
        # Connected, the count is live; otherwise it is the last one known, which may be
        # wrong by now: the state says why there is none.
        online = f" {len(self.client.users)} online |" if self._state == "connected" else ""
        unread = self.unread()
        others = ", ".join(f"#{r} {n}" for r, n in sorted(unread.items()) if n)
        rooms = f" #{self.current} |" + (f" unread: {others} |" if others else "")
        if not self.client.rooms_on:
            rooms = ""  # a server without rooms: the toolbar a v1 client always had
        text = f" {self._state} | {me} |{rooms}{online} /help "
        app = get_app_or_none()
        shown = hint(app.current_buffer.text, self.bots.get()) if app is not None else None
        if shown is not None:  # the bot command being typed: its usage and help
            text = f" {shown}\n{text}"
        return FormattedText([("class:bottom-toolbar", text)])

    # -------------------------------------------------------------- hooks (dispatch thread)

    def _on_message(self, event: Broadcast | DirectMessage | DmSent) -> None:
        if isinstance(event, DmSent) and not event.replayed:
            return  # a DM to ourselves, sent from here: _dm shows it once acked
        if isinstance(event, DirectMessage | DmSent):
            # The other party, first among the recent names (Tab completion).
            self._touch(event.to if isinstance(event, DmSent) else event.sender)
            if event.replayed:
                with self._away_lock:
                    if self._away is not None:
                        self._away.append(event)  # printed after the backlog (_catch_up)
                        self._away_lock.notify_all()
                        return
        if isinstance(event, Broadcast):
            room = room_key(event.room or LOBBY)
            if room != room_key(self.current) and not event.replayed:
                with self._rooms_lock:
                    self._unread[room] = self._unread.get(room, 0) + 1
                self.term.refresh()
        lines = format_event(event, self.client.username, self.current)
        if lines:
            self.term.show(lines)

    def _on_room_event(self, event: RoomEvent) -> None:
        lines = format_event(event, self.client.username, self.current)
        if lines:
            self.term.show(lines)
        # We left, or were put out (a kick, a ban): back to lobby; the line says why.
        gone_kinds = ("part", "kick", "ban")
        if event.event in gone_kinds and room_key(event.room) == room_key(self.current):
            gone = event.by if event.event == "part" else event.user
            if gone is not None and username_key(gone) == username_key(self.me() or ""):
                self.current = LOBBY  # we left it (from another session): back to lobby
        self.term.refresh()

    def _on_users(self, event: UsersChanged) -> None:
        if event.joined or event.left:
            self.bots.stale()  # a bot may have come or gone: ask again before the next prompt
        lines = format_event(event, self.client.username)
        if lines:
            self.term.show(lines)
        self.term.refresh()

    def _on_disconnect(self, event: Disconnect) -> None:
        if not self._logged_in:
            return  # the login timeout while a person thinks: _connected() opens another
        if event.reason in ("exit", "closed") and not event.will_reconnect:
            return  # our own goodbye
        if event.will_reconnect:
            self._state = "reconnecting"
            why = (
                "the server shut down" if event.reason == "server_shutdown" else ("connection lost")
            )
            self.info(f"{why}; reconnecting...")
        else:
            self._state = "disconnected"
            if event.reason == "session_replaced":
                self.error("you logged in from somewhere else; this session has ended")
            elif isinstance(event.error, Banned):  # the ban's bye, or the re-login it refused
                # Its words say why and until when (docs/PROTOCOL.md §Moderation); the
                # client does not reconnect, so neither does this say it will.
                self.error(f"disconnected: {event.error.message}")
            else:
                self.error(f"disconnected ({event.reason})")
            self._ended.set()
            self.term.stop()
        self.term.refresh()

    def _on_reconnect(self, event: Reconnected) -> None:
        self._state = "connected"
        missed = f"; {event.replayed} missed meanwhile, shown above" if event.replayed else ""
        self.info(
            f"reconnected{missed}; {len(event.result.users)} online: "
            + ", ".join(event.result.users)
        )
        if event.replay_truncated:
            self.info("some earlier messages could not be replayed: /history shows them")
        self.term.refresh()

    # -------------------------------------------------------------- output helpers

    def info(self, text: str) -> None:
        self.term.show([("class:info", f"-- {text}")])

    def error(self, text: str) -> None:
        self.term.show([("class:error", f"!! {text}")])

    # -------------------------------------------------------------- the session

    def run(self) -> int:
        """Run the whole session; the process exit status."""
        with self.term.session(self):
            try:
                self.client.connect()
            except ConnectFailed as exc:
                self.error(str(exc))
                return 1
            try:
                if not self._login():
                    return 1
                self._state = "connected"
                users = self.client.users
                self.info(f"{len(users)} online: {', '.join(users)}. Type /help for help.")
                self._loop()
            finally:
                name = self.client.username
                self.client.close()  # says exit to the server: the others see us leave
            if self._ended.is_set():
                return 1  # the session ended on its own, and the REPL said why
            self.info(f"logged out; goodbye, {name}")
        return 0

    def _loop(self) -> None:
        while not self._ended.is_set():
            self.bots.refresh(self.client)
            try:
                line = self.term.ask("command", f"{self.client.username}> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C clears the line
            except EOFError:
                return
            if not self._execute(parse(line)):
                return

    def _connected(self) -> ChatClient:
        """The client, on a connection that is up: a new one if the server has closed
        the last, as it does to one not logged in within its login timeout."""
        if not self.client.connected:
            self.client.close()  # joins its hooks: none of them runs after this
            self.client = self._attach(self._new_client())
            self.client.connect()
        return self.client

    def _before_login(self, call: Callable[[ChatClient], T]) -> T:
        """``call`` on a live connection. Once more on a new one if the server closed
        the connection as it was asked: the login timeout fell just then."""
        client = self._connected()
        try:
            return call(client)
        except (ConnectionLost, UsageError):  # UsageError: it closed just before the call
            if client.connected:
                raise
        return call(self._connected())

    def _check(self, name: str) -> PasswordRequired:
        return self._before_login(lambda c: c.check_user(name, full=True))

    def _log_in(self, name: str, password: str) -> LoginResult:
        return self._before_login(lambda c: c.login(name, password))

    def _login(self) -> bool:
        for _attempt in range(self._max_attempts):
            try:
                name = self._ask_username()
                check = self._check(name)
                password = self._ask_password(name, check)
                with self._away_lock:
                    self._away = []
                try:
                    result = self._log_in(name, password)
                except BaseException:
                    with self._away_lock:
                        self._away = None
                    raise
            except (EOFError, KeyboardInterrupt):
                return False
            except AuthError as exc:
                self.error(exc.message)
                if not self.term.interactive or self._password is not None:
                    return False  # a wrong password from a file will not get better
                if exc.code == "invalid_username":
                    self._user = None
                continue
            except Banned as exc:  # by the server: its words say until when and why
                self.error(exc.message)
                return False
            except ChatError as exc:
                self.error(str(exc))
                return False
            self._logged_in = True
            if result.new_user:
                self.info(f"welcome, {result.username}: your account is registered")
            self._catch_up(result)
            return True
        return False

    def _catch_up(self, result: LoginResult) -> None:
        """After login: the last public messages, dimmed under an "earlier" line, then the
        DMs that arrived while we were away (they reached the hooks before login returned,
        and waited in ``_away``)."""
        # Up to the login's seq: anything newer reached the hooks live already.
        self._login_seq = result.seq
        before = result.seq + 1 if result.seq is not None else None
        try:
            page = self.client.history(limit=BACKLOG, before=before)
        except ServerError:
            page = None  # a server without a message log
        except ChatError as exc:
            self.error(f"cannot show earlier messages: {exc}")
            page = None
        if page is not None and page.messages:
            self.info("earlier")
            for m in page.messages:
                self.term.show(format_stored(m, self.client.username))
            self._older[None] = page.messages[0].seq
        with self._away_lock:
            # Their hooks may still be on their way (another thread): wait, but not long.
            self._away_lock.wait_for(lambda: len(self._away or ()) >= result.replayed, 5.0)
            away, self._away = self._away or [], None
        if away:
            n = len(away)
            self.info(f"{n} direct message{'s' * (n != 1)} while you were away")
            for dm in away:
                other = dm.to if isinstance(dm, DmSent) else dm.sender
                self._touch(other)
                self.term.show(format_event(dm, self.client.username) or [])
                key = username_key(other)
                if dm.seq is not None and dm.seq < self._older.get(key, dm.seq + 1):
                    self._older[key] = dm.seq  # on screen: /history starts below it

    def _ask_username(self) -> str:
        if self._user is not None:
            return self._user
        if not self.term.interactive:
            raise AuthError(ErrorCode.INVALID_USERNAME, "no username: use --user NAME")
        while True:
            name = self.term.ask("username", "username: ").strip()
            if is_valid_username(name):
                return name
            self.error("a username is 1-32 of A-Z a-z 0-9 _ -, starting with a letter or digit")

    def _ask_password(self, name: str, check: PasswordRequired) -> str:
        if self._password is not None:
            return self._password
        if not self.term.interactive:
            raise AuthError(
                ErrorCode.BAD_CREDENTIALS, "no password: use --password-file or CHAT_PASSWORD"
            )
        if not check.new_user:
            return self.term.ask("password", f"password for {name}: ")
        # The lengths the server accepts (docs/PROTOCOL.md §login); a server older than
        # the fields sends none, and then its weak_password is the answer.
        low, high = check.min_password, check.max_password
        rule = f" (at least {low} characters)" if low else ""
        self.info(f"{name} is a new name: choose a password{rule}")
        while True:
            first = self.term.ask("password", "new password: ")
            if low is not None and len(first) < low:
                self.error(f"too short: a password has at least {low} characters")
                continue
            if high is not None and len(first) > high:
                self.error(f"too long: a password has at most {high} characters")
                continue
            if first == self.term.ask("password", "repeat it: "):
                return first
            self.error("the passwords differ; try again")

    # -------------------------------------------------------------- commands

    def _execute(self, action: Action) -> bool:
        """Run one action; False ends the session."""
        try:
            match action:
                case Exit():
                    return False
                case SendPm(message):
                    self._pm(message)
                case SendDm(to, message):
                    self._dm(to, message)
                case AskPm():
                    message = self._ask_or_cancel("message", "message: ")
                    if message:
                        self._pm(message)
                case AskDm(to):
                    to = to or self._ask_or_cancel("recipient", "to: ")
                    if to:
                        message = self._ask_or_cancel("message", f"message to {to}: ")
                        if message:
                            self._dm(to, message)
                case Who():
                    users = self.client.request_users()
                    self.info(f"{len(users)} online: {', '.join(users)}")
                case HistoryOf(user, count):
                    self._history(user, count)
                case Help():
                    for line in HELP.splitlines():
                        self.term.show([("class:info", line)])
                case RoomPm(room, message):
                    self._pm(message, room)
                case Join(room, key):
                    self._join(room, key)
                case Switch(room):
                    self._switch(room)
                case Part(room, reason):
                    self._part(room or self.current, reason)
                case Rooms():
                    self._list_rooms()
                case Topic(room, topic):
                    self._topic(room or self.current, topic)
                case Invite(user, room):
                    receipt = self.client.invite(room or self.current, user)
                    self.info(f"invited {receipt.to or user} to #{room or self.current}")
                case Mode(room, modes, args):
                    self._mode(room or self.current, modes, args)
                case Members(room):
                    self._members(room or self.current)
                case Moderate(verb, user, room, duration, reason):
                    self._moderate(verb, user, room or self.current, duration, reason)
                case Bans(room):
                    self._bans(room or self.current)
                case Invalid(why):
                    self.error(why)
                case Nothing():
                    pass
        except ServerError as exc:
            self.error(exc.message)
        except UsageError as exc:
            self.error(str(exc))  # rooms on a server without them, say
        except ChatTimeout:
            self.error("the server did not answer in time")
        except ChatConnectionError:
            self.error("not connected" + (" (reconnecting...)" if self.client.reconnect else ""))
        except EOFError:
            return self.term.interactive  # Ctrl-D cancels a question; end of a pipe ends
        return True

    def _history(self, user: str | None, count: int) -> None:
        """One page further back than the last one shown for this conversation."""
        room = None if user or room_key(self.current) == LOBBY else self.current
        key = username_key(user) if user else (f"#{room_key(room)}" if room else None)
        before = self._older.get(key)
        if before is None and self._login_seq is not None:
            before = self._login_seq + 1  # what came after the login is on screen
        if before is not None and before <= 1:
            self.info("no earlier messages")
            return
        page = self.client.history(before=before, limit=count, with_user=user, room=room)
        if not page.messages:
            self.info("no earlier messages" if before else "no messages yet")
            return
        where = f"with {user}" if user else (f"in #{room}" if room else "in public")
        first, last = page.messages[0], page.messages[-1]
        n = len(page.messages)
        self.info(f"{n} message{'s' * (n != 1)} {where} (#{first.seq}-#{last.seq})")
        for m in page.messages:
            self.term.show(format_stored(m, self.client.username))
        self._older[key] = first.seq if page.has_more else 1
        if not page.has_more:
            self.info("that is the beginning")

    def _ask_or_cancel(self, kind: Ask, prompt: str) -> str:
        try:
            return self.term.ask(kind, prompt).strip()
        except KeyboardInterrupt:
            return ""

    def _pm(self, message: str, room: str | None = None) -> None:
        room = room or self.current
        target = None if room_key(room) == LOBBY else room
        self.client.pm(message, room=target)
        me = self.client.username or "me"
        echo = Broadcast(sender=me, message=message, ts=time.time(), room=room)
        self.term.show(format_event(echo, None, self.current) or [])

    def _dm(self, to: str, message: str) -> None:
        receipt = self.client.dm(to.strip(), message)
        name = receipt.to or to.strip()
        self._touch(name)
        self.term.show(sent_dm(name, message, receipt.queued))
