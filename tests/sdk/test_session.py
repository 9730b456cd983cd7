"""The client session with no server: bytes in, events out (as h11's test_connection)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from chatroom import (
    AuthError,
    Banned,
    Broadcast,
    ChatTimeout,
    DirectMessage,
    DmSent,
    MessageTooLong,
    Reconnected,
    ServerNotice,
    UserOffline,
)
from chatroom.errors import FrameTooLarge
from chatroom.protocol import DmCommand, LoginOk, PmCommand, UsersCommand
from chatroom.session import (
    MAX_OWN,
    PING,
    BadFrame,
    ClientSession,
    Ended,
    Refused,
    Reply,
    SessionEvent,
    UsersUpdated,
    reconnect_delay,
)


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def sent(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(data)
    return out


def feed(session: ClientSession, data: bytes, *, bytewise: bool = False) -> list[SessionEvent]:
    if not bytewise:
        return session.receive_data(data, 0.0)
    events: list[SessionEvent] = []
    for i in range(len(data)):
        events += session.receive_data(data[i : i + 1], 0.0)
    return events


def logged_in(name: str = "alice", users: tuple[str, ...] = ("alice", "bob")) -> ClientSession:
    s = ClientSession()
    s.connection_made(0.0)
    rid, _ = s.login(name, "correct horse")
    feed(s, frame(type="login_ok", username=name, new_user=False, users=list(users), id=rid))
    return s


@pytest.mark.parametrize("bytewise", [False, True])
def test_login_reply_is_matched_by_id_and_keeps_credentials(bytewise: bool) -> None:
    s = ClientSession()
    assert s.connection_made(0.0) == b""  # never logged in: nothing to send
    rid, data = s.login("Alice", "correct horse")
    assert sent(data) == {
        "command": "login",
        "username": "Alice",
        "password": "correct horse",
        "features": ["users_delta"],
        "id": rid,
    }
    ok = frame(type="login_ok", username="alice", new_user=True, users=["alice"], id=rid)
    (event,) = feed(s, ok, bytewise=bytewise)
    assert isinstance(event, Reply) and event.rid == rid
    assert s.username == "alice" and s.users == ("alice",)
    assert s.may_reconnect("network") and not s.may_reconnect("session_replaced")


def test_errors_are_typed_and_tied_to_their_request() -> None:
    s = logged_in()
    rid, _ = s.request(PmCommand(message="hi"))
    events = feed(s, frame(type="error", code="user_offline", message="x", id=rid))
    assert len(events) == 1 and isinstance(events[0], Refused)
    assert isinstance(events[0].error, UserOffline) and events[0].rid == rid
    # A reply to a request that was given up on is ignored.
    late, _ = s.request(PmCommand(message="late"))
    s.forget_request(late)
    assert feed(s, frame(type="ack", command="pm", id=late)) == []
    # An error that answers no request is a notice.
    (notice,) = feed(s, frame(type="error", code="rate_limited", message="slow"))
    assert isinstance(notice, ServerNotice) and notice.error.code == "rate_limited"


def test_pushes_and_messages_one_byte_at_a_time() -> None:
    s = logged_in()
    data = b"".join(
        [
            frame(type="broadcast", message="hi", ts=1.0, **{"from": "bob"}),
            frame(type="users_delta", joined=["carol"], left=["bob"], count=2),
            frame(type="from_a_later_version", x=1),  # ignored (PROTOCOL.md §Frames)
            b'{"type":"broadcast","message":5}\n',  # malformed: skipped, reported
            frame(type="bye", reason="server_shutdown"),
        ]
    )
    events = feed(s, data, bytewise=True)
    assert events[0] == Broadcast(sender="bob", message="hi", ts=1.0)
    assert events[1] == UsersUpdated(("carol",), ("bob",))
    assert isinstance(events[2], BadFrame)
    assert events[3] == Ended("server_shutdown")
    assert len(events) == 4
    assert s.users == ("alice", "carol")
    assert s.may_reconnect("server_shutdown")  # credentials kept: a restart comes back


def test_a_delta_that_does_not_add_up_asks_for_the_whole_list() -> None:
    s = logged_in()
    feed(s, frame(type="users_delta", joined=["carol"], count=4))
    assert s.data_to_send() == b'{"command":"users"}\n'
    assert s.data_to_send() == b""
    events = feed(s, frame(type="users", users=["alice", "bob", "carol", "dave"]))
    assert events == [UsersUpdated((), ())] and s.user_count == 4


def test_a_swarm_session_keeps_no_user_list() -> None:
    s = ClientSession(track_users=False)
    rid, _ = s.login("bot", "correct horse")
    (reply,) = feed(
        s, frame(type="login_ok", username="bot", new_user=False, users=["a", "b"], id=rid)
    )
    assert isinstance(reply, Reply) and isinstance(reply.event, LoginOk)
    assert reply.event.users == ()  # skipped, not decoded
    assert feed(s, frame(type="users_delta", joined=["c"], count=99)) == []
    assert s.user_count == 0 and s.data_to_send() == b""


def test_relogin_after_a_reconnect_and_its_failure() -> None:
    s = logged_in()
    pending, _ = s.request(PmCommand(message="in flight"))
    assert s.connection_lost() == [pending]
    assert s.username == "alice"  # still ours while we reconnect
    relogin = sent(s.connection_made(10.0))
    assert relogin["username"] == "alice" and relogin["password"] == "correct horse"
    ok = frame(type="login_ok", username="alice", new_user=False, users=["alice"], id=relogin["id"])
    (event,) = feed(s, ok)
    assert isinstance(event, Reconnected) and event.result.users == ("alice",)
    # Next time the password is refused: the session ends and never retries it.
    s.connection_lost()
    relogin = sent(s.connection_made(20.0))
    bad = frame(type="error", code="bad_credentials", message="no", id=relogin["id"])
    assert feed(s, bad) == [Ended("bad_credentials")]
    assert not s.may_reconnect("network") and not s.can_relogin


def test_a_session_ended_by_a_server_ban_never_retries() -> None:
    """docs/PROTOCOL.md §Moderation, Server-wide: the session ended by a ban (an
    error banned, then bye disconnected) ends with the ban's error, and stops."""
    s = logged_in()
    ban = frame(type="error", code="banned", message="your address is banned", reason="spam")
    notice, end = feed(s, ban + frame(type="bye", reason="disconnected"))
    assert isinstance(notice, ServerNotice) and isinstance(notice.error, Banned)
    # The bye that follows the ban ends the session for good: no re-login to refuse.
    assert end == Ended("banned", notice.error) and notice.error.reason == "spam"
    assert not s.may_reconnect("banned") and not s.can_relogin


