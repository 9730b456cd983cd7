"""``chat-bot echo|greeter``, or ``chat-bot run SOURCE... [--reload]``: run a bot in the
foreground until Ctrl-C or SIGTERM.

``run`` assembles a bot from plugins (docs/BOTS.md): each SOURCE is a path
(``mybot.py``), a module (``mypkg.dice``) or an entry point of the ``chatroom.bots``
group (``echo``, ``greeter``); one that fails to load is logged with the reason and the
bot runs without it. ``--reload`` reloads a plugin when its file changes (and loads one
that had failed once its file is fixed), without disconnecting.

``run`` picks the bot the plugins were written for: an :class:`~chatroom_bots.AsyncBot`
(on asyncio) when a source defines one, or has a handler that takes an ``AsyncContext``,
or with ``--asyncio``; else the threaded :class:`~chatroom_bots.Bot`. Every flag means
the same for both; the sources are imported first, to know which."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from chatroom import AuthError, UsageError
from chatroom.protocol import DEFAULT_PORT
from chatroom_bots.aiobot import AsyncBot
from chatroom_bots.bot import Bot
from chatroom_bots.commands import Command, Group
from chatroom_bots.context import AsyncContext
from chatroom_bots.core import BotBase
from chatroom_bots.echo import make_echo
from chatroom_bots.greeter import make_greeter
from chatroom_bots.plugins import ENTRY_POINT_GROUP, Loaded, Plugin, PluginError, load

log = logging.getLogger("chatroom_bots")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chat-bot",
        description="Run a chatroom bot: echo, greeter, or one made of plugins "
        "(chat-bot run mybot.py poll.py echo).",
    )
    p.add_argument("bot", choices=["echo", "greeter", "run"])
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="run: plugins by path, module name or entry point name "
        f"(the {ENTRY_POINT_GROUP} group: echo, greeter, ...)",
    )
    p.add_argument(
        "--reload",
        action="store_true",
        help="run: reload a plugin when its file changes, without disconnecting",
    )
    p.add_argument(
        "--asyncio",
        action="store_true",
        help="run: an AsyncBot, on asyncio, even if no plugin asks for one",
    )
    p.add_argument(
        "--store",
        type=Path,
        help="run: the bot's storage file (default: beside the password file)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="server address, or a cluster's: a:5050,b:5051"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--name", help="the bot's username (default: the bot's kind, or the first source's name)"
    )
    p.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file; without it a password is "
        "generated on first start and saved next to --db",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=Path("chatroom.db"),
        help="the server's credentials file, to keep generated bot passwords "
        "beside (default chatroom.db)",
    )
    p.add_argument(
        "--greet",
        choices=["public", "dm"],
        default="public",
        help="greeter: welcome in public or by DM (default public)",
    )
    p.add_argument(
        "--cursor-file",
        type=Path,
        help="where the bot remembers the last message it handled, to catch up after a "
        "restart (default: beside the password file; see --no-resume)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start from now on every start: what was said while the bot was down is lost",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca-file", help="CA certificate to verify the server with (TLS)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def bot_password(name: str, password_file: Path | None, db: Path) -> str:
    """The password from ``password_file``, or the one saved (generated if need be) in
    ``<db>.<name>.password`` beside the database, readable by its owner only."""
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    path = db.with_name(f"{db.name}.{name}.password")
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    log.info("generated a password for %s and saved it in %s", name, path)
    return password


def cursor_path(name: str, password_file: Path | None, db: Path) -> Path:
    """Beside the password file: ``<dir>/<name>.cursor`` next to ``--password-file``, or
    ``<db>.<name>.cursor`` next to a generated password."""
    if password_file is not None:
        return password_file.with_name(f"{name}.cursor")
    return db.with_name(f"{db.name}.{name}.cursor")


def store_path(name: str, password_file: Path | None, db: Path) -> Path:
    """Beside the password file, as the cursor: ``<name>.store`` or ``<db>.<name>.store``."""
    if password_file is not None:
        return password_file.with_name(f"{name}.store")
    return db.with_name(f"{db.name}.{name}.store")


def source_name(source: str) -> str:
    """A bot name from a plugin source: ``bots/dice.py`` -> ``dice``, ``pkg.poll`` ->
    ``poll``; cut to a valid username."""
    stem = Path(source).stem if source.endswith(".py") else source.rpartition(".")[2]
    name = "".join(c for c in stem.partition(":")[0] if c.isalnum() or c in "_-")
    return name[:32] or "bot"


def make_bot(kind: str, name: str, greet: str) -> Bot:
    if kind == "echo":
        return make_echo(name)
    return make_greeter(name, mode="dm" if greet == "dm" else "public")


def _takes_async_context(fn: object) -> bool:
    """Whether ``fn``'s first parameter is annotated ``AsyncContext`` (or a string of it,
    under ``from __future__ import annotations``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    ann = params[0].annotation
    if isinstance(ann, str):
        return ann.rpartition(".")[2] == "AsyncContext"
    return isinstance(ann, type) and issubclass(ann, AsyncContext)


