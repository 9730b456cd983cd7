"""The checker's room rules on hand-made histories (docs/PROTOCOL.md §Rooms): a room's
message is owed to its members at its seq, once, and to nobody else; a membership the
history cannot pin down is owed nothing and accused of nothing."""

from __future__ import annotations

from tests.nemesis.handmade import Story


def dev() -> tuple[Story, int, int, int]:
    """alice and bob in room dev (joins at seqs 1 and 2), carol only in lobby."""
    s = Story()
    a, b, c = s.login("alice", 0), s.login("bob", 0), s.login("carol", 0)
    s.join(a, "dev", 1)
    s.join(b, "dev", 2)
    s.room_event(a, "dev", "join", "bob", 2)
    return s, a, b, c


def test_a_room_message_reaching_its_members_only_is_no_anomaly() -> None:
    s, a, b, c = dev()
    s.room_pm(a, "dev", "alice.1", 3)
    s.room_got(b, "dev", "alice", "alice.1", 3)
    s.pm(c, "carol.1", 4)  # lobby: everyone
    s.got(a, "carol", "carol.1", 4)
    s.got(b, "carol", "carol.1", 4)
    result = s.check()
    assert result.anomalies == [], [x.describe() for x in result.anomalies]
    assert result.stats["room events"] == 2


def test_a_member_that_never_gets_a_room_message_lost_it() -> None:
    s, a, b, _ = dev()
    s.room_pm(a, "dev", "alice.1", 3)
    s.room_pm(a, "dev", "alice.2", 4)
    s.room_got(b, "dev", "alice", "alice.2", 4)
    lost = [x for x in s.check().anomalies if x.kind == "lost"]
    assert [(x.users, x.seqs) for x in lost] == [(["bob"], [3])]


def test_a_room_message_to_a_non_member_is_a_room_leak() -> None:
    s, a, b, c = dev()
    s.room_pm(a, "dev", "alice.1", 3)
    s.room_got(b, "dev", "alice", "alice.1", 3)
    s.room_got(c, "dev", "alice", "alice.1", 3)
    leaks = [x for x in s.check().anomalies if x.kind == "room_leak"]
    assert [(x.users, x.seqs) for x in leaks] == [(["alice", "carol"], [3])]


def test_after_a_part_nothing_is_owed_and_a_delivery_leaks() -> None:
    s, a, b, _ = dev()
    s.part(b, "dev", 3)
    s.room_pm(a, "dev", "alice.1", 4)
    assert s.kinds() == set()  # bob is owed nothing after his part
    s.room_got(b, "dev", "alice", "alice.1", 4)
    assert s.kinds() == {"room_leak"}


def test_a_join_without_a_reply_makes_the_membership_unknown_not_an_anomaly() -> None:
    s, a, b, c = dev()
    s.join(c, "dev", None, answered=False)  # stored or not: nobody can tell
    s.room_pm(a, "dev", "alice.1", 3)
    s.room_got(b, "dev", "alice", "alice.1", 3)
    s.room_got(c, "dev", "alice", "alice.1", 3)  # allowed: carol may be in
    result = s.check()
    assert result.anomalies == [], [x.describe() for x in result.anomalies]
    assert result.stats["joins and parts unanswered"] == 1


def test_a_member_away_gets_the_room_in_its_resume_replay() -> None:
    s, a, b, _ = dev()
    s.close(b)
    s.room_pm(a, "dev", "alice.1", 3)
    s.room_pm(a, "dev", "alice.2", 4)
    b2 = s.login("bob", 4, since=2)
    s.room_got(b2, "dev", "alice", "alice.2", 4, replay=True)  # seq 3 never comes
    s.replay_done(b2, 4, 1)
    lost = [x for x in s.check().anomalies if x.kind == "lost"]
    assert [(x.users, x.seqs) for x in lost] == [(["bob"], [3])]


def test_room_events_out_of_seq_order_on_a_connection_are_found() -> None:
    s, a, b, _ = dev()
    s.room_pm(b, "dev", "bob.1", 4)
    s.room_got(a, "dev", "bob", "bob.1", 4)
    s.room_event(a, "dev", "topic", "bob", 3)  # after seq 4 on the same connection
    assert "out_of_order" in s.kinds()