def test_a_relogin_refused_by_a_server_ban_never_retries() -> None:
    """A ban made while the connection was down: the re-login is refused, and stops."""
    s = logged_in()
    s.connection_lost()
    relogin = sent(s.connection_made(10.0))
    banned = frame(
        type="error", code="banned", message="banned", id=relogin["id"], expires=1795467600.5
    )
    (end,) = feed(s, banned)
    assert isinstance(end, Ended) and end.reason == "banned"
    assert isinstance(end.error, Banned) and end.error.expires == 1795467600.5
    assert not s.may_reconnect("banned") and not s.can_relogin


def test_a_relogin_refused_for_now_ends_the_connection_and_may_reconnect() -> None:
    """docs/RELIABILITY.md F5: not logged in, the connection is of no use; the caller
    closes it and reconnects after its backoff, with the same credentials."""
    s = logged_in()
    s.connection_lost(resend=True)
    relogin = sent(s.connection_made(10.0))
    down = frame(type="error", code="unavailable", message="try again", id=relogin["id"])
    assert feed(s, down) == [Ended("unavailable")]
    assert s.may_reconnect("unavailable") and s.can_relogin
    s.connection_lost(resend=True)
    assert sent(s.connection_made(20.0))["username"] == "alice"


def test_a_refused_first_login_is_a_refusal_not_an_end() -> None:
    s = ClientSession()
    rid, _ = s.login("alice", "wrong password")
    (event,) = feed(s, frame(type="error", code="bad_credentials", message="no", id=rid))
    assert isinstance(event, Refused) and isinstance(event.error, AuthError)
    assert not s.can_relogin


def test_logout_and_bye_exit_end_reconnecting() -> None:
    s = logged_in()
    assert s.logout() == b'{"command":"exit"}\n'
    assert not s.may_reconnect("network")
    s2 = logged_in()
    assert feed(s2, frame(type="bye", reason="exit")) == [Ended("exit")]
    assert not s2.may_reconnect("network")


