"""Argument converters: the text of one argument into the value a command's signature asks
for, or a :class:`BadArgument` that says what was wrong in words a user understands.

A parameter's annotation picks its converter (:func:`converter_for`):

=====================  =========================================================
annotation             accepts
=====================  =========================================================
``str``                one word, or several in double quotes: ``"New York"``
``int``, ``float``     a number (``float``: finite only)
``bool``               yes/no, true/false, on/off, y/n, 1/0
``Rest``               the rest of the line, verbatim (also: a keyword-only ``str``)
``OnlineUser``         the name of a user online now, as the server spells it
``Room``               a room the bot is in (``dice`` or ``#dice``), as the server spells it
``timedelta``          a duration: ``90s``, ``10m``, ``1h30m``, ``2d``
an ``Enum``            one of its member names or values, case-insensitive
``Literal["a", "b"]``  one of the listed words
``T | None``           T, and ``None`` when left out
``Annotated[T, ...]``  T with a :class:`Range` (numbers) or a :class:`Convert` (custom)
=====================  =========================================================

A custom converter is a function ``(ctx, text) -> value`` (or ``(text) -> value``) that
raises :class:`BadArgument` or ``ValueError``; give it per parameter with
``Annotated[Color, Convert(parse_color)]`` or for every parameter of a type with
``bot.converter(Color)``.

Converters are plain functions called on the thread (or the event loop) that runs the
command: they keep no state of their own.
"""

from __future__ import annotations

import enum
import inspect
import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from chatroom.protocol import username_key
from chatroom.rooms import LOBBY, is_valid_room, room_key

__all__ = [
    "BadArgument",
    "Convert",
    "ConverterFn",
    "OnlineUser",
    "Range",
    "Rest",
    "Room",
    "TypeInfo",
    "converter_for",
    "parse_duration",
    "quote",
]

# The longest argument text a number, duration or user converter looks at: anything
# longer is not one of them, and parsing it (a 4,000-digit int) would be work for nothing.
MAX_WORD = 100


class BadArgument(ValueError):
    """An argument's text is not what the parameter takes; the message says why."""


ConverterFn = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Range:
    """``Annotated[int, Range(1, 100)]``: a number within ``[lo, hi]``."""

    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Convert:
    """``Annotated[T, Convert(fn)]``: ``fn(ctx, text)`` or ``fn(text)`` makes the value."""

    fn: Callable[..., Any]
    name: str = ""


@dataclass(frozen=True)
class TypeInfo:
    """How one parameter converts: the function, a short type name for usage and for the
    command's description (:mod:`chatroom_bots.commands`), and the words it accepts
    when it is a choice."""

    convert: ConverterFn
    name: str
    choices: tuple[str, ...] = ()
    greedy: bool = False  # Rest: takes the rest of the line


def quote(text: str, limit: int = 30) -> str:
    """``text`` as it may appear in an error message: quoted, and cut when long, so a
    reply never echoes a 4,000-character argument back."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f'"{text}"'


def _word(text: str) -> str:
    if len(text) > MAX_WORD:
        raise BadArgument(f"{quote(text)} is too long")
    return text.strip()


def _int(ctx: Any, text: str) -> int:
    word = _word(text)
    try:
        return int(word)
    except ValueError:
        raise BadArgument(f"{quote(text)} is not a whole number") from None


def _float(ctx: Any, text: str) -> float:
    word = _word(text)
    try:
        value = float(word)
    except ValueError:
        raise BadArgument(f"{quote(text)} is not a number") from None
    if not math.isfinite(value):
        raise BadArgument(f"{quote(text)} is not a number")
    return value


_TRUE = frozenset({"yes", "y", "true", "t", "on", "1", "enable", "enabled"})
_FALSE = frozenset({"no", "n", "false", "f", "off", "0", "disable", "disabled"})


def _bool(ctx: Any, text: str) -> bool:
    word = _word(text).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise BadArgument(f"{quote(text)} is not yes or no")


def _str(ctx: Any, text: str) -> str:
    return text


def _online_user(ctx: Any, text: str) -> str:
    name = _word(text).removeprefix("@")
    key = username_key(name)
    for user in ctx.bot.users:
        if username_key(user) == key:
            return str(user)
    raise BadArgument(f"{quote(name)} is not online")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` -> 1:30:00. Units w, d, h, m, s, ms; every number needs its unit
    (a bare ``10`` could mean seconds or minutes, so it is refused)."""
    word = _word(text).replace(" ", "").lower()
    pos, seconds = 0, 0.0
    for m in _DURATION.finditer(word):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
        pos = m.end()
    if pos != len(word) or not word:
        raise BadArgument(f"{quote(text)} is not a duration (say 90s, 10m, 1h30m or 2d)")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise BadArgument(f"{quote(text)} is too long a time") from None


def _duration(ctx: Any, text: str) -> timedelta:
    return parse_duration(text)


