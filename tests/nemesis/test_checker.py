"""The checker on hand-made histories: each kind of anomaly is found where it is, and
nothing is reported where the protocol allows what happened (docs/RELIABILITY.md)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.nemesis.checker import KINDS, check, ranges
from tests.nemesis.handmade import Story
from tests.nemesis.history import dump, load


def three() -> tuple[Story, int, int, int]:
    """alice, bob and carol online from seq 0."""
    s = Story()
    return s, s.login("alice", 0), s.login("bob", 0), s.login("carol", 0)


def finish(
    s: Story,
    conns: dict[str, int],
    top: int,
    public: list[tuple[int, str, str]],
    dms: list[tuple[int, str, str, str]],
) -> None:
    """The end of a run: the marker (seq ``top + 1``) reaches everyone, then the scans."""
    m = s.login("mark", top)
    s.marker(m, top + 1)
    for conn in conns.values():
        s.got(conn, "mark", "marker", top + 1)
    pages = [(seq, frm, text, None) for seq, frm, text in public]
    s.scan(m, [(None, [*pages, (top + 1, "mark", "marker", None)])])
    users = sorted(conns)
    for i, user in enumerate(users):
        partner_pages: list[tuple[str | None, list[tuple[int, str, str, str | None]]]] = []
        for other in users[i:]:
            msgs: list[tuple[int, str, str, str | None]] = [
                (seq, frm, text, to) for seq, frm, to, text in dms if {frm, to} == {user, other}
            ]
            partner_pages.append((other, msgs))
        s.scan(conns[user], partner_pages)


def clean_story() -> Story:
    """Everything the protocol allows that a naive checker would call an anomaly."""
    s, a, b, c = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.got(c, "alice", "alice.1", 1)
    s.dm(b, "carol", "bob.1", 2)
    s.got(c, "bob", "bob.1", 2, to="carol")
    s.logout(c)  # carol leaves; a DM waits for her
    s.dm(a, "carol", "alice.2", 3, queued=True)
    c2 = s.login("carol", 3, replay=True, client=2)  # a fresh login: the inbox
    s.got(c2, "alice", "alice.2", 3, to="carol", replay=True)
    s.replay_done(c2, 3, 1)
    s.close(b)  # bob's connection is cut; alice posts meanwhile; bob resumes
    s.pm(a, "alice.3", 4)
    s.got(c2, "alice", "alice.3", 4)
    b2 = s.login("bob", 4, since=2)
    s.got(b2, "alice", "alice.3", 4, replay=True)
    s.replay_done(b2, 4, 1)
    # alice's pm is stored but its ack is lost in a cut: she resumes, the replay brings
    # her own message back (not to her hooks), and the resend gets the original seq.
    rid = s.send(a, "alice.4", cid="x")
    s.got(b2, "alice", "alice.4", 5)
    s.got(c2, "alice", "alice.4", 5)
    s.close(a)
    a2 = s.login("alice", 5, since=4)
    s.got(a2, "alice", "alice.4", 5, replay=True, hook=False)
    s.replay_done(a2, 5, 1)
    s.ack(a2, s.send(a2, "alice.4", cid="x", rid=rid), 5)
    r = s.send(b2, "bob.2")  # refused: never stored, never delivered
    s.refuse(b2, r)
    r = s.send(b2, "bob.3")  # refused, then sent again and stored
    s.refuse(b2, r)
    s.ack(b2, s.send(b2, "bob.3", cid="cid-bob.3"), 6)
    s.got(a2, "bob", "bob.3", 6)
    s.got(c2, "bob", "bob.3", 6)
    s.page(
        b2, [(4, "alice", "alice.3", None), (5, "alice", "alice.4", None)], before=6, has_more=True
    )
    finish(
        s,
        {"alice": a2, "bob": b2, "carol": c2},
        6,
        [
            (1, "alice", "alice.1"),
            (4, "alice", "alice.3"),
            (5, "alice", "alice.4"),
            (6, "bob", "bob.3"),
        ],
        [(2, "bob", "carol", "bob.1"), (3, "alice", "carol", "alice.2")],
    )
    return s


def test_what_the_protocol_allows_is_no_anomaly() -> None:
    result = clean_story().check()
    assert result.anomalies == [], [a.describe() for a in result.anomalies]
    assert result.notes == []
    assert result.stats["final log"] == 7
    assert result.stats["chains"] == 5  # carol twice (a fresh login), the marker's author


def test_a_history_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    s = clean_story()
    dump(s.events, tmp_path / "history.jsonl")
    assert load(tmp_path / "history.jsonl") == s.events


# ---------------------------------------------------------------------- loss


def test_a_resume_that_skips_a_message_loses_it() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.close(b)
    s.pm(a, "alice.2", 2)
    s.pm(a, "alice.3", 3)
    b2 = s.login("bob", 3, since=1)
    s.got(b2, "alice", "alice.3", 3, replay=True)  # seq 2 never comes
    s.replay_done(b2, 3, 1)
    lost = [x for x in s.check().anomalies if x.kind == "lost"]
    assert [(x.users, x.seqs) for x in lost] == [(["bob"], [2])]
    assert "seqs 2" in lost[0].text


def test_a_client_that_never_catches_up_is_stuck_and_loses_what_it_missed() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    m = s.login("mark", 1)
    s.marker(m, 2)
    s.got(b, "mark", "marker", 2)
    s.got(a, "mark", "marker", 2)  # carol never gets anything
    kinds = s.kinds()
    assert {"stuck", "lost"} <= kinds
    lost = [x for x in s.check().anomalies if x.kind == "lost"]
    assert lost[0].users == ["carol"] and lost[0].seqs == [1, 2]


def test_replay_truncated_excuses_what_it_says_was_not_replayed() -> None:
    s, a, b, _ = three()
    s.close(b)
    for i in range(1, 4):
        s.pm(a, f"alice.{i}", i)
    b2 = s.login("bob", 3, since=0)
    s.truncated(b2, 3)
    s.got(b2, "alice", "alice.3", 3, replay=True)
    s.replay_done(b2, 3, 1)
    assert "lost" not in s.kinds()


def test_a_replay_done_that_miscounts_its_replay_is_found() -> None:
    s, a, b, _ = three()
    s.close(b)
    s.pm(a, "alice.1", 1)
    b2 = s.login("bob", 1, since=0)
    s.got(b2, "alice", "alice.1", 1, replay=True)
    s.replay_done(b2, 1, 2)
    assert s.kinds() == {"replay_range"}


def test_a_replay_beyond_its_login_ok_seq_brings_the_dm_twice_and_out_of_order() -> None:
    s, a, _, c = three()
    s.logout(c)
    s.pm(a, "alice.1", 1)
    s.dm(a, "carol", "alice.2", 2, queued=True)
    c2 = s.login("carol", 0, client=2, replay=True)  # a node behind the log: its cut is 0
    s.got(c2, "alice", "alice.2", 2, to="carol", replay=True)
    s.replay_done(c2, 0, 1)
    s.got(c2, "alice", "alice.1", 1)  # the node's live traffic from its cut
    s.got(c2, "alice", "alice.2", 2, to="carol", hook=False)
    assert {"replay_range", "out_of_order", "duplicate"} <= s.kinds()


def test_a_fresh_login_is_owed_nothing_older_than_its_login() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.logout(b)
    s.pm(a, "alice.2", 2)
    b2 = s.login("bob", 2, client=2)  # no since: seq 2 is before its login
    s.pm(a, "alice.3", 3)
    s.got(b2, "alice", "alice.3", 3)
    assert s.kinds() == set()


def test_a_dm_queued_for_an_offline_user_must_come_at_the_next_login() -> None:
    s, a, _, c = three()
    s.logout(c)
    s.dm(a, "carol", "alice.1", 1, queued=True)
    c2 = s.login("carol", 1, client=2, replay=True)
    s.replay_done(c2, 1, 0)  # the inbox was empty
    lost = [x for x in s.check().anomalies if x.kind == "dm_lost"]
    assert len(lost) == 1 and lost[0].seqs == [1] and "queued" in lost[0].text


def test_a_dm_not_queued_whose_recipient_left_is_only_counted() -> None:
    s, a, _, c = three()
    s.dm(a, "carol", "alice.1", 1)  # acked live; carol's session ends before it
    s.logout(c)
    c2 = s.login("carol", 1, client=2)
    s.pm(a, "alice.2", 2)
    s.got(c2, "alice", "alice.2", 2)
    result = s.check()
    assert result.anomalies == []
    assert result.stats["DMs unverifiable (recipient logged out around it)"] == 1


# ---------------------------------------------------------------------- twice


def test_a_message_twice_on_one_connection_is_a_duplicate() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.got(b, "alice", "alice.1", 1, hook=False)
    assert "duplicate" in s.kinds()


def test_a_resume_that_replays_what_since_covers_is_a_duplicate() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.close(b)
    b2 = s.login("bob", 1, since=1)
    s.got(b2, "alice", "alice.1", 1, replay=True, hook=False)
    s.replay_done(b2, 1, 1)
    kinds = s.kinds()
    assert {"duplicate", "replay_range"} <= kinds


def test_a_resume_below_a_seq_already_received_is_the_sdk_s() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.pm(a, "alice.2", 2)
    s.got(b, "alice", "alice.1", 1)
    s.got(b, "alice", "alice.2", 2)
    s.close(b)
    b2 = s.login("bob", 2, since=1)
    s.got(b2, "alice", "alice.2", 2, replay=True, hook=False)
    s.replay_done(b2, 2, 1)
    assert s.kinds() == {"since_regressed"}


def test_a_dm_delivered_again_after_a_clean_exit_is_redelivered() -> None:
    s, a, _, c = three()
    s.dm(a, "carol", "alice.1", 1)
    s.got(c, "alice", "alice.1", 1, to="carol")
    s.logout(c)
    c2 = s.login("carol", 1, client=2, replay=True)
    s.got(c2, "alice", "alice.1", 1, to="carol", replay=True)
    s.replay_done(c2, 1, 1)
    anomalies = s.check().anomalies
    assert [a.kind for a in anomalies] == ["dm_redelivered"]
    assert "again, in a replay," in anomalies[0].text and anomalies[0].conns == [3, 4]


def test_a_dm_in_two_chains_after_an_unclean_end_is_only_counted() -> None:
    s, a, _, c = three()
    s.dm(a, "carol", "alice.1", 1)
    s.got(c, "alice", "alice.1", 1, to="carol")
    s.close(c)  # cut: the server cannot know she read it
    c2 = s.login("carol", 1, client=2, replay=True)
    s.got(c2, "alice", "alice.1", 1, to="carol", replay=True)
    s.replay_done(c2, 1, 1)
    result = s.check()
    assert result.anomalies == []
    assert result.stats["DMs received in two chains (not provably redelivered)"] == 1


def test_one_send_stored_under_two_seqs_is_stored_twice() -> None:
    s, a, b, _ = three()
    rid = s.send(a, "alice.1", cid="x")
    s.got(b, "alice", "alice.1", 1)
    s.close(a)
    a2 = s.login("alice", 1, since=0)
    s.replay_done(a2, 1, 0)
    s.ack(a2, s.send(a2, "alice.1", cid="x", rid=rid), 2)  # the cid was not honoured
    s.got(b, "alice", "alice.1", 2)
    assert s.kinds() == {"stored_twice"}


# ---------------------------------------------------------------------- order and identity


def test_seqs_going_down_on_a_connection_are_out_of_order() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.pm(a, "alice.2", 2)
    s.got(b, "alice", "alice.2", 2)
    s.got(b, "alice", "alice.1", 1)
    assert "out_of_order" in s.kinds()


def test_one_seq_naming_two_messages_is_reused() -> None:
    s, a, b, c = three()
    s.pm(a, "alice.1", 1)
    s.pm(c, "carol.1", 1)
    s.got(b, "alice", "alice.1", 1)
    assert "seq_reused" in s.kinds() or "ack_mismatch" in s.kinds()
    s2, a, b, c = three()
    s2.send(a, "alice.1")
    s2.send(c, "carol.1")
    s2.got(b, "alice", "alice.1", 1)
    s2.got(c, "alice", "alice.1", 1)
    s2.got(a, "carol", "carol.1", 1)
    assert "seq_reused" in s2.kinds()


def test_an_ack_naming_another_recipient_is_a_mismatch() -> None:
    s, a, _, _ = three()
    rid = s.send(a, "alice.1", to="carol")
    s.ack(a, rid, 1, to="bob")
    assert "ack_mismatch" in s.kinds()


def test_a_message_nobody_sent_is_a_phantom() -> None:
    s, _, b, _ = three()
    s.got(b, "alice", "never sent", 1)
    assert "phantom" in s.kinds()


def test_a_dm_reaching_a_third_user_is_misdelivered() -> None:
    s, a, b, c = three()
    s.dm(a, "bob", "alice.1", 1)
    s.got(b, "alice", "alice.1", 1, to="bob")
    s.got(c, "alice", "alice.1", 1, to="bob")
    assert "misdelivered" in s.kinds()


def test_a_live_session_replaced_without_a_second_login_is_a_spurious_takeover() -> None:
    s, _, b, _ = three()
    s.bye(b, "session_replaced")
    assert s.kinds() == {"spurious_takeover"}


def test_a_session_replaced_by_a_login_given_up_on_is_a_stale_takeover() -> None:
    s, _, _, _ = three()
    stale = s.open("bob", client=9)  # its login never got an answer; then it closed
    s.write(stale, command="login", username="bob", password="pw", id=1)
    s.close(stale)
    b2 = s.login("bob", 0, client=2)
    s.bye(b2, "session_replaced")
    anomalies = s.check().anomalies
    assert [a.kind for a in anomalies] == ["stale_takeover"]
    assert f"connection {stale}" in anomalies[0].text


# ---------------------------------------------------------------------- sends and refusals


def test_a_refused_send_that_was_stored_anyway_is_found() -> None:
    s, a, b, _ = three()
    rid = s.send(a, "alice.1")
    s.refuse(a, rid, "unavailable")
    s.got(b, "alice", "alice.1", 1)
    anomalies = s.check().anomalies
    assert [x.kind for x in anomalies] == ["refused_stored"]
    assert "unavailable" in anomalies[0].text


def test_a_refused_send_stored_by_its_later_resend_is_fine() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.0", 1)
    s.got(b, "alice", "alice.0", 1)
    rid = s.send(a, "alice.1", cid="y")
    s.refuse(a, rid, "unavailable")
    rid = s.send(a, "alice.1", cid="y")
    s.got(b, "alice", "alice.1", 2)
    s.ack(a, rid, 2)
    assert s.kinds() == set()


def test_a_refusal_proven_wrong_by_a_later_seq_seen_before_the_resend() -> None:
    s, a, b, _ = three()
    rid = s.send(a, "alice.1", cid="y")
    s.refuse(a, rid, "unavailable")
    s.pm(b, "bob.1", 2)  # seq 2 seen: seq 1 was stored by then
    s.ack(a, s.send(a, "alice.1", cid="y"), 1)  # the resend finds the first attempt's seq
    assert "refused_stored" in s.kinds()


def test_a_cid_conflict_on_an_identical_resend_is_spurious() -> None:
    s, a, _, _ = three()
    rid = s.send(a, "alice.1", cid="z")
    s.ack(a, rid, 1)
    s.refuse(a, s.send(a, "alice.1", cid="z"), "cid_conflict")
    assert "spurious_cid_conflict" in s.kinds()


def test_a_client_that_sends_on_after_its_relogin_was_refused_is_stuck() -> None:
    s, a, _, _ = three()
    s.close(a)
    conn = s.open("alice")  # the SDK's automatic re-login, refused
    s.write(conn, command="login", username="alice", password="pw", since=0, id=7)
    s.read(conn, type="error", code="unavailable", message="try again", id=7)
    rid = s.send(conn, "alice.1")
    s.read(conn, type="error", code="not_logged_in", message="log in first", id=rid)
    anomalies = s.check().anomalies
    assert [x.kind for x in anomalies] == ["relogin_stuck"]
    assert "not_logged_in" in anomalies[0].text


def test_a_refused_login_then_a_closed_connection_is_fine() -> None:
    s, _, _, _ = three()
    conn = s.open("alice", client=2)
    s.write(conn, command="login", username="alice", password="pw", id=1)
    s.read(conn, type="error", code="unavailable", message="try again", id=1)
    s.close(conn)
    assert s.kinds() == set()


def test_the_right_password_refused_is_found() -> None:
    s, a, _, _ = three()
    s.op(a, "login", "fail", error="bad_credentials")
    assert s.kinds() == {"login_refused"}


# ---------------------------------------------------------------------- the final log


def test_an_acked_message_missing_from_the_final_log_is_lost() -> None:
    s, a, b, c = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.got(c, "alice", "alice.1", 1)
    s.pm(a, "alice.2", 2)
    s.got(b, "alice", "alice.2", 2)
    s.got(c, "alice", "alice.2", 2)
    finish(s, {"alice": a, "bob": b, "carol": c}, 2, [(1, "alice", "alice.1")], [])
    # Seq 2 is acked and missing: lost (the scan's page skipping it says so too).
    assert s.kinds() == {"acked_lost", "history_gap"}


def test_a_delivered_message_missing_from_the_final_log_is_found_and_so_is_a_gap() -> None:
    s, a, b, c = three()
    s.send(a, "alice.1")  # never acked
    s.got(b, "alice", "alice.1", 1)
    s.got(c, "alice", "alice.1", 1)
    s.pm(a, "alice.3", 3)
    s.got(b, "alice", "alice.3", 3)
    s.got(c, "alice", "alice.3", 3)
    finish(s, {"alice": a, "bob": b, "carol": c}, 3, [(3, "alice", "alice.3")], [])
    kinds = s.kinds()
    assert {"delivered_unstored", "seq_gap"} <= kinds
    gap = next(x for x in s.check().anomalies if x.kind == "seq_gap")
    assert gap.seqs == [2]  # seq 1 is known (delivered_unstored); of seq 2 nothing is


def test_no_final_scan_is_a_note_not_a_pass() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    result = s.check()
    assert result.anomalies == [] and "final scan" in result.notes[0]


# ---------------------------------------------------------------------- history pages


def test_a_dm_in_someone_else_s_history_is_a_leak() -> None:
    s, a, b, c = three()
    s.dm(a, "bob", "alice.1", 1)
    s.got(b, "alice", "alice.1", 1, to="bob")
    s.page(c, [(1, "alice", "alice.1", "bob")], with_="alice")
    s.page(c, [(1, "alice", "alice.1", "bob")])
    leaks = [x for x in s.check().anomalies if x.kind == "history_leak"]
    assert len(leaks) == 2


def test_a_page_that_skips_a_stored_message_has_a_gap() -> None:
    s, a, b, _ = three()
    for i in range(1, 4):
        s.pm(a, f"alice.{i}", i)
        s.got(b, "alice", f"alice.{i}", i)
    s.page(b, [(1, "alice", "alice.1", None), (3, "alice", "alice.3", None)])
    s.page(b, [(3, "alice", "alice.3", None)])  # "nothing older", but 1 and 2 are
    gaps = [x for x in s.check().anomalies if x.kind == "history_gap"]
    assert [g.seqs for g in gaps] == [[2], [1, 2]]


def test_a_page_that_disagrees_with_a_delivery_is_found() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.page(b, [(1, "alice", "something else", None)])
    assert "seq_reused" in s.kinds()


def test_a_page_outside_its_cursor_is_found() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.pm(a, "alice.2", 2)
    s.page(b, [(1, "alice", "alice.1", None), (2, "alice", "alice.2", None)], before=2)
    assert "history_range" in s.kinds()


# ---------------------------------------------------------------------- the SDK


def test_a_message_the_wire_brought_but_the_hooks_never_saw_is_hook_lost() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1, hook=False)
    assert s.kinds() == {"hook_lost"}


def test_hooks_given_one_message_twice_or_backwards_are_found() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.pm(a, "alice.2", 2)
    s.got(b, "alice", "alice.1", 1, hook=False)
    s.got(b, "alice", "alice.2", 2, hook=False)
    s.hook(b, "alice", "alice.2", 2)
    s.hook(b, "alice", "alice.1", 1)
    s.hook(b, "alice", "alice.1", 1)
    assert {"hook_out_of_order", "hook_duplicate"} <= s.kinds()


def test_a_client_s_own_message_at_its_hooks_is_an_echo() -> None:
    s, a, b, _ = three()
    s.pm(a, "alice.1", 1)
    s.got(b, "alice", "alice.1", 1)
    s.close(a)
    a2 = s.login("alice", 1, since=0)
    s.got(a2, "alice", "alice.1", 1, replay=True)  # same client: it sent it
    s.replay_done(a2, 1, 1)
    assert s.kinds() == {"own_echo"}
    # A new client that resumes someone else's cursor did not send it: no echo.
    s2, a, b, _ = three()
    s2.pm(a, "alice.1", 1)
    s2.logout(a)
    a2 = s2.login("alice", 1, since=0, client=2)
    s2.got(a2, "alice", "alice.1", 1, replay=True)
    s2.replay_done(a2, 1, 1)
    assert s2.kinds() == set()
    # Nor one that resends it with its cid only after the replay brought it (seed 4061:
    # the driver's next client resending what a timed-out client had sent).
    s3, a, b, _ = three()
    s3.send(a, "alice.1", cid="x")  # no answer: timed out
    s3.got(b, "alice", "alice.1", 1)
    s3.logout(a)
    a2 = s3.login("alice", 1, since=0, client=2)
    s3.got(a2, "alice", "alice.1", 1, replay=True)
    s3.replay_done(a2, 1, 1)
    s3.ack(a2, s3.send(a2, "alice.1", cid="x"), 1)
    assert s3.kinds() == set()


def test_every_kind_is_described_and_ranges_read_well() -> None:
    assert all(level in ("server", "sdk") and text for level, text in KINDS.values())
    # Every kind the checker can report is one of them (a report looks its level up).
    source = (Path(__file__).parent / "checker.py").read_text()
    reported = set(re.findall(r'self\.add\(\s*"(\w+)"', source))
    reported |= set(re.findall(r'"(\w+)" if source == "ack" else "(\w+)"', source)[0])
    assert reported and reported <= set(KINDS), reported - set(KINDS)
    assert ranges([5, 1, 2, 3, 9, 10]) == "1-3, 5, 9-10"
    assert check([]).anomalies == []


def test_a_hostile_frame_not_refused_clearly_is_found() -> None:
    s = Story()
    a = s.login("alice", 0)
    s.op(a, "hostile", "invoke", text="pm empty")
    s.op(a, "hostile", "ok", text="pm empty", error="bad_request")
    s.op(a, "hostile", "invoke", text="pm over the limit")
    s.op(a, "hostile", "info", text="pm over the limit", error="no answer")
    assert s.kinds() == set()  # refused as it should be; no answer during a fault
    s.op(a, "hostile", "invoke", text="pm a number")
    s.op(a, "hostile", "fail", text="pm a number", error="answered ack, not bad_request")
    assert s.kinds() == {"hostile_answer"}


def test_a_pipelined_login_answered_out_of_order_is_found() -> None:
    s = Story()
    a = s.login("alice", 0)
    s.op(a, "pipeline", "invoke", text="cut at 5")
    s.op(a, "pipeline", "ok", text="cut at 5")
    s.op(a, "pipeline", "invoke", text="resume, cut at 9")
    s.op(a, "pipeline", "info", text="resume, cut at 9", error="connection lost")
    assert s.kinds() == set()  # answered in order; cut by a fault
    s.op(a, "pipeline", "invoke", text="cut at 3")
    s.op(a, "pipeline", "fail", text="cut at 3", error="a answered before replay_done")
    assert s.kinds() == {"pipeline_broken"}


def test_an_irc_guests_line_echoed_twice_or_received_twice_is_found() -> None:
    # A guest's session as tests/nemesis/guests.py records it: no login, its PRIVMSGs
    # as pm frames, each echo as an ack of one.
    s = Story(users=("alice", "guest1"))
    g = s.open("guest1")
    s.write(g, command="pm", message="guest1.1 hi", id=1)
    s.read(g, type="ack", command="pm", id=1, seq=1)
    s.read(g, type="irc_privmsg", **{"from": "guest2"}, message="x", room="guestroom")
    assert s.kinds() == set()
    s.read(g, type="ack", command="pm", id=1, seq=1)  # the echo again
    assert s.kinds() == {"echo_twice"}
    s.read(g, type="irc_privmsg", **{"from": "guest2"}, message="x", room="guestroom")
    assert s.kinds() == {"echo_twice", "duplicate"}


def test_an_echo_to_a_guest_session_that_did_not_send_it_is_found() -> None:
    s = Story(users=("alice", "guest1"))
    g1 = s.open("guest1")
    s.write(g1, command="pm", message="guest1.1 hi", id=1)
    g2 = s.open("guest1")  # the node was killed: a new session
    s.read(g2, type="ack", command="pm", id=1, seq=1)
    assert s.kinds() == {"echo_twice"}


def test_a_request_written_twice_on_one_connection_is_the_clients() -> None:
    # F11 (seed 7201): the SDK wrote a dm during its re-login and again at login_ok.
    s = Story()
    a = s.login("alice", 0)
    s.write(a, command="pm", message="alice.1 hi", cid="c1", id=7)
    s.write(a, command="pm", message="alice.1 hi", cid="c1", id=7)
    s.read(a, type="ack", command="pm", id=7, seq=1)
    s.read(a, type="ack", command="pm", id=7, seq=1)
    assert s.kinds() == {"request_twice"}


def test_a_guests_stored_line_never_echoed_on_a_session_that_went_on_is_found() -> None:
    s = Story(users=("alice", "guest1"))
    a = s.login("alice", 0)
    g = s.open("guest1")
    s.write(g, command="pm", message="guest1.1 hi", id=1)
    s.got(a, "guest1", "guest1.1 hi", 1)
    s.t += 11.0
    s.read(g, type="irc_privmsg", **{"from": "alice"}, message="x", seq=2)
    assert "echo_lost" in s.kinds()