def test_server_full_ends_the_session() -> None:
    s = ClientSession()
    events = feed(s, frame(type="error", code="server_full", message="full"))
    assert isinstance(events[0], ServerNotice) and events[1] == Ended("server_full")


def test_keepalive_pings_when_quiet_and_gives_up_on_a_silent_server() -> None:
    s = ClientSession(keepalive=30.0, timeout=10.0)
    s.connection_made(0.0)
    assert s.keepalive(29.0) == b""
    assert s.keepalive(30.0) == PING  # we sent nothing for 30 s
    s.data_sent(30.0)
    assert s.keepalive(31.0) == b""  # one ping per quiet spell, not one per tick
    s.receive_data(frame(type="pong"), 32.0)
    s.data_sent(40.0)
    assert s.keepalive(62.0) == PING  # the server was quiet for 30 s
    s.data_sent(62.0)
    assert s.keepalive(71.0) == b""
    with pytest.raises(ChatTimeout):
        s.keepalive(72.0)  # 40 s of silence: 30 + 10


def test_a_steady_stream_still_pings() -> None:
    """Receiving all the time must not stop us sending: the server would close us for
    silence (PROTOCOL.md §Timeouts)."""
    s = ClientSession(keepalive=30.0)
    s.connection_made(0.0)
    for t in range(0, 31):
        s.receive_data(frame(type="users_delta", count=0), float(t))
    assert s.keepalive(30.0) == PING


def test_oversized_frames_raise() -> None:
    s = ClientSession(max_frame=10)
    with pytest.raises(FrameTooLarge):
        s.receive_data(b"x" * 11, 0.0)


def test_request_ids_are_fresh_and_replies_to_users_refresh_the_list() -> None:
    s = logged_in()
    r1, _ = s.request(UsersCommand())
    r2, _ = s.request(UsersCommand())
    assert r1 != r2
    (event,) = feed(s, frame(type="users", users=["bob"], id=r2))
    assert isinstance(event, Reply) and s.users == ("bob",)


def test_reconnect_delay_backs_off_with_jitter_and_a_cap() -> None:
    rng = random.Random(1)
    delays = [reconnect_delay(a, 30.0, rng) for a in range(12)]
    assert 0.125 <= delays[0] <= 0.25
    assert all(d <= 30.0 for d in delays) and delays[-1] >= 15.0
    assert reconnect_delay(10_000, 5.0, rng) <= 5.0  # no overflow for long outages


def test_a_newer_server_is_noted_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    s = ClientSession()
    rid, _ = s.login("alice", "correct horse")
    ok = frame(
        type="login_ok", username="alice", new_user=False, users=["alice"], version=3, id=rid
    )
    (event,) = feed(s, ok)
    assert isinstance(event, Reply) and s.logged_in
    assert "protocol version 3" in caplog.text  # this SDK knows 2 (docs/PROTOCOL.md §Rooms)


def bcast(seq: int, text: str, replay: bool = False) -> bytes:
    fields: dict[str, Any] = {"from": "bob", "message": text, "ts": 1.0, "seq": seq}
    if replay:
        fields["replay"] = True
    return frame(type="broadcast", **fields)


def test_the_cursor_drops_duplicates_and_a_relogin_resumes_from_it() -> None:
    s = ClientSession()
    rid, _ = s.login("alice", "correct horse")
    ok = frame(
        type="login_ok",
        username="alice",
        new_user=False,
        users=["alice"],
        seq=10,
        epoch="e1",
        id=rid,
    )
    feed(s, ok)
    assert s.cursor == 10 and s.epoch == "e1"  # nothing before the login is ours to miss
    events = feed(s, bcast(11, "a") + bcast(11, "a again") + bcast(9, "old") + bcast(12, "b"))
    assert [e.message for e in events] == ["a", "b"]  # type: ignore[union-attr]
    s.connection_lost(resend=True)
    relogin = sent(s.connection_made(5.0))
    assert (relogin["since"], relogin["epoch"]) == (12, "e1")


