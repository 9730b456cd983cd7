"""Commands from function signatures: parameters, usage, parsing, subcommands, help.

::

    @bot.command(aliases=["r"])
    def roll(ctx: Context, dice: Annotated[int, Range(1, 100)] = 1, sides: int = 6) -> str:
        '''Roll DICE dice with SIDES sides.'''

``!roll 2 20`` calls ``roll(ctx, 2, 20)``; ``!roll two`` answers
``alice: dice: "two" is not a whole number. usage: !roll [dice=1] [sides=6]``. The rules:

- The first parameter is the context. Each positional parameter after it takes one word
  (double quotes group words: ``"New York"``); one with a default is optional.
- A keyword-only parameter (after ``*``), or one annotated :data:`Rest`, takes the rest of
  the line verbatim. ``*names: T`` takes every word left, each converted to T.
- The annotation picks the converter (:mod:`chatroom_bots.converters`).
- Words left over are an error ("too many arguments"), so a typo never passes silently.
- The 0.1 convention still works: a handler whose first parameter is annotated
  :class:`~chatroom_bots.context.Message` (or, unannotated, is named ``msg``) gets the
  raw argument string as its second argument, as before (``raw=True`` says so outright).

A :class:`Group` is a command with subcommands (``!poll create ...``); it may have a
handler of its own for when no subcommand is named. :meth:`Command.describe` gives a
msgspec-serialisable description of a command and its parameters, so that a bot can
announce its commands (to a REPL that completes them) without parsing help text.

Commands are built when registered and not changed afterwards except through
:meth:`Group.command` (registration happens before the bot runs or, for a plugin being
(re)loaded, before it is swapped in): readers need no lock.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

import msgspec

from chatroom_bots.converters import (
    BadArgument,
    ConverterFn,
    TypeInfo,
    converter_for,
    optional_inner,
    quote,
)
from chatroom_bots.cooldowns import Cooldown, CooldownMapping

__all__ = [
    "ArgumentError",
    "BadArguments",
    "Command",
    "CommandError",
    "CommandSpec",
    "Group",
    "Param",
    "ParamSpec",
]

# Longest command name a reply repeats back ("I don't know !...").
MAX_NAME_ECHO = 32


class CommandError(Exception):
    """Raised by a command (or by the framework on its behalf): the message is the reply,
    addressed to the user (``alice: ...``)."""


class BadArguments(CommandError):
    """Raise from a command handler: the message is sent back to the user as the reply."""


class ArgumentError(BadArguments):
    """The arguments do not fit the command's signature; the reply adds the usage line."""

    def __init__(self, problem: str, command: Command) -> None:
        super().__init__(problem)
        self.problem = problem
        self.command = command


class ParamSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """One parameter of a command, as a bot would announce it."""

    name: str
    type: str
    required: bool = True
    default: str | None = None
    greedy: bool = False  # takes the rest of the line
    many: bool = False  # takes every word left
    choices: list[str] = []


class CommandSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """A command as a bot would announce it: enough for a client to complete its name and
    arguments and to show its help, with nothing to parse."""

    name: str
    usage: str
    help: str = ""
    aliases: list[str] = []
    params: list[ParamSpec] = []
    subcommands: list[CommandSpec] = []


@dataclass(frozen=True)
class Param:
    name: str
    info: TypeInfo
    kind: Literal["word", "rest", "many"]
    required: bool
    default: Any = None
    keyword: bool = False  # keyword-only: passed by name

    def usage(self) -> str:
        label = self.name
        if self.info.choices and len(self.info.choices) <= 5:
            label = "|".join(self.info.choices)
        if self.kind != "word":
            label += "..."
        if self.required:
            return f"<{label}>"
        if self.default is None or self.default == "" or self.kind == "many":
            return f"[{label}]"
        shown = self.default.name.lower() if hasattr(self.default, "name") else self.default
        return f"[{label}={shown}]"

    def spec(self) -> ParamSpec:
        default = None
        if not self.required and self.default not in (None, "") and self.kind != "many":
            default = str(getattr(self.default, "name", self.default))
        return ParamSpec(
            name=self.name,
            type=self.info.name,
            required=self.required,
            default=default,
            greedy=self.kind == "rest",
            many=self.kind == "many",
            choices=list(self.info.choices),
        )


_QUOTES = {'"': '"', "\u201c": "\u201d", "\u201e": "\u201c"}


def next_word(text: str, pos: int) -> tuple[str, int, int] | None:
    """The word at or after ``pos``: ``(value, start, end)``, or None at the end. Double
    quotes (straight or typographic) group words; an apostrophe does not ("don't")."""
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    if pos == n:
        return None
    close = _QUOTES.get(text[pos])
    if close is not None:
        end = text.find(close, pos + 1)
        if end >= 0:
            return text[pos + 1 : end], pos, end + 1
        raise BadArgument("a quote is not closed")
    end = pos
    while end < n and not text[end].isspace():
        end += 1
    return text[pos:end], pos, end