def test_a_room_page_holds_the_room_after_the_readers_join() -> None:
    s, a, b, c = dev()
    s.room_pm(a, "dev", "alice.0", 3)
    s.room_got(b, "dev", "alice", "alice.0", 3)
    s.join(c, "dev", 4)
    s.room_pm(a, "dev", "alice.1", 5)
    s.room_got(b, "dev", "alice", "alice.1", 5)
    s.room_got(c, "dev", "alice", "alice.1", 5)
    s.room_pm(a, "dev", "alice.2", 6)
    s.room_got(b, "dev", "alice", "alice.2", 6)
    s.room_got(c, "dev", "alice", "alice.2", 6)
    s.room_page(c, "dev", [(5, "alice", "alice.1"), (6, "alice", "alice.2")])
    assert s.kinds() == set()
    s.room_page(c, "dev", [(6, "alice", "alice.2")])  # seq 5 left out
    assert s.kinds() == {"history_gap"}


def test_a_room_page_listing_what_its_reader_may_not_read_is_a_leak() -> None:
    s, a, b, c = dev()
    s.room_pm(a, "dev", "alice.0", 3)
    s.room_got(b, "dev", "alice", "alice.0", 3)
    s.join(c, "dev", 4)
    s.room_page(c, "dev", [(3, "alice", "alice.0")])  # from before carol's join
    assert s.kinds() == {"room_leak"}


# Moderation (docs/PROTOCOL.md §Moderation): a kicked or banned user is no longer a
# member from the event's seq on, whether the history learns it from the operator's
# ack or from the event that reaches the room and the user it names.


def test_after_a_kick_nothing_is_owed_and_a_delivery_leaks() -> None:
    s, a, b, _ = dev()
    s.moderate(a, "kick", "dev", "bob", 3)
    s.room_pm(a, "dev", "alice.1", 4)
    result = s.check()
    assert result.anomalies == [], [x.describe() for x in result.anomalies]
    assert result.stats["room events"] == 3
    s.room_got(b, "dev", "alice", "alice.1", 4)
    leaks = [x for x in s.check().anomalies if x.kind == "room_leak"]
    assert [(x.users, x.seqs) for x in leaks] == [(["alice", "bob"], [4])]


def test_a_ban_learnt_from_its_event_alone_ends_the_membership() -> None:
    s, a, b, c = dev()
    # The operator's ack never came; bob and the room heard the event.
    s.moderate(c, "ban", "dev", "bob", None, answered=False)
    s.room_event(a, "dev", "ban", "carol", 3, user="bob", removed=True)
    s.room_event(b, "dev", "ban", "carol", 3, user="bob", removed=True)
    s.room_pm(a, "dev", "alice.1", 4)
    s.room_got(b, "dev", "alice", "alice.1", 4)
    assert s.kinds() == {"room_leak"}


def test_a_banned_users_resume_replays_nothing_of_the_room_after_the_ban() -> None:
    s, a, b, _ = dev()
    s.close(b)
    s.moderate(a, "ban", "dev", "bob", 3)
    s.room_pm(a, "dev", "alice.1", 4)
    b2 = s.login("bob", 4, since=2)
    s.room_event(b2, "dev", "ban", "alice", 3, user="bob", replay=True)
    assert s.kinds() == set()  # owed nothing: the event names him
    s.room_got(b2, "dev", "alice", "alice.1", 4, replay=True)
    assert s.kinds() == {"room_leak"}


def test_a_banned_users_history_page_of_the_room_is_a_leak() -> None:
    s, a, b, _ = dev()
    s.moderate(a, "ban", "dev", "bob", 3)
    s.room_pm(a, "dev", "alice.1", 4)
    s.room_page(b, "dev", [(4, "alice", "alice.1")])
    assert s.kinds() == {"room_leak"}


def test_a_kick_without_a_reply_makes_the_membership_unknown_not_an_anomaly() -> None:
    s, a, b, _ = dev()
    s.moderate(a, "kick", "dev", "bob", None, answered=False)
    s.room_pm(a, "dev", "alice.1", 3)  # bob may or may not get it
    s.room_pm(a, "dev", "alice.2", 4)
    s.room_got(b, "dev", "alice", "alice.2", 4)
    result = s.check()
    assert result.anomalies == [], [x.describe() for x in result.anomalies]


def test_unban_and_mute_change_no_membership() -> None:
    s, a, b, _ = dev()
    s.moderate(a, "mute", "dev", "bob", 3)
    s.moderate(a, "unban", "dev", "bob", 4)
    s.room_pm(a, "dev", "alice.1", 5)
    s.room_pm(a, "dev", "alice.2", 6)
    s.room_got(b, "dev", "alice", "alice.2", 6)
    lost = [x for x in s.check().anomalies if x.kind == "lost"]
    assert [(x.users, x.seqs) for x in lost] == [(["bob"], [5])]
