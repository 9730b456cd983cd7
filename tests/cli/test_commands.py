"""Command parsing and completion: plain functions."""

from __future__ import annotations

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from chatroom_cli.commands import (
    AskDm,
    AskPm,
    Exit,
    Help,
    HistoryOf,
    Invalid,
    Invite,
    Join,
    Members,
    Mode,
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
from chatroom_cli.completion import ChatCompleter, complete, rank_users


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("PM", AskPm()),
        ("pm", AskPm()),
        ("  Pm  ", AskPm()),
        ("PM hello all", SendPm("hello all")),
        ("/pm hello", SendPm("hello")),
        ("DM", AskDm()),
        ("dm bob", AskDm("bob")),
        ("DM bob hi there", SendDm("bob", "hi there")),
        ("/msg bob  hi", SendDm("bob", "hi")),
        ("/dm bob", AskDm("bob")),
        ("EX", Exit()),
        ("ex", Exit()),
        ("/quit", Exit()),
        ("/who", Who()),
        ("/help", Help()),
        ("", Nothing()),
        ("   ", Nothing()),
        ("just chatting", SendPm("just chatting")),
        ("PMs are great", SendPm("PMs are great")),
        ("//shrug", SendPm("/shrug")),
    ],
)
def test_parse(line: str, action: object) -> None:
    assert parse(line) == action


def test_unknown_slash_command() -> None:
    action = parse("/dance")
    assert isinstance(action, Invalid) and "/help" in action.why


USERS = ("alice", "Albert", "bob", "Bobby", "me")


def test_rank_users_prefix_ignoring_case_without_me() -> None:
    assert rank_users("AL", USERS, "me") == ["Albert", "alice"]
    assert rank_users("", USERS, "ME") == ["Albert", "alice", "bob", "Bobby"]
    assert rank_users("m", USERS, "me") == []


def test_recent_correspondents_first() -> None:
    assert rank_users("b", USERS, "me", recent=["Bobby", "ghost"]) == ["Bobby", "bob"]
    assert rank_users("", USERS, "me", recent=["bob", "alice"])[:2] == ["bob", "alice"]


def test_complete_commands() -> None:
    assert complete("P", USERS, "me") == (1, ["PM"])
    assert complete("d", USERS, "me") == (1, ["dm"])
    assert complete("/", USERS, "me")[1] == [
        "/pm",
        "/dm",
        "/msg",
        "/who",
        "/history",
        "/join",
        "/part",
        "/switch",
        "/rooms",
        "/topic",
        "/invite",
        "/mode",
        "/members",
        "/kick",
        "/ban",
        "/unban",
        "/bans",
        "/mute",
        "/unmute",
        "/op",
        "/deop",
        "/voice",
        "/devoice",
        "/help",
        "/quit",
    ]
    assert complete("/history bo", USERS, "me") == (2, ["bob", "Bobby"])
    assert complete("/w", USERS, "me") == (2, ["/who"])


def test_complete_recipient_after_dm() -> None:
    assert complete("DM bo", USERS, "me") == (2, ["bob", "Bobby"])
    assert complete("/msg A", USERS, "me") == (1, ["Albert", "alice"])
    assert complete("DM bob hi", USERS, "me") == (0, [])
    assert complete("PM bo", USERS, "me") == (0, [])


def test_complete_recipient_prompt() -> None:
    assert complete("bobb", USERS, "me", recipient_only=True) == (4, ["Bobby"])
    assert complete("", USERS, "me", recipient_only=True)[1] == ["Albert", "alice", "bob", "Bobby"]


def test_history_command() -> None:
    assert parse("/history") == HistoryOf(None, 20)
    assert parse("/history 50") == HistoryOf(None, 50)
    assert parse("/HISTORY bob") == HistoryOf("bob", 20)
    assert parse("/history bob 5") == HistoryOf("bob", 5)
    assert isinstance(parse("/history 0"), Invalid)
    assert isinstance(parse("/history 101"), Invalid)
    assert isinstance(parse("/history bob five"), Invalid)


def test_a_completed_name_takes_the_space_after_it() -> None:
    def texts(line: str, recipient_only: bool = False) -> list[tuple[str, str]]:
        completer = ChatCompleter(lambda: USERS, lambda: "me", list, recipient_only)
        got = completer.get_completions(Document(line), CompleteEvent(completion_requested=True))
        return [(c.text, c.display_text) for c in got]

    assert texts("DM bo") == [("bob ", "bob"), ("Bobby ", "Bobby")]  # the message is next
    assert texts("/history Al") == [("Albert ", "Albert"), ("alice ", "alice")]
    assert texts("P") == [("PM", "PM")]  # commands as typed
    assert texts("bo", recipient_only=True) == [("bob", "bob"), ("Bobby", "Bobby")]  # to:


@pytest.mark.parametrize(
    ("line", "action"),
    [
        ("/join dev", Join("dev")),
        ("/JOIN #dev s3cr3t", Join("dev", "s3cr3t")),
        ("/join", Invalid("usage: /join <room> [key]")),
        ("/switch #Dev", Switch("Dev")),
        ("#dev", Switch("dev")),
        ("#dev hello there", RoomPm("dev", "hello there")),
        ("/part", Part()),
        ("/part dev off to lunch", Part("dev", "off to lunch")),
        ("/rooms", Rooms()),
        ("/topic", Topic()),
        ("/topic release Friday", Topic(None, "release Friday")),
        ("/topic #dev release", Topic("dev", "release")),
        ("/topic -", Topic(None, "")),
        ("/invite bob", Invite("bob")),
        ("/invite bob #dev", Invite("bob", "dev")),
        ("/mode", Mode()),
        ("/mode +kl key 10", Mode(None, "+kl", ("key", "10"))),
        ("/mode #dev -t", Mode("dev", "-t")),
        ("/members", Members()),
        ("/members #dev", Members("dev")),
    ],
)
def test_room_commands(line: str, action: object) -> None:
    assert parse(line) == action


def test_complete_rooms() -> None:
    rooms = ["lobby", "dev", "Design"]
    assert complete("#d", USERS, "me", rooms=rooms) == (2, ["#Design", "#dev"])
    assert complete("/join de", USERS, "me", rooms=rooms) == (2, ["Design", "dev"])
    assert complete("/switch #l", USERS, "me", rooms=rooms) == (2, ["lobby"])
    assert complete("/invite bo", USERS, "me", rooms=rooms) == (2, ["bob", "Bobby"])