def words(text: str) -> Iterator[str]:
    pos = 0
    while (w := next_word(text, pos)) is not None:
        yield w[0]
        pos = w[2]


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn, include_extras=True)
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the annotations of {fn.__qualname__}: {exc} "
            "(types used in a command's signature must be importable where it is defined)"
        ) from None


def _is_message_annotation(annotation: Any) -> bool:
    """Whether ``annotation`` is :class:`chatroom_bots.context.Message` itself (not a
    subclass), known by the marker that class declares: context imports this module, so
    importing it here would make a circle."""
    return isinstance(annotation, type) and "__raw_args__" in vars(annotation)


def summary(doc: str) -> str:
    """The first paragraph of a docstring, on one line."""
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.split())


class Command:
    """A command: its name, aliases, handler, parameters, checks and cooldown."""

    def __init__(
        self,
        fn: Callable[..., Any] | None,
        name: str | None = None,
        *,
        aliases: Sequence[str] = (),
        help: str | None = None,
        cooldown: float | Cooldown | None = None,
        hidden: bool = False,
        raw: bool | None = None,
        converters: Mapping[Any, ConverterFn] | None = None,
        parent: Group | None = None,
    ) -> None:
        if name is None:
            if fn is None:
                raise TypeError("a command without a handler needs a name")
            name = fn.__name__.strip("_")
        name = name.lower()
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"a command's name is one word, not {name!r}")
        self.name = name
        self.aliases = tuple(a.lower() for a in aliases)
        self.fn = fn
        self.parent = parent
        self.hidden = hidden
        doc = inspect.getdoc(fn) if fn is not None else None
        self.doc = " ".join((doc or "").split())
        self.help = help if help is not None else summary(doc or "")
        self.checks: list[Callable[[Any], object]] = list(getattr(fn, "__bot_checks__", ()))
        if isinstance(cooldown, int | float):
            cooldown = Cooldown(per=float(cooldown)) if cooldown > 0 else None
        cooldown = cooldown or getattr(fn, "__bot_cooldown__", None)
        self.cooldowns = CooldownMapping(cooldown) if cooldown is not None else None
        self.is_async = fn is not None and inspect.iscoroutinefunction(fn)
        self.raw = False
        self.params: tuple[Param, ...] = ()
        if fn is not None:
            self.raw, self.params = self._analyse(fn, raw, converters or {})
        if fn is not None:
            # Lets a check decorator above @bot.command() find the command. A bound
            # method takes no attributes; such a handler's checks go below the decorator.
            with contextlib.suppress(AttributeError):
                fn.__chat_command__ = self  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ signature

    @staticmethod
    def _analyse(
        fn: Callable[..., Any], raw: bool | None, converters: Mapping[Any, ConverterFn]
    ) -> tuple[bool, tuple[Param, ...]]:
        sig = inspect.signature(fn)
        ps = list(sig.parameters.values())
        if not ps or ps[0].kind not in (ps[0].POSITIONAL_ONLY, ps[0].POSITIONAL_OR_KEYWORD):
            raise TypeError(f"{fn.__qualname__}: the first parameter takes the context")
        hints = _hints(fn)
        first = hints.get(ps[0].name, inspect.Parameter.empty)
        if raw is None:
            raw = _is_message_annotation(first) or (
                first is inspect.Parameter.empty and ps[0].name == "msg" and len(ps) == 2
            )
        if raw:
            if len(ps) != 2:
                raise TypeError(f"{fn.__qualname__}: a raw command takes (msg, args)")
            return True, ()
        params: list[Param] = []
        for p in ps[1:]:
            annotation = hints.get(p.name, inspect.Parameter.empty)
            info = converter_for(annotation, converters)
            has_default = p.default is not inspect.Parameter.empty
            default = p.default if has_default else None
            if p.kind is p.VAR_KEYWORD:
                raise TypeError(f"{fn.__qualname__}: **{p.name} cannot be filled from a line")
            if p.kind is p.VAR_POSITIONAL:
                params.append(Param(p.name, info, "many", False, ()))
                continue
            if params and params[-1].kind != "word":
                raise TypeError(f"{fn.__qualname__}: {p.name} comes after the rest of the line")
            kind: Literal["word", "rest"] = (
                "rest" if p.kind is p.KEYWORD_ONLY or info.greedy else "word"
            )
            optional = has_default or optional_inner(annotation) is not None
            keyword = p.kind is p.KEYWORD_ONLY
            params.append(Param(p.name, info, kind, not optional, default, keyword))
        return False, tuple(params)

    # ------------------------------------------------------------------ names and text

    @property
    def qualified_name(self) -> str:
        if self.parent is None:
            return self.name
        return f"{self.parent.qualified_name} {self.name}"

    def usage(self, prefix: str) -> str:
        parts = [prefix + self.qualified_name]
        if self.raw:
            parts.append("...")
        parts.extend(p.usage() for p in self.params)
        return " ".join(parts)

    def describe(self, prefix: str) -> CommandSpec:
        return CommandSpec(
            name=self.name,
            usage=self.usage(prefix),
            help=self.help,
            aliases=list(self.aliases),
            params=[p.spec() for p in self.params],
        )

    def help_text(self, prefix: str) -> str:
        """``!help CMD``: usage, the whole docstring, aliases."""
        text = self.usage(prefix)
        if self.doc or self.help:
            text += f": {self.doc or self.help}"
        if self.aliases:
            text += f" (also {', '.join(prefix + a for a in self.aliases)})"
        return text

    # ------------------------------------------------------------------ parsing

    def parse(self, ctx: Any, text: str) -> tuple[list[Any], dict[str, Any]]:
        """The arguments for the handler, from the text after the command's name.
        Raises :class:`ArgumentError` (with this command's usage) if they do not fit."""
        if self.raw:
            return [text.strip()], {}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        pos = 0
        try:
            for p in self.params:
                if p.kind == "rest":
                    rest = text[pos:].strip()
                    pos = len(text)
                    if not rest and p.required:
                        raise ArgumentError(f"{p.name} is missing", self)
                    value = self._convert(p, ctx, rest) if rest else p.default
                    if p.keyword:
                        kwargs[p.name] = value
                    else:
                        args.append(value)
                    continue
                if p.kind == "many":
                    while (w := next_word(text, pos)) is not None:
                        args.append(self._convert(p, ctx, w[0]))
                        pos = w[2]
                    continue
                w = next_word(text, pos)
                if w is None:
                    if p.required:
                        raise ArgumentError(f"{p.name} is missing", self)
                    args.append(p.default)
                    continue
                args.append(self._convert(p, ctx, w[0]))
                pos = w[2]
            extra = next_word(text, pos)
        except BadArgument as exc:
            raise ArgumentError(str(exc), self) from None
        if extra is not None:
            raise ArgumentError(f"too many arguments from {quote(extra[0])} on", self)
        return args, kwargs

    def _convert(self, p: Param, ctx: Any, text: str) -> Any:
        try:
            return p.info.convert(ctx, text)
        except BadArgument as exc:
            raise ArgumentError(f"{p.name}: {exc}", self) from None

    def __repr__(self) -> str:
        return f"<Command {self.qualified_name}>"


