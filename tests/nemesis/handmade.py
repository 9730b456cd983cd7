"""Hand-made histories for testing the checker (test_checker.py): a few lines per
scenario, written as the wire would carry it."""

from __future__ import annotations

from typing import Any

from tests.nemesis.checker import CheckResult, check
from tests.nemesis.history import ConnClose, ConnOpen, Event, FrameIn, FrameOut, Hook, Meta, Op

__all__ = ["Story"]


class Story:
    """A history built step by step; each step a little later than the last."""

    def __init__(self, users: tuple[str, ...] = ("alice", "bob", "carol"), marker: str = "mark"):
        self.events: list[Event] = [
            Meta(
                seed=1,
                target="handmade",
                duration=1.0,
                users=list(users),
                options={"marker_user": marker},
            )
        ]
        self.t = 0.0
        self._conns = 0
        self._ids = 0
        self.user_of: dict[int, str] = {}
        self.client_of: dict[int, int] = {}
        self._clients: dict[tuple[str, int], int] = {}  # (user, n) -> a run-wide number

    def _now(self) -> float:
        self.t += 0.01
        return self.t

    def open(self, user: str, client: int = 1) -> int:
        """A new connection of ``user``'s ``client``, not logged in."""
        self._conns += 1
        conn = self._conns
        number = self._clients.setdefault((user, client), len(self._clients) + 1)
        self.user_of[conn], self.client_of[conn] = user, number
        self.events.append(ConnOpen(t=self._now(), user=user, client=number, conn=conn))
        return conn

    def write(self, conn: int, **f: Any) -> None:
        """Any frame the client writes on ``conn``."""
        self._out(conn, **f)

    def read(self, conn: int, **f: Any) -> None:
        """Any frame the client reads on ``conn``."""
        self._in(conn, **f)

    def _out(self, conn: int, **f: Any) -> dict[str, Any]:
        self.events.append(
            FrameOut(
                t=self._now(), user=self.user_of[conn], client=self.client_of[conn], conn=conn, f=f
            )
        )
        return f

    def _in(self, conn: int, **f: Any) -> None:
        self.events.append(
            FrameIn(
                t=self._now(), user=self.user_of[conn], client=self.client_of[conn], conn=conn, f=f
            )
        )

    def rid(self) -> int:
        self._ids += 1
        return self._ids

    # ------------------------------------------------------------------ sessions

    def login(
        self,
        user: str,
        seq: int,
        *,
        since: int | None = None,
        client: int = 1,
        replay: bool | None = None,
    ) -> int:
        """A new connection of ``user``'s ``client`` that logs in; login_ok at ``seq``."""
        conn = self.open(user, client)
        rid = self.rid()
        login: dict[str, Any] = {"command": "login", "username": user, "password": "pw", "id": rid}
        if since is not None:
            login["since"] = since
        self._out(conn, **login)
        ok: dict[str, Any] = {
            "type": "login_ok",
            "username": user,
            "new_user": False,
            "users": [],
            "seq": seq,
            "id": rid,
        }
        if replay or (replay is None and since is not None):
            ok["replay"] = True
        self._in(conn, **ok)
        return conn

    def replay_done(self, conn: int, seq: int, count: int = 0) -> None:
        self._in(conn, type="replay_done", count=count, seq=seq)

    def truncated(self, conn: int, oldest: int) -> None:
        self._in(conn, type="replay_truncated", oldest_seq=oldest)

    def bye(self, conn: int, reason: str = "exit") -> None:
        self._in(conn, type="bye", reason=reason)

    def close(self, conn: int) -> None:
        self.events.append(
            ConnClose(
                t=self._now(), user=self.user_of[conn], client=self.client_of[conn], conn=conn
            )
        )

    def logout(self, conn: int) -> None:
        self._out(conn, command="exit")
        self.bye(conn)
        self.close(conn)

    # ------------------------------------------------------------------ sends

    def send(
        self,
        conn: int,
        text: str,
        *,
        to: str | None = None,
        cid: str | None = None,
        rid: int | None = None,
    ) -> int:
        """A pm (or a DM ``to``) written on ``conn``; its request id."""
        rid = self.rid() if rid is None else rid
        f: dict[str, Any] = {
            "command": "pm" if to is None else "dm",
            "message": text,
            "id": rid,
            "cid": cid or f"cid-{text}",
        }
        if to is not None:
            f["to"] = to
        self._out(conn, **f)
        return rid

    def ack(
        self, conn: int, rid: int, seq: int, *, to: str | None = None, queued: bool = False
    ) -> None:
        f: dict[str, Any] = {
            "type": "ack",
            "command": "pm" if to is None else "dm",
            "seq": seq,
            "id": rid,
        }
        if to is not None:
            f["to"] = to
        if queued:
            f["queued"] = True
        self._in(conn, **f)

    def refuse(self, conn: int, rid: int, code: str = "unavailable") -> None:
        self._in(conn, type="error", code=code, message="no", id=rid)

    def pm(self, conn: int, text: str, seq: int) -> None:
        """A pm sent and acked."""
        self.ack(conn, self.send(conn, text), seq)

    def dm(self, conn: int, to: str, text: str, seq: int, queued: bool = False) -> None:
        self.ack(conn, self.send(conn, text, to=to), seq, to=to, queued=queued)

    # ------------------------------------------------------------------ receipts

    def got(
        self,
        conn: int,
        sender: str,
        text: str,
        seq: int,
        *,
        to: str | None = None,
        replay: bool = False,
        hook: bool = True,
    ) -> None:
        """``conn`` receives a message (and, with ``hook``, its client's hooks get it)."""
        f: dict[str, Any] = {
            "type": "broadcast" if to is None else "dm",
            "from": sender,
            "message": text,
            "ts": self.t,
            "seq": seq,
        }
        if to is not None:
            f["to"] = to
        if replay:
            f["replay"] = True
        self._in(conn, **f)
        if hook:
            self.hook(conn, sender, text, seq, to=to, replay=replay)

    def hook(
        self,
        conn: int,
        sender: str,
        text: str,
        seq: int,
        *,
        to: str | None = None,
        replay: bool = False,
    ) -> None:
        self.events.append(
            Hook(
                t=self._now(),
                user=self.user_of[conn],
                client=self.client_of[conn],
                kind="broadcast" if to is None else "dm",
                seq=seq,
                sender=sender,
                to=to,
                text=text,
                replayed=replay,
            )
        )

    # ------------------------------------------------------------------ rooms

    def join(self, conn: int, room: str, seq: int | None, *, answered: bool = True) -> None:
        """``conn`` joins ``room``: its ``room_info`` reply carries the join's seq
        (None: already a member); ``answered=False``: no reply ever came."""
        rid = self.rid()
        self._out(conn, command="join", room=room, id=rid)
        if answered:
            info = {"name": room, "members": [self.user_of[conn]]}
            self._in(conn, type="room_info", info=info, id=rid, **({"seq": seq} if seq else {}))

    def part(self, conn: int, room: str, seq: int | None, *, answered: bool = True) -> None:
        rid = self.rid()
        self._out(conn, command="part", room=room, id=rid)
        if answered:
            self._in(conn, type="ack", command="part", room=room, id=rid, seq=seq)

    def room_event(self, conn: int, room: str, event: str, by: str, seq: int, **more: Any) -> None:
        self._in(conn, type="room_event", room=room, event=event, by=by, ts=self.t, seq=seq, **more)

    def moderate(
        self,
        conn: int,
        command: str,
        room: str,
        user: str,
        seq: int | None,
        *,
        answered: bool = True,
    ) -> None:
        """``conn``'s user, an operator of ``room``, kicks, bans, unbans, mutes or
        unmutes ``user``: the ack carries the event's seq (docs/PROTOCOL.md
        §Moderation); ``answered=False``: no reply ever came."""
        rid = self.rid()
        self._out(conn, command=command, room=room, user=user, id=rid)
        if answered:
            ack: dict[str, Any] = {"command": command, "room": room, "to": user}
            if seq is not None:
                ack["seq"] = seq
            self._in(conn, type="ack", id=rid, **ack)

    def room_pm(self, conn: int, room: str, text: str, seq: int) -> None:
        """A pm to ``room``, sent and acked."""
        rid = self.rid()
        self._out(conn, command="pm", room=room, message=text, id=rid, cid=f"cid-{text}")
        self._in(conn, type="ack", command="pm", room=room, seq=seq, id=rid)

    def room_got(
        self, conn: int, room: str, sender: str, text: str, seq: int, *, replay: bool = False
    ) -> None:
        """``conn`` receives ``room``'s message, and its hooks get it."""
        f: dict[str, Any] = {
            "type": "broadcast",
            "room": room,
            "from": sender,
            "message": text,
            "ts": self.t,
            "seq": seq,
        }
        if replay:
            f["replay"] = True
        self._in(conn, **f)
        self.hook(conn, sender, text, seq, replay=replay)

    def room_page(
        self, conn: int, room: str, messages: list[tuple[int, str, str]], has_more: bool = False
    ) -> None:
        """A history request for ``room`` and its page: messages as (seq, from, text)."""
        rid = self.rid()
        self._out(conn, command="history", room=room, id=rid, limit=100)
        msgs = [
            {"seq": q, "kind": "pm", "room": room, "from": frm, "message": text, "ts": 0.0}
            for q, frm, text in messages
        ]
        self._in(conn, type="history", id=rid, messages=msgs, has_more=has_more)

    # ------------------------------------------------------------------ reads

    def page(
        self,
        conn: int,
        messages: list[tuple[int, str, str, str | None]],
        *,
        with_: str | None = None,
        before: int | None = None,
        after: int | None = None,
        has_more: bool = False,
    ) -> None:
        """A history request and its page: messages as (seq, from, text, to)."""
        rid = self.rid()
        req: dict[str, Any] = {"command": "history", "id": rid, "limit": 100}
        for k, v in (("with", with_), ("before", before), ("after", after)):
            if v is not None:
                req[k] = v
        self._out(conn, **req)
        msgs = [
            {
                "seq": s,
                "kind": "dm" if to is not None else "pm",
                "from": frm,
                "message": text,
                "ts": 0.0,
                **({"to": to} if to is not None else {}),
            }
            for s, frm, text, to in messages
        ]
        self._in(conn, type="history", id=rid, messages=msgs, has_more=has_more)

    def op(self, conn: int, kind: str, phase: str, **fields: Any) -> None:
        self.events.append(
            Op(
                t=self._now(),
                user=self.user_of[conn],
                client=self.client_of[conn],
                op=self.rid(),
                phase=phase,
                kind=kind,
                **fields,
            )
        )

    def scan(
        self, conn: int, pages: list[tuple[str | None, list[tuple[int, str, str, str | None]]]]
    ) -> None:
        """The final read: a page per partner (None: the public room)."""
        user, client = self.user_of[conn], self.client_of[conn]
        n = self.rid()
        self.events.append(
            Op(t=self._now(), user=user, client=client, op=n, phase="invoke", kind="scan")
        )
        for partner, messages in pages:
            self.page(conn, messages, with_=partner)
        self.events.append(
            Op(t=self._now(), user=user, client=client, op=n, phase="ok", kind="scan")
        )

    def marker(self, conn: int, seq: int) -> None:
        self.pm(conn, "marker", seq)
        self.op(conn, "marker", "ok", seq=seq)

    def check(self) -> CheckResult:
        return check(self.events)

    def kinds(self) -> set[str]:
        return {a.kind for a in self.check().anomalies}