def test_a_resumed_login_completes_after_its_replay() -> None:
    s = ClientSession()
    rid, data = s.login("alice", "correct horse", since=3)
    assert sent(data)["since"] == 3
    ok = frame(
        type="login_ok",
        username="alice",
        new_user=False,
        users=["alice"],
        seq=6,
        epoch="e",
        replay=True,
        id=rid,
    )
    assert feed(s, ok) == []  # not done yet: the replay follows
    events = feed(
        s,
        frame(type="replay_truncated", oldest_seq=5)
        + bcast(5, "r1", replay=True)
        + bcast(6, "r2", replay=True)
        + frame(type="replay_done", count=2, seq=6),
    )
    assert [e.message for e in events[:2]] == ["r1", "r2"]  # type: ignore[union-attr]
    reply = events[2]
    assert isinstance(reply, Reply) and reply.rid == rid and reply.result is not None
    assert (reply.result.replayed, reply.result.replay_truncated, reply.result.seq) == (2, True, 6)
    assert s.cursor == 6


def test_unacked_sends_are_resent_after_a_reconnect_and_acked_ones_are_not() -> None:
    s = logged_in()
    acked, _ = s.request(PmCommand(message="acked"))
    rid, data = s.request(PmCommand(message="lost ack"))
    cid = sent(data)["cid"]
    assert cid and cid != sent(s.request(PmCommand(message="x"))[1])["cid"]
    feed(s, frame(type="ack", command="pm", seq=1, id=acked))
    failed = s.connection_lost(resend=True)
    assert rid not in failed and acked not in failed
    relogin = sent(s.connection_made(1.0))
    assert s.data_to_send() == b""  # nothing is resent before the login is accepted
    ok = frame(type="login_ok", username="alice", new_user=False, users=["alice"], id=relogin["id"])
    (event,) = feed(s, ok)
    assert isinstance(event, Reconnected)
    resent = [json.loads(line) for line in s.data_to_send().splitlines()]
    assert {(f["message"], f["cid"]) for f in resent} >= {("lost ack", cid)}
    assert all(f["message"] != "acked" for f in resent)
    (reply,) = feed(s, frame(type="ack", command="pm", seq=2, id=rid))
    assert isinstance(reply, Reply) and reply.rid == rid
    # Without reconnecting, an unacked send simply fails.
    s2 = logged_in()
    r2, _ = s2.request(PmCommand(message="gone"))
    assert s2.connection_lost() == [r2]


def test_a_send_made_during_the_relogin_is_written_once_on_that_connection() -> None:
    """docs/RELIABILITY.md F11 (seed 7201): a dm the application sent after the
    reconnect but before the re-login was accepted went out at once, pipelined after
    the login, and again with the resends at login_ok: the same request twice on one
    connection (stored once by its cid, answered twice)."""
    s = logged_in()
    lost, _ = s.request(PmCommand(message="lost ack"))
    s.connection_lost(resend=True)
    relogin = sent(s.connection_made(1.0))
    rid, data = s.request(DmCommand(to="bob", message="during the relogin"))
    assert sent(data)["id"] == rid  # written now, after the login (pipelined)
    ok = frame(type="login_ok", username="alice", new_user=False, users=["alice"], id=relogin["id"])
    feed(s, ok)
    resent = [json.loads(line) for line in s.data_to_send().splitlines()]
    assert [f["id"] for f in resent] == [lost]  # not the dm again
    # A reconnect before its ack carries it over like any unacked send.
    s.connection_lost(resend=True)
    relogin = sent(s.connection_made(2.0))
    ok = frame(type="login_ok", username="alice", new_user=False, users=["alice"], id=relogin["id"])
    feed(s, ok)
    resent = [json.loads(line) for line in s.data_to_send().splitlines()]
    assert sorted(f["id"] for f in resent) == sorted([lost, rid])


# ------------------------------------------------------------------ issue 33: own messages, limits


def ok_frame(rid: int, seq: int, *, replay: bool = False, **extra: Any) -> bytes:
    fields: dict[str, Any] = {"seq": seq, "epoch": "e", **extra}
    if replay:
        fields["replay"] = True
    return frame(
        type="login_ok", username="alice", new_user=False, users=["alice"], id=rid, **fields
    )


def logged_in_at(seq: int, **extra: Any) -> ClientSession:
    """alice, logged in at ``seq`` with the message log."""
    s = ClientSession()
    s.connection_made(0.0)
    rid, _ = s.login("alice", "correct horse")
    feed(s, ok_frame(rid, seq, **extra))
    return s


