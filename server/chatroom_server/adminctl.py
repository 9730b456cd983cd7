"""``chat-server admin VERB``: accounts, sessions and history without editing the database
(docs/OPERATIONS.md, "The admin command").

Two ways to the same operations:

- **The server is running** (it holds the database: chatroom_server.dbfile): the verb
  goes to its admin endpoint (``--admin-port``) with the token the server wrote beside
  the database, and the server does it. That is the only safe way while it runs: it
  knows who is logged in (``sessions``, ``disconnect``), a deleted account's or a reset
  password's session is ended and its remembered logins forgotten, and a prune moves
  the oldest seq its resumes compare against.
- **The server is stopped**: the verbs on accounts and ``prune`` open the database
  themselves. ``sessions`` and ``disconnect`` need a running server.

The moderation verbs (``grant``, ``revoke``, ``operators``, ``audit``, and the
server-wide ``ban``, ``unban``, ``bans``, ``registrations``: docs/PROTOCOL.md
§Moderation) always work on the SQLite file itself, the server running or not: the
server reads who is a server operator from the database at each moderation command, so
a grant or revocation applies at once.

A password is read from standard input (one line) when it is not a terminal, else
prompted for twice; it is never an argument (it would show in ``ps`` and shell history).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatroom.protocol import Limits
from chatroom_server import dbfile

DEFAULT_DB = "chatroom.db"
DEFAULT_ADMIN_URL = "http://127.0.0.1:9464"


class AdminError(Exception):
    """The verb cannot be done; the message says why and what to do."""


def token_path(db: str) -> Path:
    """Where a server with an admin endpoint writes its token: beside its SQLite file,
    or, for a PostgreSQL --db, in its working directory."""
    if db.startswith(("postgresql://", "postgres://")):
        return Path("chat-admin.token")
    p = Path(db)
    return p.with_name(p.name + ".admin-token")


def read_password(prompt: str = "password: ") -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass(prompt)
    if getpass.getpass("again: ") != first:
        raise AdminError("the two passwords differ")
    return first


class Remote:
    """The running server's admin endpoint."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(
        self, method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None
    ) -> Any:
        q = f"?{urllib.parse.urlencode(query)}" if query else ""
        req = urllib.request.Request(
            self.url + path + q,
            data=body if method == "POST" else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            exc.close()
            raise AdminError(f"the server says: {text or exc.reason}") from None
        except OSError as exc:
            raise AdminError(
                f"cannot reach the server's admin endpoint at {self.url}: {exc} "
                "(is it running with --admin-port? pass --admin-url)"
            ) from None


def _running(db: str) -> bool:
    if db.startswith(("postgresql://", "postgres://")):
        return True  # a cluster: always through a node
    return dbfile.in_use(Path(db))


def _remote(args: argparse.Namespace) -> Remote:
    path = Path(args.token_file) if args.token_file else token_path(args.db)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise AdminError(
            f"a server has {args.db} open, and its admin token cannot be read from {path} "
            f"({exc.strerror or exc}): run the server with --admin-port, as its user"
        ) from None
    return Remote(args.admin_url, token)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chat-server admin",
        description="Administer accounts, sessions and history (docs/OPERATIONS.md).",
    )
    p.add_argument("--db", default=DEFAULT_DB, help="the server's --db")
    p.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="a running server's endpoint")
    p.add_argument("--token-file", help="its admin token (default: beside the database)")
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("accounts", help="list the accounts")
    for verb, text in (
        ("create", "create an account (password from stdin or prompted)"),
        ("delete", "delete an account (its session ends; its messages stay)"),
        ("reset-password", "set an account's password (its session ends)"),
        ("disconnect", "end a user's session now (bye 'disconnected'; they may log in again)"),
    ):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("name")
    verbs.add_parser("sessions", help="list who is logged in (a running server)")
    verbs.add_parser("rooms", help="list the rooms, their modes, topics and members")
    prune = verbs.add_parser("prune", help="delete old messages now, as the retention does")
    prune.add_argument("--days", type=float, help="older than this (default: the server's)")
    prune.add_argument("--max", type=int, help="beyond the newest this many")
    for verb, text in (
        ("grant", "make an account a server operator (docs/PROTOCOL.md, Moderation)"),
        ("revoke", "take server operator from an account"),
    ):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("name")
    verbs.add_parser("operators", help="list the server operators")
    sban = verbs.add_parser("ban", help="ban an account from the server (ends its session)")
    sban.add_argument("name")
    sban.add_argument("--reason", help="shown to them at login")
    sban.add_argument("--hours", type=float, help="for this long (default: until unban)")
    verbs.add_parser("unban", help="end an account's server ban").add_argument("name")
    verbs.add_parser("bans", help="list the server bans in force")
    reg = verbs.add_parser("registrations", help="take new accounts or not (under attack)")
    reg.add_argument("state", choices=("open", "closed"))
    audit = verbs.add_parser("audit", help="the moderation audit log, newest first")
    audit.add_argument("--room", help="of this room only")
    audit.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv[1:]))
    try:
        if args.verb in _MODERATION:
            out = _moderation(args)
        elif _running(args.db):
            out = _on_server(_remote(args), args)
        else:
            out = _offline(args)
    except AdminError as exc:
        print(f"chat-server admin: {exc}", file=sys.stderr)
        return 1
    for line in out:
        print(line)
    return 0


