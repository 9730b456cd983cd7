"""Plugins (cogs): a bot assembled from modules.

A plugin is a :class:`Plugin` object at module level; everything registered on it
(commands, groups, text and join/leave handlers, schedules, middleware, converters) comes
and goes with it::

    # dice.py
    plugin = Plugin("dice")

    @plugin.command()
    def roll(ctx: Context, dice: int = 1, sides: int = 6) -> str: ...

    # then: bot.load_plugin("dice.py"), or: chat-bot run dice.py --reload

:func:`load` finds plugins by path (``dice.py``), by entry point name (the
``chatroom.bots`` group: ``chat-bot run echo``) or by module name (``mypkg.dice``,
``mypkg.dice:plugin``). A module may also hold a :class:`~chatroom_bots.Bot` (its
commands are taken as one plugin named after the file: the 0.1 examples load as they
are). A module that fails to import raises
:class:`PluginError` saying why; the bot that asked logs it and keeps running.

:class:`Watcher` is ``--reload``: a thread that looks at the plugins' files twice a
second and asks the bot to reload one that changed, without disconnecting.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import itertools
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import time as dtime
from datetime import timedelta, tzinfo
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, runtime_checkable

from chatroom_bots.commands import Command, Group
from chatroom_bots.converters import ConverterFn
from chatroom_bots.cooldowns import Cooldown
from chatroom_bots.schedules import JobSpec, as_tz, parse_at

if TYPE_CHECKING:
    from chatroom_bots.storage import Store

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "PluginError", "PluginOwner", "Watcher", "load"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chatroom.bots"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class PluginError(Exception):
    """A plugin could not be loaded (or reloaded); the message says which and why."""


class Plugin:
    """A set of commands, handlers and schedules that a bot loads and unloads as one.

    Registration is for before the plugin is added to a bot (at import time); the bot
    reads these collections and never changes them."""

    def __init__(self, name: str = "", *, description: str = "") -> None:
        self.name = name
        self.description = description
        self.commands: dict[str, Command] = {}  # name and aliases -> command
        self.text_handlers: list[Callable[..., Any]] = []
        self.join_handlers: list[Callable[[str], Any]] = []
        self.leave_handlers: list[Callable[[str], Any]] = []
        self.jobs: list[JobSpec] = []
        self.middleware: list[Callable[..., Any]] = []
        self.converters: dict[Any, ConverterFn] = {}
        self.load_hooks: list[Callable[..., Any]] = []
        self.unload_hooks: list[Callable[..., Any]] = []
        self.bot: PluginOwner | None = None  # set while added to a bot
        self.source: str | None = None  # what load() was given, to reload it
        self.path: Path | None = None  # the file to watch for --reload

    # ------------------------------------------------------------------ commands

    def _add_command(self, cmd: Command) -> None:
        for key in (cmd.name, *cmd.aliases):
            if key in self.commands:
                raise ValueError(f"{key} is already a command of this plugin")
        for key in (cmd.name, *cmd.aliases):
            self.commands[key] = cmd

    def command(
        self,
        name: str | None = None,
        *,
        aliases: Sequence[str] = (),
        help: str | None = None,
        cooldown: float | Cooldown | None = None,
        hidden: bool = False,
        raw: bool | None = None,
    ) -> Callable[[F], F]:
        """Register ``fn(ctx, ...)`` as ``!name`` (default: the function's name); its
        parameters are parsed from the signature (:mod:`chatroom_bots.commands`)."""

        def register(fn: F) -> F:
            cmd = Command(
                fn,
                name,
                aliases=aliases,
                help=help,
                cooldown=cooldown,
                hidden=hidden,
                raw=raw,
                converters=self.converters,
            )
            self._add_command(cmd)
            return fn

        return register

    def group(
        self,
        name: str,
        *,
        aliases: Sequence[str] = (),
        help: str | None = None,
        fn: Callable[..., Any] | None = None,
    ) -> Group:
        """A command with subcommands: ``poll = bot.group("poll")``, then
        ``@poll.command()``. ``fn`` runs when no subcommand is named."""
        group = Group(fn, name, aliases=aliases, help=help, converters=self.converters)
        self._add_command(group)
        return group

    def converter(self, annotation: Any) -> Callable[[F], F]:
        """Use ``fn(ctx, text)`` for every parameter annotated ``annotation`` in the
        commands registered after this."""

        def register(fn: F) -> F:
            self.converters[annotation] = fn
            return fn

        return register

    # ------------------------------------------------------------------ handlers

    def on_text(self, fn: F) -> F:
        """``fn(msg)`` for messages that are not commands: DMs, and public messages that
        mention the bot (``@bot ...``); its return value is the reply."""
        self.text_handlers.append(fn)
        return fn

    def on_join(self, fn: F) -> F:
        """``fn(username)`` for users who really arrive (not a reconnect or a takeover)."""
        self.join_handlers.append(fn)
        return fn

    def on_leave(self, fn: F) -> F:
        """``fn(username)`` for users who leave."""
        self.leave_handlers.append(fn)
        return fn

    def use(self, middleware: F) -> F:
        """``mw(ctx, call_next)`` around every command (:mod:`chatroom_bots.middleware`)."""
        self.middleware.append(middleware)
        return middleware

    def on_load(self, fn: F) -> F:
        """``fn(bot)`` when the plugin is added to a bot (also after each reload)."""
        self.load_hooks.append(fn)
        return fn

    def on_unload(self, fn: F) -> F:
        """``fn(bot)`` when the plugin is removed (before a reload, and at stop)."""
        self.unload_hooks.append(fn)
        return fn

    # ------------------------------------------------------------------ schedules

    def every(
        self,
        seconds: float = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        first: float | timedelta | None = None,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Run ``fn()`` (or ``fn(bot)``) every interval while the bot runs; the first run
        one interval after the start, or after ``first`` seconds."""
        interval = seconds + 60 * minutes + 3600 * hours
        if interval <= 0:
            raise ValueError("every() needs a positive interval")
        if isinstance(first, timedelta):
            first = first.total_seconds()

        def register(fn: F) -> F:
            spec = JobSpec(
                name or fn.__name__, fn, "every", interval=interval, first=first, plugin=self.name
            )
            self.jobs.append(spec)
            return fn

        return register

    def at(
        self, when: str | dtime, *, tz: str | tzinfo | None = None, name: str | None = None
    ) -> Callable[[F], F]:
        """Run ``fn()`` (or ``fn(bot)``) every day at ``when`` (``"09:00"``) in ``tz``."""
        at, zone = parse_at(when), as_tz(tz)

        def register(fn: F) -> F:
            self.jobs.append(
                JobSpec(name or fn.__name__, fn, "at", at=at, tz=zone, plugin=self.name)
            )
            return fn

        return register

    # ------------------------------------------------------------------ the bot

    @property
    def store(self) -> Store:
        """This plugin's namespace of the bot's store."""
        if self.bot is None:
            raise RuntimeError(f"plugin {self.name!r} is not added to a bot")
        return self.bot.store.namespace(self.name) if self.name else self.bot.store

    def __repr__(self) -> str:
        return f"<Plugin {self.name!r} commands={sorted({c.name for c in self.commands.values()})}>"


# ---------------------------------------------------------------------- loading


@dataclass
class Loaded:
    """What :func:`load` found: the plugins, the file to watch, the module."""

    plugins: list[Plugin]
    path: Path | None
    module: ModuleType | None


_counter = itertools.count(1)


def _from_path(path: Path) -> ModuleType:
    name = f"chatroom_bot_plugin_{path.stem.replace('-', '_')}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # typing.get_type_hints and dataclasses look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class PluginOwner(Protocol):
    """The bot a plugin is added to (:class:`chatroom_bots.core.BotBase`), as a plugin
    sees it: a protocol, since core imports this module."""

    name: str

    @property
    def store(self) -> Store: ...


@runtime_checkable
class _Bot(Protocol):
    """A bot (:class:`chatroom_bots.core.BotBase`) as seen from here, where importing
    core, which imports this module, would make a cycle."""

    def own_plugins(self, label: str) -> list[Plugin]: ...


def _is_bot(obj: object) -> bool:
    return isinstance(obj, _Bot) and not isinstance(obj, type)  # a Bot, not the class


def _collect(obj: object, label: str, path: Path | None, module: ModuleType | None) -> Loaded:
    """The plugins in ``obj`` (a Plugin, a Bot, a module, or a function making one);
    ``label`` (what load() was given) names the failures."""
    # A Bot's own commands become a plugin named after its file (or module).
    name = path.stem if path is not None else label.rpartition(".")[2].partition(":")[0]
    if isinstance(obj, Plugin):
        return Loaded([obj], path, module)
    if _is_bot(obj):
        return Loaded(cast(_Bot, obj).own_plugins(name), path, module)
    if isinstance(obj, ModuleType):
        found = list({id(v): v for v in vars(obj).values() if isinstance(v, Plugin)}.values())
        if found:
            return Loaded(found, path, obj)
        bots = [cast(_Bot, v) for v in vars(obj).values() if _is_bot(v)]
        if bots:
            return Loaded(bots[0].own_plugins(name), path, obj)
        raise PluginError(f"{label}: defines no Plugin and no Bot")
    if callable(obj):
        return _collect(obj(), label, path, module)
    raise PluginError(f"{label}: {obj!r} is not a plugin")


def load(source: str) -> Loaded:
    """Import ``source`` (a path, an entry point name, or ``module[:attr]``) and find its
    plugins. :class:`PluginError` says why when it cannot."""
    path = Path(source)
    try:
        if source.endswith(".py") or path.is_file():
            if not path.is_file():
                raise PluginError(f"{source}: no such file")
            path = path.resolve()
            module = _from_path(path)
            return _collect(module, source, path, module)
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=source)
        for ep in eps:
            obj = ep.load()
            mod = sys.modules.get(ep.module)
            file = Path(mod.__file__) if mod is not None and mod.__file__ else None
            return _collect(obj, source, file, mod)
        modname, _, attr = source.partition(":")
        mod = importlib.import_module(modname)
        file = Path(mod.__file__) if mod.__file__ else None
        return _collect(getattr(mod, attr) if attr else mod, source, file, mod)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{source}: {type(exc).__name__}: {exc}") from exc