def msg(seq: int, text: str, *, sender: str = "bob", to: str | None = None, **extra: Any) -> bytes:
    fields: dict[str, Any] = {"from": sender, "message": text, "ts": 1.0, "seq": seq, **extra}
    if to is None:
        return frame(type="broadcast", **fields)
    return frame(type="dm", to=to, **fields)


def relogin(s: ClientSession, seq: int, *, replay: bool = True) -> tuple[dict[str, Any], bytes]:
    """Cut and log in again; the re-login sent, and the login_ok for it."""
    s.connection_lost(resend=True)
    login = sent(s.connection_made(1.0))
    return login, ok_frame(login["id"], seq, replay=replay)


def test_an_acked_own_message_is_never_passed_back_by_a_resume() -> None:
    """Bob's REPL repeated his own last line after a server restart: the cursor moved on
    what arrived but not on the acks of our own sends, so the resume replayed them."""
    s = logged_in_at(10)
    pm, _ = s.request(PmCommand(message="mine"))
    dm, _ = s.request(DmCommand(to="bob", message="my dm"))
    feed(s, frame(type="ack", command="pm", seq=11, id=pm))
    feed(s, frame(type="ack", command="dm", to="bob", seq=12, id=dm))
    assert s.cursor == 12
    login, ok = relogin(s, 12, replay=False)
    assert login["since"] == 12  # nothing of ours comes back
    # A server that replays them anyway (as one that got since=10 would): dropped.
    s2 = logged_in_at(10)
    pm, _ = s2.request(PmCommand(message="mine"))
    feed(s2, frame(type="ack", command="pm", seq=11, id=pm))
    login, ok = relogin(s2, 11)
    events = feed(
        s2,
        ok
        + msg(11, "mine", sender="alice", replay=True)
        + frame(type="replay_done", count=1, seq=11),
    )
    (back,) = events
    assert isinstance(back, Reconnected) and back.replayed == 0


def test_an_ack_ahead_of_the_stream_does_not_skip_what_is_below_it() -> None:
    """In a cluster the ack of seq 50 can arrive before another node's broadcast of 49,
    and the seqs of DMs between others never arrive: the cursor must not jump to an ack."""
    s = logged_in_at(48)
    rid, _ = s.request(PmCommand(message="mine"))
    feed(s, frame(type="ack", command="pm", seq=50, id=rid))
    assert s.cursor == 48  # 49 may still come
    (late,) = feed(s, msg(49, "from another node"))
    assert isinstance(late, Broadcast) and late.message == "from another node"
    assert s.cursor == 50  # 49 passed out, 50 ours: contiguous
    # A gap below our ack (52: 51 may be a DM between two others, or still coming).
    rid, _ = s.request(PmCommand(message="mine too"))
    feed(s, frame(type="ack", command="pm", seq=52, id=rid))
    assert s.cursor == 50
    login, ok = relogin(s, 54)
    assert login["since"] == 50
    events = feed(
        s,
        ok
        + msg(51, "missed", replay=True)
        + msg(52, "mine too", sender="alice", replay=True)  # ours: dropped
        + msg(54, "missed too", replay=True)
        + frame(type="replay_done", count=3, seq=54),
    )
    assert [e.message for e in events[:-1]] == ["missed", "missed too"]  # type: ignore[union-attr]
    assert isinstance(events[-1], Reconnected) and events[-1].replayed == 2
    assert s.cursor == 54


def test_an_own_message_stored_before_its_ack_was_lost_is_known_by_its_cid() -> None:
    """The server stored our pm, the connection broke before the ack: the replay brings it
    back with the cid we sent it with (docs/PROTOCOL.md §Resume), and the resend gets the
    original ack. It is ours: not passed out, and the cursor may pass it."""
    s = logged_in_at(10)
    rid, data = s.request(PmCommand(message="in flight"))
    cid = sent(data)["cid"]
    login, ok = relogin(s, 11)
    assert login["since"] == 10
    events = feed(
        s,
        ok
        + msg(11, "in flight", sender="alice", cid=cid, replay=True)
        + frame(type="replay_done", count=1, seq=11),
    )
    (back,) = events
    assert isinstance(back, Reconnected) and back.replayed == 0
    resent = [json.loads(line) for line in s.data_to_send().splitlines()]
    assert [(f["message"], f["cid"]) for f in resent] == [("in flight", cid)]
    (reply,) = feed(s, frame(type="ack", command="pm", seq=11, id=rid))
    assert isinstance(reply, Reply) and s.cursor == 11
    # Another of our cids (an earlier run of the program) is not this session's send: it
    # comes out, as our own message.
    login, ok = relogin(s, 12)
    events = feed(
        s,
        ok
        + msg(12, "from an earlier run", sender="alice", cid="other-1", replay=True)
        + frame(type="replay_done", count=1, seq=12),
    )
    assert isinstance(events[0], Broadcast) and events[0].sender == "alice"