def _commands(commands: dict[str, Command]) -> list[Command]:
    found: list[Command] = []
    for cmd in {id(c): c for c in commands.values()}.values():
        found.append(cmd)
        if isinstance(cmd, Group):
            found.extend(_commands(cmd.subcommands))
    return found


def wants_asyncio(loaded: Loaded) -> bool:
    """Whether a source was written for :class:`AsyncBot`: its module holds one, or one of
    its plugins' commands or text handlers takes an ``AsyncContext``."""
    module = loaded.module
    if module is not None and any(isinstance(v, AsyncBot) for v in vars(module).values()):
        return True
    plugins: list[Plugin] = loaded.plugins
    fns = [c.fn for p in plugins for c in _commands(p.commands) if c.fn is not None]
    fns += [fn for p in plugins for fn in p.text_handlers]
    return any(_takes_async_context(fn) for fn in fns)


def make_plugin_bot(args: argparse.Namespace, name: str) -> BotBase | None:
    """``run``: a bot with the plugins that load (None if none did and none may later),
    threaded or asyncio as they need (the module docstring)."""
    store = args.store or store_path(name, args.password_file, args.db)
    imported: dict[str, Loaded | PluginError] = {}
    for source in args.sources:
        try:
            imported[source] = load(source)
        except PluginError as exc:
            imported[source] = exc
    asked = [s for s, got in imported.items() if isinstance(got, Loaded) and wants_asyncio(got)]
    bot: BotBase
    if args.asyncio or asked:
        bot = AsyncBot(name, store=store)
        log.info("%s runs on asyncio (%s)", name, ", ".join(asked) or "--asyncio")
    else:
        bot = Bot(name, store=store)
    loaded = [bot.try_add_loaded(source, got) for source, got in imported.items()]
    if not any(loaded) and not args.reload:
        print("chat-bot: no plugin could be loaded (see the log above)", file=sys.stderr)
        return None
    log.info("%s keeps its state in %s", name, store)
    if args.reload:
        bot.watch_plugins()
    return bot


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bot == "run" and not args.sources:
        parser.error("run needs at least one SOURCE (a path, module or entry point name)")
    if args.bot != "run" and (args.sources or args.reload or args.store or args.asyncio):
        parser.error(f"SOURCE, --reload, --store and --asyncio go with run, not {args.bot}")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    name = args.name or (source_name(args.sources[0]) if args.bot == "run" else args.bot)
    try:
        password = bot_password(name, args.password_file, args.db)
    except OSError as exc:
        print(f"chat-bot: {exc}", file=sys.stderr)
        return 2
    bot: BotBase
    if args.bot == "run":
        plugin_bot = make_plugin_bot(args, name)
        if plugin_bot is None:
            return 1
        bot = plugin_bot
    else:
        bot = make_bot(args.bot, name, args.greet)
    cursor = (
        None
        if args.no_resume
        else args.cursor_file or cursor_path(name, args.password_file, args.db)
    )
    if cursor is not None:
        log.info("%s keeps its place in %s", name, cursor)
    options = {"tls": args.tls, "ca_file": args.ca_file, "cursor_file": cursor}
    try:
        if isinstance(bot, AsyncBot):
            asyncio.run(run_async(bot, args.host, args.port, password, options))
        else:
            assert isinstance(bot, Bot)
            run_threaded(bot, args.host, args.port, password, options)
    except (AuthError, UsageError) as exc:
        print(f"chat-bot: {name}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    return 0


def run_threaded(bot: Bot, host: str, port: int, password: str, options: dict[str, Any]) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        bot.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bot.run(host, port, password=password, **options)


async def run_async(
    bot: AsyncBot, host: str, port: int, password: str, options: dict[str, Any]
) -> None:
    """The asyncio bot until SIGTERM or Ctrl-C; a signal that comes while it is still
    connecting stops it as soon as it can."""
    loop = asyncio.get_running_loop()
    runner = loop.create_task(bot.run(host, port, password=password, **options))

    def on_signal(signum: int) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        if bot.client is None:
            runner.cancel()  # not connected yet: nothing to log out of
        else:
            bot.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await runner
    except asyncio.CancelledError:
        if not runner.cancelled():
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


if __name__ == "__main__":
    sys.exit(main())