def _on_server(remote: Remote, args: argparse.Namespace) -> list[str]:
    verb = args.verb
    if verb == "accounts":
        return [_account_line(a) for a in remote.call("GET", "/admin/accounts")]
    if verb == "sessions":
        return [_session_line(s) for s in remote.call("GET", "/admin/sessions")]
    if verb == "rooms":
        return _room_lines(remote.call("GET", "/admin/rooms"))
    if verb == "prune":
        query = {}
        if args.days is not None:
            query["days"] = str(args.days)
        if args.max is not None:
            query["max"] = str(args.max)
        got = remote.call("POST", "/admin/prune", query=query)
        return [f"pruned {got['deleted']} messages; the oldest kept is seq {got['oldest_seq']}"]
    if verb in ("create", "reset-password"):
        password = read_password()
        got = remote.call("POST", f"/admin/{verb}", password.encode(), {"name": args.name})
        return [got["said"]]
    got = remote.call("POST", f"/admin/{verb}", query={"name": args.name})
    return [got["said"]]


def _offline(args: argparse.Namespace) -> list[str]:
    """The server is stopped: on the SQLite file itself."""
    from chatroom_server.accounts import AccountExists, AccountStore

    verb = args.verb
    db = Path(args.db)
    if verb in ("sessions", "disconnect"):
        raise AdminError(f"no server has {db} open: nobody is logged in")
    if not db.is_file():
        raise AdminError(f"no database at {db}")
    if verb == "rooms":
        from chatroom_server.admin_http import describe_rooms
        from chatroom_server.messagelog import MessageLog
        from chatroom_server.rooms import RoomBook

        mlog = MessageLog(db)
        try:
            book = RoomBook()
            book.load(*mlog.load_rooms())
        finally:
            mlog.close()
        return _room_lines(describe_rooms(book))
    if verb == "prune":
        from chatroom_server.messagelog import MessageLog

        if args.days is None and args.max is None:
            raise AdminError("with the server stopped, say what to prune: --days or --max")
        mlog = MessageLog(db)
        try:
            deleted = mlog.prune(
                now=time.time(),
                max_age=None if args.days is None else args.days * 86400,
                max_count=args.max,
            )
            return [f"pruned {deleted} messages; the oldest kept is seq {mlog.oldest_seq}"]
        finally:
            mlog.close()
    store = AccountStore(db)
    try:
        if verb == "accounts":
            return [_account_line({"name": n, "created": c}) for n, c in store.accounts()]
        if verb == "create":
            password = _checked(read_password())
            try:
                store.register(args.name, password)
            except AccountExists:
                raise AdminError(f"the name {args.name} is taken") from None
            return [f"created {args.name}"]
        if verb == "delete":
            if not store.delete(args.name):
                raise AdminError(f"no account {args.name}")
            return [f"deleted {args.name}"]
        if verb == "reset-password":
            if not store.set_password(args.name, _checked(read_password())):
                raise AdminError(f"no account {args.name}")
            return [f"set a new password for {args.name}"]
    finally:
        store.close()
    raise AdminError(f"unknown verb {verb}")  # argparse allows no other