def _choice(words: Mapping[str, Any], what: str) -> ConverterFn:
    def convert(ctx: Any, text: str) -> Any:
        key = text.strip().lower()
        if key in words:
            return words[key]
        raise BadArgument(f"{quote(text)} is not {what}: one of {', '.join(words)}")

    return convert


def _enum(cls: type[enum.Enum]) -> TypeInfo:
    words: dict[str, Any] = {}
    for member in cls:
        words.setdefault(member.name.lower(), member)
    for member in cls:
        words.setdefault(str(member.value).lower(), member)
    shown = tuple(m.name.lower() for m in cls)
    return TypeInfo(_choice(words, f"a {cls.__name__.lower()}"), cls.__name__.lower(), shown)


def _ranged(inner: TypeInfo, r: Range) -> TypeInfo:
    def convert(ctx: Any, text: str) -> Any:
        value = inner.convert(ctx, text)
        if (r.lo is not None and value < r.lo) or (r.hi is not None and value > r.hi):
            lo = "" if r.lo is None else f"{r.lo:g}"
            hi = "" if r.hi is None else f"{r.hi:g}"
            if r.lo is not None and r.hi is not None:
                raise BadArgument(f"{quote(text)} is not between {lo} and {hi}")
            raise BadArgument(f"{quote(text)} is {'below ' + lo if lo else 'above ' + hi}")
        return value

    return TypeInfo(convert, inner.name, inner.choices, inner.greedy)


def _custom(fn: Callable[..., Any], name: str) -> TypeInfo:
    try:
        takes_ctx = len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):  # a builtin without a signature: one argument
        takes_ctx = False

    def convert(ctx: Any, text: str) -> Any:
        try:
            return fn(ctx, text) if takes_ctx else fn(text)
        except BadArgument:
            raise
        except ValueError as exc:
            raise BadArgument(str(exc) or f"{quote(text)} is not a {name}") from None

    return TypeInfo(convert, name)


@dataclass(frozen=True)
class _As:
    """Marks an ``Annotated[str, ...]`` alias with the converter it stands for."""

    info: TypeInfo


# Aliases of str (so ``text: Rest = ""`` type-checks) that convert differently.
Rest = Annotated[str, _As(TypeInfo(_str, "text", greedy=True))]
"""The rest of the line, verbatim: ``def note(ctx, title: str, body: Rest = "")``."""

OnlineUser = Annotated[str, _As(TypeInfo(_online_user, "user"))]
"""The name of a user online now; the value is their name as the server spells it."""


def _room(ctx: Any, text: str) -> str:
    name = _word(text).removeprefix("#")  # IRC's spelling, as the gateway's users type it
    if not is_valid_room(name):
        raise BadArgument(f"{quote(name)} is not a room name")
    if room_key(name) == LOBBY:
        return LOBBY
    info = ctx.bot.room(name)
    if info is None:
        raise BadArgument(f"I am not in {quote(name)}")
    return str(info.name)


Room = Annotated[str, _As(TypeInfo(_room, "room"))]
"""A room the bot is in (or ``lobby``), with or without ``#``; the value is its name as
the server spells it."""

_BUILTIN: dict[Any, TypeInfo] = {
    str: TypeInfo(_str, "text"),
    int: TypeInfo(_int, "number"),
    float: TypeInfo(_float, "number"),
    bool: TypeInfo(_bool, "yes/no"),
    timedelta: TypeInfo(_duration, "duration"),
}


def optional_inner(annotation: Any) -> Any | None:
    """``T`` for ``T | None`` (or ``Optional[T]``), else None."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1 and len(get_args(annotation)) == 2:
            return rest[0]
    return None


def converter_for(annotation: Any, custom: Mapping[Any, ConverterFn]) -> TypeInfo:
    """The converter for a parameter annotated ``annotation`` (unannotated: ``str``);
    ``custom`` holds the converters registered per type. TypeError if there is none,
    raised when the command is registered rather than when a user first calls it."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return _BUILTIN[str]
    inner = optional_inner(annotation)
    if inner is not None:
        return converter_for(inner, custom)
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        info = converter_for(base, custom)
        for extra in extras:
            if isinstance(extra, _As):
                info = extra.info
            elif isinstance(extra, Convert):
                info = _custom(extra.fn, extra.name or getattr(base, "__name__", "value"))
            elif isinstance(extra, Range):
                info = _ranged(info, extra)
        return info
    if annotation in custom:
        return _custom(custom[annotation], getattr(annotation, "__name__", "value").lower())
    if get_origin(annotation) is Literal:
        words = {str(v).lower(): v for v in get_args(annotation)}
        return TypeInfo(_choice(words, "a choice"), "choice", tuple(words))
    if annotation in _BUILTIN:
        return _BUILTIN[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum(annotation)
    raise TypeError(
        f"no converter for {annotation!r}: register one with bot.converter(...) "
        "or annotate the parameter Annotated[T, Convert(fn)]"
    )
