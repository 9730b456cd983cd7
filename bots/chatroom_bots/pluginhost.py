"""What a bot has (:class:`PluginHost`, a base of :class:`~chatroom_bots.core.BotBase`):
its own commands, handlers and schedules (registered as the plugin ``""``), its plugins
(added, removed, loaded and reloaded), their schedules, and the command index built
from them all. :mod:`chatroom_bots.core`'s docstring says
which lock guards what; the rule here is copy-on-write: ``_plugins`` and ``_index``
are replaced whole, so that the dispatch thread reads them with no lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import time as dtime
from datetime import timedelta, tzinfo
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from chatroom_bots.commands import Command, Group
from chatroom_bots.cooldowns import Cooldown
from chatroom_bots.plugins import Loaded, Plugin, PluginError, Watcher, load, reimport
from chatroom_bots.schedules import Job, JobSpec
from chatroom_bots.storage import Store

__all__ = ["PluginHost"]

log = logging.getLogger("chatroom_bots.bot")

F = TypeVar("F", bound=Callable[..., Any])


class PluginHost:
    """The bot's plugins: ``_root`` (the bot's own commands, plugin ``""``) first, then
    the others in load order, and the index of their commands beside ``builtins``."""

    name: str
    prefix: str

    def __init__(self, builtins: dict[str, Command]) -> None:
        self._root = Plugin("")
        self._builtins = builtins
        self._registry_lock = threading.RLock()
        self._plugins: tuple[Plugin, ...] = (self._root,)
        self._index: dict[str, tuple[Command, Plugin | None]] = self._build_index(self._plugins)
        # Guarded by _registry_lock, with _plugins and _index:
        self._sources: dict[str, tuple[Plugin, ...]] = {}  # load() source -> its plugins
        self._modules: dict[str, ModuleType | None] = {}
        self.failed_plugins: dict[str, str] = {}  # source -> why it did not load
        self._watcher: Watcher | None = None  # --reload; started and stopped by the owner
        self._jobs: dict[int, list[Job]] = {}  # id(plugin) -> its running schedules
        self._pending_later: list[Job] = []  # later() before the bot runs

    # The bot's (chatroom_bots.core.BotBase and its subclasses).
    def _announce_soon(self) -> None:
        raise NotImplementedError

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def _changed(self) -> None:
        """The bot's own commands changed: a new index."""
        with self._registry_lock:
            self._index = self._build_index(self._plugins)
        self._announce_soon()

    # ------------------------------------------------------------------ the bot's own

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
        """Register a command (see :meth:`Plugin.command`)."""
        register = self._root.command(
            name, aliases=aliases, help=help, cooldown=cooldown, hidden=hidden, raw=raw
        )

        def wrapped(fn: F) -> F:
            # 0.1 replaced a command registered twice; a plugin refuses (two plugins
            # must not fight over a name), the bot's own commands still replace.
            cmd_name = (name or fn.__name__.strip("_")).lower()
            commands = self._root.commands
            old = commands.get(cmd_name)
            if old is not None and old.name == cmd_name:
                for key in [k for k, c in commands.items() if c is old]:
                    del commands[key]
            try:
                register(fn)
            except BaseException:
                if old is not None and old.name == cmd_name:
                    commands.update({k: old for k in (old.name, *old.aliases)})
                raise
            self._changed()
            return fn

        return wrapped

    def group(
        self,
        name: str,
        *,
        aliases: Sequence[str] = (),
        help: str | None = None,
        fn: Callable[..., Any] | None = None,
    ) -> Group:
        group = self._root.group(name, aliases=aliases, help=help, fn=fn)
        self._changed()
        return group

    def converter(self, annotation: Any) -> Callable[[F], F]:
        return self._root.converter(annotation)

    def on_text(self, fn: F) -> F:
        """Register a handler for messages that are not commands; its return is the reply.
        Public messages reach it only when they mention the bot (``@name ...``)."""
        return self._root.on_text(fn)

    def on_join(self, fn: F) -> F:
        """Register ``fn(username)`` for users who really arrive (see :class:`Presence`)."""
        return self._root.on_join(fn)

    def on_leave(self, fn: F) -> F:
        """Register ``fn(username)`` for users who leave."""
        return self._root.on_leave(fn)

    def use(self, middleware: F) -> F:
        """Add ``mw(ctx, call_next)`` around every command (:mod:`~chatroom_bots.middleware`)."""
        return self._root.use(middleware)

    def every(
        self,
        seconds: float = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        first: float | timedelta | None = None,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Run ``fn()`` (or ``fn(bot)``) every interval (:mod:`~chatroom_bots.schedules`)."""
        register = self._root.every(seconds, minutes=minutes, hours=hours, first=first, name=name)

        def wrapped(fn: F) -> F:
            register(fn)
            self._schedule(self._root, [self._root.jobs[-1]])
            return fn

        return wrapped

    def at(
        self, when: str | dtime, *, tz: str | tzinfo | None = None, name: str | None = None
    ) -> Callable[[F], F]:
        """Run ``fn()`` (or ``fn(bot)``) every day at ``when`` in ``tz`` (default UTC)."""
        register = self._root.at(when, tz=tz, name=name)

        def wrapped(fn: F) -> F:
            register(fn)
            self._schedule(self._root, [self._root.jobs[-1]])
            return fn

        return wrapped

    def later(self, delay: float | timedelta, fn: Callable[..., Any], *, name: str = "") -> Job:
        """Run ``fn()`` (or ``fn(bot)``) once, ``delay`` seconds from now (from the start,
        if the bot is not running yet). ``job.cancel()`` to call it off."""
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        spec = JobSpec(name or getattr(fn, "__name__", "later"), fn, "later", interval=delay)
        job = Job(spec)
        if not self._add_job(job):
            self._pending_later.append(job)
        return job

    def jobs(self) -> list[Job]:
        """The schedules of the running bot."""
        return [j for js in self._jobs.values() for j in js]

    # Runtime hooks (the subclasses): add a job to the running scheduler, if running.
    def _add_job(self, job: Job) -> bool:
        raise NotImplementedError

    def _remove_job(self, job: Job) -> None:
        raise NotImplementedError

    def _schedule(self, plugin: Plugin, specs: Sequence[JobSpec]) -> None:
        jobs = [Job(s) for s in specs]
        for job in jobs:
            if not self._add_job(job):
                return  # not running: start() schedules every plugin's jobs
        self._jobs.setdefault(id(plugin), []).extend(jobs)

    def _unschedule(self, plugin: Plugin) -> None:
        for job in self._jobs.pop(id(plugin), []):
            self._remove_job(job)

    def _schedule_all(self) -> None:
        """At start: every plugin's schedules and the ``later`` calls made before it."""
        for plugin in self._plugins:
            self._schedule(plugin, plugin.jobs)
        pending, self._pending_later = self._pending_later, []
        for job in pending:
            self._add_job(job)

    # ------------------------------------------------------------------ plugins

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        """The plugins in load order (the bot's own commands first, as plugin ``""``)."""
        return self._plugins

    def own_plugins(self, label: str) -> list[Plugin]:
        """This bot's registrations as plugins, for another bot to load (a module that
        defines a Bot loads as a plugin named after its file)."""
        if not self._root.name:
            self._root.name = label
        return [p for p in self._plugins]

    def _build_index(self, plugins: Sequence[Plugin]) -> dict[str, tuple[Command, Plugin | None]]:
        index: dict[str, tuple[Command, Plugin | None]] = {
            k: (c, None) for k, c in self._builtins.items()
        }
        names: set[str] = set()
        for plugin in plugins:
            if plugin.name and plugin.name in names:
                raise PluginError(f"two plugins are named {plugin.name!r}")
            names.add(plugin.name)
            for key, cmd in plugin.commands.items():
                owner = index.get(key, (None, None))[1]
                if owner is not None and owner is not plugin:
                    raise PluginError(
                        f"{self.prefix}{key} of plugin {plugin.name!r} is already a command "
                        f"of plugin {owner.name!r}"
                    )
                index[key] = (cmd, plugin)
        return index

    def add_plugin(self, plugin: Plugin) -> Plugin:
        """Add a plugin (before or while the bot runs). :class:`PluginError` if one of its
        commands is another plugin's, or its name is taken."""
        self._swap((), (plugin,))
        return plugin

    def remove_plugin(self, plugin: Plugin | str) -> None:
        """Remove a plugin (by object or name): its commands, handlers and schedules."""
        if isinstance(plugin, str):
            found = [p for p in self._plugins if p.name == plugin and p is not self._root]
            if not found:
                raise KeyError(plugin)
            plugin = found[0]
        self._swap((plugin,), ())

    def _swap(self, old: Sequence[Plugin], new: Sequence[Plugin]) -> None:
        with self._registry_lock:
            self._swap_index(old, new)
        self._after_swap(old, new)

    def _swap_index(self, old: Sequence[Plugin], new: Sequence[Plugin]) -> None:
        """Replace ``old`` by ``new`` in the plugins and the index, or raise
        :class:`PluginError` with nothing changed (``_registry_lock`` held)."""
        for p in new:
            if p.bot is not None and p.bot is not self:
                raise PluginError(
                    f"plugin {p.name!r} belongs to bot {p.bot.name!r} already (make one per bot)"
                )
        plugins = tuple(p for p in self._plugins if p not in old) + tuple(new)
        index = self._build_index(plugins)  # raises before anything changed
        for p in new:
            p.bot = self
        self._plugins, self._index = plugins, index

    def _after_swap(self, old: Sequence[Plugin], new: Sequence[Plugin]) -> None:
        """Schedules and hooks of the plugins swapped out and in (no lock held)."""
        for p in old:
            self._unschedule(p)
            self._call_plugin_hooks(p.unload_hooks)
            p.bot = None
        for p in new:
            self._schedule(p, p.jobs)
            self._call_plugin_hooks(p.load_hooks)
        self._announce_soon()

    def _call_plugin_hooks(self, hooks: Sequence[Callable[..., Any]]) -> None:
        for fn in hooks:
            try:
                fn(self)
            except Exception:
                log.exception("%s: plugin hook %s failed", self.name, getattr(fn, "__name__", fn))

    def _import(self, source: str) -> Loaded:
        """Import ``source`` (afresh, if it was loaded before) and find its plugins; the
        bot is not touched. :class:`PluginError` says why it cannot."""
        with self._registry_lock:
            module = self._modules.get(source)
            known = source in self._sources
        try:
            loaded = reimport(source, module) if known else load(source)
        except PluginError as exc:
            with self._registry_lock:
                self.failed_plugins[source] = str(exc)
            raise
        for p in loaded.plugins:
            p.source, p.path = source, loaded.path
        return loaded

    def _install(self, source: str, loaded: Loaded) -> list[Plugin]:
        """Swap what :meth:`_import` found in for the plugins ``source`` had, if any."""
        with self._registry_lock:
            old = self._sources.get(source, ())
            try:
                self._swap_index(old, loaded.plugins)
            except PluginError as exc:
                self.failed_plugins[source] = str(exc)
                raise
            self.failed_plugins.pop(source, None)
            self._sources[source] = tuple(loaded.plugins)
            self._modules[source] = loaded.module
        self._after_swap(old, loaded.plugins)
        summary = ", ".join(
            f"{p.name or '?'}: {len(set(map(id, p.commands.values())))} commands"
            for p in loaded.plugins
        )
        log.info("%s: %s %s (%s)", self.name, "reloaded" if old else "loaded", source, summary)
        return loaded.plugins

    def load_plugin(self, source: str) -> list[Plugin]:
        """Load the plugins of ``source`` (a path, an entry point name of the
        ``chatroom.bots`` group, or a module name) and add them; a source loaded before
        is imported again and its plugins swapped for the new ones. On any failure
        :class:`PluginError` says why, and the bot is unchanged."""
        return self._install(source, self._import(source))

    reload_plugin = load_plugin

    def try_load(self, source: str) -> bool:
        """:meth:`load_plugin`, logging the reason on failure instead of raising: the bot
        goes on without the plugin, or with its previous version (``chat-bot run``)."""
        try:
            self.load_plugin(source)
        except PluginError as exc:
            log.error("%s: could not load %s; going on without it", self.name, exc)
            return False
        return True

    def try_add_loaded(self, source: str, loaded: Loaded | PluginError) -> bool:
        """:meth:`try_load` for a source imported already (``chat-bot run`` imports its
        sources before it knows which bot they need); a :class:`PluginError` is recorded
        as the source's failure (``--reload`` watches its file)."""
        if isinstance(loaded, PluginError):
            with self._registry_lock:
                self.failed_plugins[source] = str(loaded)
            log.error("%s: could not load %s; going on without it", self.name, loaded)
            return False
        for p in loaded.plugins:
            p.source, p.path = source, loaded.path
        try:
            self._install(source, loaded)
        except PluginError as exc:
            log.error("%s: could not load %s; going on without it", self.name, exc)
            return False
        return True

    def _import_logged(self, source: str) -> Loaded | None:
        try:
            return self._import(source)
        except PluginError as exc:
            log.error("%s: could not load %s; going on without it", self.name, exc)
            return None

    def _install_logged(self, source: str, loaded: Loaded) -> None:
        try:
            self._install(source, loaded)
        except PluginError as exc:
            log.error("%s: could not load %s; going on without it", self.name, exc)

    def watch_plugins(self) -> None:
        """``--reload``: reload a plugin when its file changes, without disconnecting
        (and load one that had failed once its file is fixed), until the bot stops."""
        files = self.plugin_files()
        if files and self._watcher is None:
            self._watcher = Watcher(files, self.request_reload).start()

    def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    def request_reload(self, source: str) -> None:
        raise NotImplementedError

    def plugin_files(self) -> dict[str, Path]:
        """The file of each source loaded (or that failed to load), for ``--reload``."""
        files: dict[str, Path] = {}
        for source, plugins in self._sources.items():
            path = next((p.path for p in plugins if p.path is not None), None)
            if path is not None:
                files[source] = path
        for source in self.failed_plugins:
            if source.endswith(".py") and Path(source).is_file():
                files[source] = Path(source).resolve()
        return files