@pytest.mark.parametrize("fate", ["timed out", "unavailable"])
def test_an_own_message_whose_outcome_was_unknown_is_known_by_its_cid(fate: str) -> None:
    """docs/RELIABILITY.md F1: a pm whose caller gave up (ChatTimeout: the client forgets
    the request) or that was refused unavailable (a commit cut short may still have
    stored it) comes back in a replay with our cid: it is ours, not passed out."""
    s = logged_in_at(10)
    rid, data = s.request(PmCommand(message="unsure"))
    cid = sent(data)["cid"]
    if fate == "timed out":
        s.forget_request(rid)
    else:
        (refused,) = feed(s, frame(type="error", code="unavailable", message="try", id=rid))
        assert isinstance(refused, Refused)
    _login, ok = relogin(s, 12)
    assert s.data_to_send() == b""  # not resent: its caller has its answer
    events = feed(
        s,
        ok
        + msg(11, "unsure", sender="alice", cid=cid, replay=True)
        + msg(12, "someone else's", sender="bob", replay=True)
        + frame(type="replay_done", count=2, seq=12),
    )
    assert [e.message for e in events[:-1]] == ["someone else's"]  # type: ignore[union-attr]
    assert isinstance(events[-1], Reconnected) and s.cursor == 12


def test_an_own_message_sent_again_by_send_command_with_its_cid_is_known() -> None:
    """docs/RELIABILITY.md F12 (seed 7201): a program sent a pm, lost its client, and
    sent it again with its cid through send_command on a new client (as after a
    restart); that send's outcome unknown, the next resume replayed it: it is ours."""
    s = logged_in_at(10)
    s.send(PmCommand(message="again", cid="first-client-7"))
    _login, ok = relogin(s, 11)
    events = feed(
        s,
        ok
        + msg(11, "again", sender="alice", cid="first-client-7", replay=True)
        + frame(type="replay_done", count=1, seq=11),
    )
    (back,) = events
    assert isinstance(back, Reconnected) and back.replayed == 0 and s.cursor == 11


def test_dms_we_sent_come_out_as_dm_sent_never_as_direct_messages() -> None:
    """An on_dm hook that answers event.sender DMed itself in a loop after a restart: a DM
    the user sent is a DmSent, whether replayed, from another session or to oneself."""
    s = logged_in_at(10)
    _login, ok = relogin(s, 12)
    events = feed(
        s,
        ok
        + msg(11, "sent elsewhere", sender="ALICE", to="bob", replay=True)
        + msg(12, "to me", to="alice", replay=True)
        + frame(type="replay_done", count=2, seq=12),
    )
    assert events[0] == DmSent("ALICE", "bob", "sent elsewhere", 1.0, 11, True)
    assert isinstance(events[1], DirectMessage) and events[1].sender == "bob"
    # A DM to ourselves: its ack does not hide it, whichever comes first; it comes out
    # once, as DmSent.
    for ack_first in (True, False):
        seq = 13 if ack_first else 14
        rid, _ = s.request(DmCommand(to="Alice", message="note"))
        ack = frame(type="ack", command="dm", to="alice", seq=seq, id=rid)
        note = msg(seq, "note", sender="alice", to="alice")
        events = feed(s, ack + note if ack_first else note + ack)
        notes = [e for e in events if not isinstance(e, Reply)]
        assert notes == [DmSent("alice", "alice", "note", 1.0, seq, False)]
        assert s.cursor == seq
    # Cut before it arrived: the replay has it, with our cid; still passed out once.
    rid, data = s.request(DmCommand(to="alice", message="cut note"))
    _login, ok = relogin(s, 15)
    replayed = msg(15, "cut note", sender="alice", to="alice", cid=sent(data)["cid"], replay=True)
    events = feed(s, ok + replayed + frame(type="replay_done", count=1, seq=15))
    assert events[0] == DmSent("alice", "alice", "cut note", 1.0, 15, True)
    assert b"cut note" in s.data_to_send()  # resent; its ack is the original's
    (reply,) = feed(s, frame(type="ack", command="dm", to="alice", seq=15, id=rid))
    assert isinstance(reply, Reply) and s.cursor == 15


