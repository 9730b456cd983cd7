"""Commands from signatures, converters, usage, help and descriptions: no server needed."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
import pytest

from chatroom_bots import (
    ArgumentError,
    BadArgument,
    Bot,
    Command,
    CommandSpec,
    Context,
    Convert,
    Group,
    Message,
    OnlineUser,
    ParamSpec,
    Plugin,
    Range,
    Rest,
)
from chatroom_bots.commands import next_word, words
from chatroom_bots.converters import MAX_WORD, parse_duration
from chatroom_bots.cooldowns import Cooldown, CooldownMapping


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


@dataclass
class FakeBot:
    users: tuple[str, ...] = ("Alice", "bob")
    prefix: str = "!"


@dataclass
class Ctx:
    bot: FakeBot = field(default_factory=FakeBot)
    sender: str = "alice"


def parse(fn: Any, text: str, **kw: Any) -> tuple[list[Any], dict[str, Any]]:
    return Command(fn, **kw).parse(Ctx(), text)


def problem(fn: Any, text: str) -> str:
    with pytest.raises(ArgumentError) as info:
        parse(fn, text)
    return info.value.problem


# ---------------------------------------------------------------------- words


def test_words_group_double_quotes_but_not_apostrophes() -> None:
    assert list(words('create "Lunch where?" pizza  sushi')) == [
        "create",
        "Lunch where?",
        "pizza",
        "sushi",
    ]
    assert list(words("don't stop")) == ["don't", "stop"]
    assert list(words("\u201ctypographic quotes\u201d too")) == ["typographic quotes", "too"]
    assert next_word("   ", 0) is None
    with pytest.raises(BadArgument, match="quote is not closed"):
        list(words('say "unfinished'))


# ---------------------------------------------------------------------- conversion


def test_typed_positional_parameters_with_defaults() -> None:
    def roll(ctx: Context, dice: int = 1, sides: int = 6) -> str:
        return ""

    assert parse(roll, "") == ([1, 6], {})
    assert parse(roll, "2") == ([2, 6], {})
    assert parse(roll, " 3   20 ") == ([3, 20], {})
    assert problem(roll, "two") == 'dice: "two" is not a whole number'
    assert problem(roll, "1 2 3") == 'too many arguments from "3" on'


def test_every_builtin_converter() -> None:
    def f(
        ctx: Context,
        n: float,
        flag: bool,
        wait: timedelta,
        color: Color,
        mode: Literal["fast", "slow"],
        who: OnlineUser,
    ) -> None: ...

    args, _ = parse(f, "2.5 yes 1h30m green SLOW alice")
    assert args == [2.5, True, timedelta(hours=1, minutes=30), Color.GREEN, "slow", "Alice"]
    assert parse(f, "1 off 10s r fast @BOB")[0][1:] == [
        False,
        timedelta(seconds=10),
        Color.RED,
        "fast",
        "bob",
    ]
    assert problem(f, "nan yes 1m red fast bob") == 'n: "nan" is not a number'
    assert problem(f, "1 maybe 1m red fast bob") == 'flag: "maybe" is not yes or no'
    assert "is not a duration (say 90s" in problem(f, "1 yes 10 red fast bob")
    assert problem(f, "1 yes 1m blue fast bob") == (
        'color: "blue" is not a color: one of red, green, r, g'
    )
    assert problem(f, "1 yes 1m red medium bob") == (
        'mode: "medium" is not a choice: one of fast, slow'
    )
    assert problem(f, "1 yes 1m red fast carol") == 'who: "carol" is not online'
    assert problem(f, "1 yes 1m red fast") == "who is missing"


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1w2d") == timedelta(days=9)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    for bad in ("", "10", "m", "10x", "1h 30", "-5m"):
        with pytest.raises(BadArgument):
            parse_duration(bad)
    with pytest.raises(BadArgument, match="too long a time"):
        parse_duration("99999999999d")


def test_rest_of_the_line_optional_and_variadic() -> None:
    def say(ctx: Context, *, text: str) -> None: ...

    def note(ctx: Context, title: str, body: Rest = "") -> None: ...

    def poll(ctx: Context, question: str, *options: str) -> None: ...

    def maybe(ctx: Context, n: int | None = None) -> None: ...

    assert parse(say, '  hello   "world ') == ([], {"text": 'hello   "world'})
    assert problem(say, "  ") == "text is missing"
    assert parse(note, "todo buy milk, eggs") == (["todo", "buy milk, eggs"], {})
    assert parse(note, "todo") == (["todo", ""], {})
    assert parse(poll, '"Lunch?" pizza sushi') == (["Lunch?", "pizza", "sushi"], {})
    assert parse(poll, "Lunch?") == (["Lunch?"], {})
    assert parse(maybe, "") == ([None], {})
    assert parse(maybe, "4") == ([4], {})


def hexbyte(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value < 256:
        raise ValueError(f"{text} is not a byte")
    return value


def test_range_and_custom_converters() -> None:
    def f(
        ctx: Context, dice: Annotated[int, Range(1, 100)], b: Annotated[int, Convert(hexbyte)]
    ) -> None: ...

    assert parse(f, "5 ff") == ([5, 255], {})
    assert problem(f, "0 ff") == 'dice: "0" is not between 1 and 100'
    assert problem(f, "5 1ff") == "b: 1ff is not a byte"
    assert problem(f, "5 zz").startswith("b: invalid literal")

    plugin = Plugin("p")

    @dataclass
    class Point:
        x: int
        y: int

    @plugin.converter(Point)
    def point(ctx: Any, text: str) -> Point:
        x, _, y = text.partition(",")
        return Point(int(x), int(y))

    def go(ctx: Context, to: Point) -> None: ...

    go.__annotations__["to"] = Point  # a local class: give the annotation itself
    plugin.command()(go)
    assert plugin.commands["go"].parse(Ctx(), "3,4") == ([Point(3, 4)], {})
    with pytest.raises(ArgumentError, match="to: "):
        plugin.commands["go"].parse(Ctx(), "3;4")


def test_bad_signatures_fail_when_registered() -> None:
    class Unknown:
        pass

    def no_ctx() -> None: ...

    def kwargs(ctx: Context, **opts: str) -> None: ...

    def after_rest(ctx: Context, text: Rest, n: int) -> None: ...

    def unknown(ctx: Context, thing: Any) -> None: ...

    unknown.__annotations__["thing"] = Unknown
    for fn, match in (
        (no_ctx, "first parameter takes the context"),
        (kwargs, r"\*\*opts"),
        (after_rest, "comes after the rest of the line"),
        (unknown, "no converter for"),
    ):
        with pytest.raises(TypeError, match=match):
            Command(fn)


def test_the_01_calling_convention_is_kept() -> None:
    def legacy(msg: Message, args: str) -> str:
        return args

    def untyped(msg, args):  # type: ignore[no-untyped-def]
        return args

    def explicit(ctx: Context, line: str) -> str:
        return line

    for fn in (legacy, untyped):
        cmd = Command(fn)
        assert cmd.raw
        assert cmd.parse(Ctx(), '  2d6 "x  ') == (['2d6 "x'], {})
    assert not Command(explicit).raw
    assert Command(explicit, raw=True).raw


def test_overlong_arguments_are_refused_fast_and_not_echoed_whole() -> None:
    def f(ctx: Context, n: int, s: str) -> None: ...

    huge = "9" * 4000
    t0 = time.perf_counter()
    text = problem(f, f"{huge} x")
    assert time.perf_counter() - t0 < 0.5
    assert "is too long" in text and len(text) < 100
    assert problem(f, "1") == "s is missing"
    assert len(problem(f, "1 a " + "z" * 3000)) < 100  # the extra word is cut in the reply
    assert MAX_WORD >= 20


# ---------------------------------------------------------------------- usage and help


def test_usage_help_and_description() -> None:
    def roll(ctx: Context, dice: int = 1, sides: int = 6, *, label: str = "") -> None:
        """Roll DICE dice with SIDES sides.

        Rolls are fair."""

    def paint(ctx: Context, color: Color = Color.RED, *, note: str) -> None: ...

    cmd = Command(roll, aliases=["r", "R"])
    assert cmd.usage("!") == "!roll [dice=1] [sides=6] [label...]"
    assert cmd.help == "Roll DICE dice with SIDES sides."
    assert cmd.help_text("!") == (
        "!roll [dice=1] [sides=6] [label...]: Roll DICE dice with SIDES sides. Rolls are fair."
        " (also !r, !r)"
    )
    assert Command(paint).usage("?") == "?paint [red|green=red] <note...>"
    spec = cmd.describe("!")
    assert spec == CommandSpec(
        name="roll",
        usage="!roll [dice=1] [sides=6] [label...]",
        help="Roll DICE dice with SIDES sides.",
        aliases=["r", "r"],
        params=[
            ParamSpec(name="dice", type="number", required=False, default="1"),
            ParamSpec(name="sides", type="number", required=False, default="6"),
            ParamSpec(name="label", type="text", required=False, greedy=True),
        ],
    )
    wire = msgspec.json.encode(spec)
    again = msgspec.json.decode(wire, type=CommandSpec)
    assert again == spec
    assert [p.name for p in again.params] == ["dice", "sides", "label"]
    assert again.params[0].type == "number" and again.params[0].default == "1"
    assert again.params[2].greedy and not again.params[2].required


def test_groups_resolve_subcommands_and_describe_them() -> None:
    poll = Group(None, "poll", help="polls")

    @poll.command(aliases=["new"])
    def create(ctx: Context, question: str, *options: str) -> None:
        """Start a poll."""

    vote = Group(None, "vote")
    poll.subcommands["vote"] = vote
    vote.parent = poll

    @vote.command()
    def cast(ctx: Context, option: int) -> None: ...

    assert poll.resolve("new Q a b") == (poll.subcommands["create"], " Q a b")
    assert poll.resolve("vote cast 2")[0] is vote.subcommands["cast"]
    assert poll.resolve("nothing")[0] is poll
    assert poll.subcommands["create"].usage("!") == "!poll create <question> [options...]"
    with pytest.raises(ArgumentError, match='"nothing" is not a subcommand'):
        poll.parse(Ctx(), "nothing")
    with pytest.raises(ArgumentError, match="name a subcommand"):
        poll.parse(Ctx(), "")
    spec = poll.describe("!")
    assert [s.name for s in spec.subcommands] == ["create", "vote"]
    assert spec.subcommands[1].subcommands[0].usage == "!poll vote cast <option>"
    assert "!poll create: Start a poll." in poll.help_text("!")
    with pytest.raises(ValueError, match="already a subcommand"):
        poll.command("new")(cast)


def test_bot_describe_is_what_a_bot_would_announce() -> None:
    bot = Bot("dice")

    @bot.command()
    def roll(ctx: Context, dice: int = 1) -> str:
        """Roll dice."""
        return ""

    @bot.command(hidden=True)
    def secret(ctx: Context) -> None: ...

    specs = bot.describe()
    assert [s.name for s in specs] == ["help", "roll"]
    decoded = msgspec.json.decode(msgspec.json.encode(specs), type=list[CommandSpec])
    assert decoded == specs


# ---------------------------------------------------------------------- cooldowns


def test_cooldown_windows_and_buckets() -> None:
    m = CooldownMapping(Cooldown(per=10, rate=2))
    alice = m.key("Alice", ("dm", "alice"))
    assert alice == m.key("ALICE", ("room", "lobby"))  # per user, anywhere
    assert m.retry_after(alice, 0) == 0
    m.consume(alice, 0)
    m.consume(alice, 1)
    assert m.retry_after(alice, 2) == pytest.approx(8)
    assert m.should_warn(alice, 2) and not m.should_warn(alice, 5)
    assert m.retry_after(alice, 9.5) == pytest.approx(0.5)
    assert m.retry_after(alice, 10) == 0  # the use at 0 has left the window
    place = CooldownMapping(Cooldown(per=5, bucket="place"))
    assert place.key("a", ("room", "lobby")) == place.key("b", ("room", "lobby"))
    assert place.key("a", ("dm", "a")) != place.key("a", ("room", "lobby"))
    everyone = CooldownMapping(Cooldown(per=5, bucket="global"))
    assert everyone.key("a", ("dm", "a")) == everyone.key("b", ("room", "x"))
    with pytest.raises(ValueError):
        Cooldown(per=0)
    with pytest.raises(ValueError):
        Cooldown(per=1, bucket="room")  # type: ignore[arg-type]


def test_cooldown_keys_are_swept() -> None:
    m = CooldownMapping(Cooldown(per=1))
    for i in range(10_000):
        m.consume(("user", str(i)), float(i // 1000))
    assert len(m._uses) <= 5000