_MODERATION = frozenset(
    ("grant", "revoke", "operators", "audit", "ban", "unban", "bans", "registrations")
)


def _moderation(args: argparse.Namespace) -> list[str]:
    """The moderation verbs, on the SQLite file (module docstring)."""
    import sqlite3

    from chatroom_server import modstore, servergate

    if args.db.startswith(("postgresql://", "postgres://")):
        raise AdminError("server operators and the audit of a cluster are not served yet")
    path = Path(args.db)
    if not path.is_file():
        raise AdminError(f"no database at {path}")
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "operators" not in tables:
            raise AdminError(
                f"{path} has no moderation tables yet: start this version of the server on it "
                "once (it upgrades the schema)"
            )
        if args.verb == "operators":
            return [f"{n}\tsince {_stamp(t)}" for n, t in modstore.operators(db)]
        if args.verb == "audit":
            if args.limit < 1:
                raise AdminError("--limit is at least 1")
            return [_audit_line(r) for r in modstore.audit(db, args.room, args.limit)]
        now = time.time()
        if args.verb == "bans":
            return [b.text() for b in servergate.bans(db, now)]
        if args.verb == "registrations":
            servergate.set_registrations(db, args.state == "open", now)
            return [f"new accounts: {args.state}"]
        row = db.execute("SELECT name FROM accounts WHERE name = ?", (args.name,)).fetchone()
        if row is None:
            raise AdminError(f"no account {args.name}")
        name = str(row[0])
        if args.verb == "ban":
            if args.hours is not None and not 0 < args.hours <= 24 * 365 * 10:
                raise AdminError("--hours is more than 0 and at most ten years")
            expires = None if args.hours is None else now + args.hours * 3600
            servergate.ban(db, name, args.reason, expires, now)
            return [f"{name} is banned from the server", *_end_session(args, name)]
        if args.verb == "unban":
            if not servergate.unban(db, name, now):
                raise AdminError(f"{name} is not banned from the server")
            return [f"{name} may log in again"]
        if args.verb == "grant":
            done = modstore.grant(db, name)
            return [f"{name} is a server operator" + ("" if done else " already")]
        if not modstore.revoke(db, name):
            raise AdminError(f"{name} is not a server operator")
        return [f"{name} is no longer a server operator"]
    except sqlite3.Error as exc:
        raise AdminError(f"{path}: {exc}") from None
    finally:
        db.close()


def _end_session(args: argparse.Namespace, name: str) -> list[str]:
    """A banned user's session on the running server, ended through its endpoint."""
    if not _running(args.db):
        return []
    try:
        got = _remote(args).call("POST", "/admin/disconnect", query={"name": name})
    except AdminError as exc:
        return [f"their session (if any) goes on until it ends: {exc}"]
    return [str(got["said"])]


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _audit_line(r: tuple[Any, ...]) -> str:
    seq, ts, actor, action, target, room, reason, detail = r
    parts = [_stamp(ts), actor, action, target or "-", f"#{room}" if room else "-"]
    parts.append(reason or "-")
    if detail and detail != "{}":
        parts.append(detail)
    if seq is not None:
        parts.append(f"seq {seq}")
    return "\t".join(str(p) for p in parts)


def _checked(password: str) -> str:
    least = Limits().min_password
    if len(password) < least:
        raise AdminError(f"a password has at least {least} characters")
    return password


def _account_line(a: dict[str, Any]) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a["created"]))
    return f"{a['name']}\tcreated {created} UTC"


def _room_lines(rooms: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rooms:
        modes = f" {r['modes']}" if r["modes"] else ""
        out.append(f"{r['name']}{modes}\t{len(r['members'])} members\t{r['topic']}".rstrip())
        for user, role in r["members"]:
            out.append(f"  {user}\t{role}")
    return out


def _session_line(s: dict[str, Any]) -> str:
    return f"{s['name']}\t{s['addr']}\t{s['transport']}\t{s['seconds']:.0f} s"