def test_messages_over_the_servers_limits_are_refused_before_sending() -> None:
    s = logged_in_at(10, limits={"max_frame": 1000, "max_message": 400})
    with pytest.raises(MessageTooLong) as long:
        s.request(PmCommand(message="x" * 1_048_576))
    assert str(long.value.message) == "message is 1,048,576 characters; the limit is 400"
    assert (long.value.code, long.value.length, long.value.limit) == ("bad_request", 1_048_576, 400)
    with pytest.raises(MessageTooLong) as large:
        s.request(DmCommand(to="bob", message="\x01" * 400))  # 6 bytes each as JSON
    assert large.value.code == "too_large"
    assert large.value.message.endswith("bytes as a frame; the limit is 1,000")
    with pytest.raises(MessageTooLong):
        s.send(PmCommand(message="y" * 401))
    assert s.connection_lost(resend=True) == []  # nothing was left pending
    relogin_sent = sent(s.connection_made(1.0))
    feed(s, ok_frame(relogin_sent["id"], 10, limits={"max_frame": 1000, "max_message": 400}))
    assert s.data_to_send() == b""  # nor is anything resent
    _rid, data = s.request(PmCommand(message="z" * 400))  # at the limit: fine
    assert sent(data)["message"] == "z" * 400


def test_a_frame_the_server_refused_is_never_sent_again() -> None:
    """A server that announced no limits closes a connection on a frame over its own
    (too_large, without the frame's id): the SDK resent it after every reconnect."""
    s = logged_in_at(10)
    small, _ = s.request(PmCommand(message="small"))
    big, _ = s.request(PmCommand(message="x" * 100_000))
    events = feed(s, frame(type="error", code="too_large", message="frame exceeds 65536 bytes"))
    (refused,) = events
    assert isinstance(refused, Refused) and refused.rid == big
    assert isinstance(refused.error, MessageTooLong) and refused.error.code == "too_large"
    assert "100,0" in refused.error.message
    assert s.connection_lost(resend=True) == []
    login = sent(s.connection_made(1.0))
    feed(s, ok_frame(login["id"], 10))
    resent = [json.loads(line) for line in s.data_to_send().splitlines()]
    assert [f["message"] for f in resent] == ["small"]
    assert feed(s, frame(type="ack", command="pm", seq=11, id=small))[0].rid == small  # type: ignore[union-attr]


def test_a_refused_send_is_not_resent() -> None:
    """A pm the server refused (rate_limited, unavailable, ...) was kept for the resend:
    after a reconnect it was delivered although its caller had been told it was not."""
    s = logged_in_at(10)
    rid, _ = s.request(PmCommand(message="refused"))
    (refused,) = feed(s, frame(type="error", code="rate_limited", message="slow", id=rid))
    assert isinstance(refused, Refused)
    _login, ok = relogin(s, 10, replay=False)
    feed(s, ok)
    assert s.data_to_send() == b""


def test_acked_seqs_kept_above_a_gap_are_bounded() -> None:
    """A sender that receives nothing while others' DMs leave a gap below its acks: one
    kept per send, without a bound; past it the oldest counts as settled."""
    s = logged_in_at(10)
    # Ours at 12, 14, 16, ...; 11, 13, 15, ... are DMs between others, never ours to see.
    ours = [12 + 2 * i for i in range(MAX_OWN + 5)]
    feed(s, b"".join(frame(type="ack", command="pm", seq=seq) for seq in ours))
    assert len(s._own) == MAX_OWN
    assert s.cursor == ours[4]  # the five oldest taken as settled
    (late,) = feed(s, msg(ours[-1] + 1, "the next one"))
    assert isinstance(late, Broadcast) and s.cursor == ours[-1] + 1 and not s._own


def test_reconnect_jitter_leaves_the_global_random_state_alone() -> None:
    # A bot that reconnects must not move the state of the application's (or a seeded
    # test's) global generator: Hypothesis saw its examples change under such a client.
    import random

    before = random.getstate()
    delays = [reconnect_delay(a, 8.0) for a in range(20)]
    assert random.getstate() == before
    assert all(0 < d <= 8.0 for d in delays)