class Group(Command):
    """A command with subcommands: ``!poll create ...``, ``!poll close``. Without a
    subcommand its own handler runs if it has one, else the reply lists them."""

    def __init__(self, fn: Callable[..., Any] | None, name: str | None = None, **kw: Any) -> None:
        self._converters: Mapping[Any, ConverterFn] = kw.get("converters") or {}
        super().__init__(fn, name, **kw)
        self.subcommands: dict[str, Command] = {}  # name and aliases -> command

    def command(
        self,
        name: str | None = None,
        *,
        aliases: Sequence[str] = (),
        help: str | None = None,
        cooldown: float | Cooldown | None = None,
        hidden: bool = False,
    ) -> Callable[[typing.Callable[..., Any]], typing.Callable[..., Any]]:
        """Register a subcommand: ``@poll.command("create")``."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            cmd = Command(
                fn,
                name,
                aliases=aliases,
                help=help,
                cooldown=cooldown,
                hidden=hidden,
                converters=self._converters,
                parent=self,
            )
            for key in (cmd.name, *cmd.aliases):
                if key in self.subcommands:
                    raise ValueError(f"{self.qualified_name} {key} is already a subcommand")
            for key in (cmd.name, *cmd.aliases):
                self.subcommands[key] = cmd
            return fn

        return register

    def resolve(self, text: str) -> tuple[Command, str]:
        """The subcommand ``text`` names (and the text after its name), or this group."""
        try:
            w = next_word(text, 0)
        except BadArgument:
            return self, text
        if w is not None:
            sub = self.subcommands.get(w[0].lower())
            if sub is not None:
                if isinstance(sub, Group):
                    return sub.resolve(text[w[2] :])
                return sub, text[w[2] :]
        return self, text

    def unique(self) -> list[Command]:
        seen: dict[int, Command] = {}
        for cmd in self.subcommands.values():
            seen.setdefault(id(cmd), cmd)
        return sorted(seen.values(), key=lambda c: c.name)

    def usage(self, prefix: str) -> str:
        names = "|".join(c.name for c in self.unique() if not c.hidden)
        own = super().usage(prefix)
        if self.fn is None:
            return f"{prefix}{self.qualified_name} <{names}> ..."
        return f"{own} | {prefix}{self.qualified_name} <{names}> ..."

    def describe(self, prefix: str) -> CommandSpec:
        spec = super().describe(prefix)
        subs = [c.describe(prefix) for c in self.unique() if not c.hidden]
        return msgspec.structs.replace(spec, subcommands=subs)

    def help_text(self, prefix: str) -> str:
        text = super().help_text(prefix)
        subs = [
            f"{prefix}{c.qualified_name}" + (f": {c.help}" if c.help else "")
            for c in self.unique()
            if not c.hidden
        ]
        return text + "; " + "; ".join(subs) if subs else text

    def parse(self, ctx: Any, text: str) -> tuple[list[Any], dict[str, Any]]:
        if self.fn is None:
            w = next_word(text, 0) if text.strip() else None
            problem = (
                f"{quote(w[0], 20)} is not a subcommand" if w else "which one? name a subcommand"
            )
            raise ArgumentError(problem, self)
        return super().parse(ctx, text)
