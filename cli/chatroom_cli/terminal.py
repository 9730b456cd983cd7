"""The REPL's two terminals (:class:`InteractiveTerminal`, :class:`PipeTerminal`) behind
one :class:`Terminal` protocol: where :class:`chatroom_cli.repl.Repl` reads lines and
shows output. The module docstring of :mod:`chatroom_cli.repl` says how each one prints."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Literal, Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application, create_app_session, get_app_session
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.output.plain_text import PlainTextOutput
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import print_formatted_text

from chatroom_cli.bots import BotCommandsCache
from chatroom_cli.completion import ChatCompleter
from chatroom_cli.format import STYLE, Fragments, plain

__all__ = ["Ask", "InteractiveTerminal", "PipeTerminal", "ReplView", "Terminal"]

Ask = Literal["command", "username", "password", "recipient", "message"]


class ReplView(Protocol):
    """What a terminal reads of the REPL (:class:`chatroom_cli.repl.Repl`): completion
    sources, the toolbar, and the room-switching keys."""

    bots: BotCommandsCache

    def online(self) -> tuple[str, ...]: ...
    def me(self) -> str | None: ...
    def recent(self) -> list[str]: ...
    def rooms(self) -> list[str]: ...
    def toolbar(self) -> FormattedText: ...
    def cycle(self, step: int) -> None: ...


class Terminal(Protocol):
    """Where the REPL reads lines and shows output."""

    interactive: bool

    def session(self, repl: ReplView) -> contextlib.AbstractContextManager[None]: ...

    def ask(self, kind: Ask, prompt: str) -> str:
        """One line of input; EOFError at end of input, KeyboardInterrupt on Ctrl-C."""
        ...

    def show(self, fragments: Fragments) -> None:
        """Print a line; safe from any thread."""
        ...

    def refresh(self) -> None:
        """Redraw the toolbar; safe from any thread."""
        ...

    def stop(self) -> None:
        """End the prompt in progress as if the user pressed Ctrl-D; safe from any thread."""
        ...


class InteractiveTerminal:
    """prompt_toolkit terminal. ``input``/``output`` default to the real terminal; tests pass
    a pipe input and a recording ``DummyOutput``."""

    interactive = True

    def __init__(self, input: Input | None = None, output: Output | None = None) -> None:
        self._input = input
        self._output = output
        # One printer at a time; also orders "no prompt is up" against a prompt starting.
        self._lock = threading.Lock()
        self._printer: Output | None = None  # into patch_stdout's proxy: above the prompt
        self._direct: Output | None = None  # the terminal itself, when no prompt is up
        self._sessions: dict[str, PromptSession[str]] = {}
        self._app: Application[str] | None = None  # the prompt being shown, if any

    @contextlib.contextmanager
    def session(self, repl: ReplView) -> Iterator[None]:
        # The default app session on a real terminal: patch_stdout's writer thread finds the
        # running prompt through it (a session made by create_app_session() is invisible to
        # that thread, and lines would be written over the prompt instead of above it).
        custom = self._input is not None or self._output is not None
        app_session = (
            create_app_session(input=self._input, output=self._output)
            if custom
            else contextlib.nullcontext()
        )
        with app_session, patch_stdout(raw=True):
            self._printer = _printer_over(sys.stdout)
            self._direct = get_app_session().output
            users_completer = ChatCompleter(
                repl.online, repl.me, repl.recent, rooms=repl.rooms, bots=repl.bots.get
            )
            toolbar = repl.toolbar
            keys = KeyBindings()

            # Alt-N / Alt-P: the next or previous of your rooms (lobby first), as the
            # current room; the prompt's loop runs on the REPL's thread, which owns it.
            @keys.add("escape", "n")
            def _next_room(event: KeyPressEvent) -> None:
                repl.cycle(1)

            @keys.add("escape", "p")
            def _previous_room(event: KeyPressEvent) -> None:
                repl.cycle(-1)

            self._sessions = {
                "command": PromptSession(
                    key_bindings=keys,
                    history=InMemoryHistory(),
                    completer=users_completer,
                    complete_while_typing=False,
                    bottom_toolbar=toolbar,
                    style=STYLE,
                ),
                "recipient": PromptSession(
                    completer=ChatCompleter(repl.online, repl.me, repl.recent, recipient_only=True),
                    complete_while_typing=True,
                    bottom_toolbar=toolbar,
                    style=STYLE,
                ),
                "message": PromptSession(bottom_toolbar=toolbar, style=STYLE),
                "username": PromptSession(style=STYLE),
                "password": PromptSession(is_password=True, style=STYLE),
            }
            try:
                yield
            finally:
                with self._lock:
                    self._printer = self._direct = None

    def ask(self, kind: Ask, prompt: str) -> str:
        s = self._sessions[kind]
        with self._lock:
            self._app = s.app
        try:
            return s.prompt(FormattedText([("class:me", prompt)]))
        finally:
            with self._lock:
                self._app = None

    def show(self, fragments: Fragments) -> None:
        with self._lock:
            # With no prompt up, write straight to the terminal, so what the REPL says
            # before its next question appears before it. With a prompt up, go through
            # the proxy, which erases the prompt, prints, and redraws it below.
            out = self._printer if self._app is not None else self._direct
            if out is not None:
                print_formatted_text(FormattedText(fragments), output=out, style=STYLE)

    def refresh(self) -> None:
        app = self._app
        if app is not None and app.is_running:
            app.invalidate()  # thread-safe: schedules a redraw on the app's loop

    def stop(self) -> None:
        app = self._app
        if app is not None and app.is_running:
            app.loop.call_soon_threadsafe(_exit_app, app)  # type: ignore[union-attr]


def _printer_over(proxy: TextIO) -> Output:
    """An Output that writes into patch_stdout's proxy, so each line lands above the prompt
    from any thread. (``create_output()`` would unwrap the proxy to the real stdout.)"""
    if proxy.isatty():
        real = get_app_session().output
        return Vt100_Output(proxy, real.get_size, term=os.environ.get("TERM"))
    return PlainTextOutput(proxy)


def _exit_app(app: Application[str]) -> None:
    if app.is_running and not app.future.done():  # type: ignore[union-attr]
        app.exit(exception=EOFError())


class PipeTerminal:
    """Plain lines in, plain lines out: for scripts and pipes."""

    interactive = False

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def session(self, repl: ReplView) -> Iterator[None]:
        yield

    def ask(self, kind: Ask, prompt: str) -> str:
        line = self._in.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def show(self, fragments: Fragments) -> None:
        with self._lock:
            print(plain(fragments), file=self._out, flush=True)

    def refresh(self) -> None:
        pass

    def stop(self) -> None:
        pass  # a blocked readline() ends at EOF; the caller closes the client meanwhile