def reimport(source: str, previous: ModuleType | None) -> Loaded:
    """:func:`load` again, with the module's current code (a file is read afresh; a module
    by name is ``importlib.reload``-ed)."""
    path = Path(source)
    if source.endswith(".py") or path.is_file() or previous is None:
        return load(source)
    try:
        mod = importlib.reload(previous)
    except Exception as exc:
        raise PluginError(f"{source}: {type(exc).__name__}: {exc}") from exc
    attr = source.partition(":")[2]
    file = Path(mod.__file__) if mod.__file__ else None
    try:
        return _collect(getattr(mod, attr) if attr else mod, source, file, mod)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{source}: {type(exc).__name__}: {exc}") from exc


class Watcher:
    """``--reload``: polls the files of the sources given and calls ``changed(source)``
    (from its own thread) when one's modification time or size changes."""

    def __init__(
        self, files: dict[str, Path], changed: Callable[[str], None], interval: float = 0.5
    ) -> None:
        self._files = dict(files)
        self._changed = changed
        self._interval = interval
        self._stop = threading.Event()
        self._seen = {src: self._stamp(p) for src, p in self._files.items()}
        self._thread = threading.Thread(target=self._run, name="bot-plugin-watcher", daemon=True)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for source, path in self._files.items():
                stamp = self._stamp(path)
                if stamp != self._seen[source] and stamp is not None:
                    self._seen[source] = stamp
                    log.info("%s changed; reloading it", path)
                    try:
                        self._changed(source)
                    except Exception:
                        log.exception("could not ask for a reload of %s", source)
