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
§Moderation) always work on the database itself, SQLite's file or a cluster's
PostgreSQL, the servers running or not: a server reads them from the database at each
login and moderation command, so a change applies at once, and every server on the
database ends within about a second the sessions a new ban names
(chatroom_server.servergate).

A password is read from standard input (one line) when it is not a terminal, else
prompted for twice; it is never an argument (it would show in ``ps`` and shell history).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatroom.protocol import Limits
from chatroom_server import dbfile, olines

if TYPE_CHECKING:
    from chatroom_server import servergate

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
    verbs.add_parser(
        "hash-password",
        help="print an IRC O-line's hashed secret, for --irc-oper NAME:HASH "
        "(password from stdin or prompted; docs/IRC.md)",
    )
    sban = verbs.add_parser(
        "ban", help="ban an account or an address from the server (ends their sessions)"
    )
    sban.add_argument("name", nargs="?", help="the account")
    sban.add_argument("--address", help="instead of an account: an address or CIDR network")
    sban.add_argument("--reason", help="shown to them at login")
    sban.add_argument("--hours", type=float, help="for this long (default: until unban)")
    unban = verbs.add_parser("unban", help="end an account's or an address's server ban")
    unban.add_argument("name", nargs="?", help="the account")
    unban.add_argument("--address", help="instead of an account: the address or network banned")
    verbs.add_parser("bans", help="list the server bans in force (accounts, then addresses)")
    reg = verbs.add_parser("registrations", help="take new accounts or not (under attack)")
    reg.add_argument("state", choices=("open", "closed"))
    audit = verbs.add_parser("audit", help="the moderation audit log, newest first")
    audit.add_argument("--room", help="of this room only")
    audit.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv[1:]))
    if args.verb == "hash-password":  # no database: the hash goes into the configuration
        print(olines.hash_secret(read_password()))
        return 0
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
    """The moderation verbs, on the database itself: SQLite's file or a cluster's
    PostgreSQL (module docstring)."""
    from chatroom_server import servergate

    if args.verb in ("ban", "unban") and (args.name is None) == (args.address is None):
        raise AdminError(f"{args.verb} takes an account NAME or --address ADDRESS (one of them)")
    if args.db.startswith(("postgresql://", "postgres://")):
        return _on_postgres(args)
    import sqlite3

    path = Path(args.db)
    if not path.is_file():
        raise AdminError(f"no database at {path}")
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "address_bans" not in tables:
            raise AdminError(
                f"{path} has no tables for this yet: start this version of the server on it "
                "once (it upgrades the schema)"
            )
        return _verb(args, servergate.SqliteSql.of(db))
    except servergate.GateUnavailable as exc:
        raise AdminError(f"{path}: {exc}") from None
    finally:
        db.close()


def _on_postgres(args: argparse.Namespace) -> list[str]:
    """A cluster's moderation, on its PostgreSQL: every node reads it at each login
    and ends the sessions a new ban names (chatroom_server.servergate)."""
    try:
        import psycopg

        from chatroom_server.cluster.pg import SCHEMA_VERSION, PgSql
    except ImportError as exc:
        raise AdminError(f"a PostgreSQL --db needs the cluster extra ({exc})") from None
    from chatroom_server import servergate

    try:
        db = psycopg.connect(args.db, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise AdminError(f"cannot connect to PostgreSQL: {exc}") from None
    with db:
        try:
            row = db.execute("SELECT value FROM chat_meta WHERE key = 'schema'").fetchone()
        except psycopg.Error:
            row = None
        if row is None or int(row[0]) < SCHEMA_VERSION:
            raise AdminError(
                "the cluster's database has no tables for this yet: start a node of this "
                "version on it once (it upgrades the schema)"
            )
        try:
            return _verb(args, PgSql(lambda: contextlib.nullcontext(db)))
        except servergate.GateUnavailable as exc:
            raise AdminError(str(exc)) from None


def _verb(args: argparse.Namespace, sql: servergate.Sql) -> list[str]:
    from chatroom_server import servergate

    if args.verb == "operators":
        return [f"{n}\tsince {_stamp(t)}" for n, t in servergate.operators(sql)]
    if args.verb == "audit":
        if args.limit < 1:
            raise AdminError("--limit is at least 1")
        return [_audit_line(r) for r in servergate.audit(sql, args.room, args.limit)]
    now = time.time()
    if args.verb == "bans":
        return [b.text() for b in servergate.bans(sql, now)] + [
            b.text() for b in servergate.address_bans(sql, now)
        ]
    if args.verb == "registrations":
        servergate.set_registrations(sql, args.state == "open", now)
        return [f"new accounts: {args.state}"]
    if args.verb in ("ban", "unban") and args.address is not None:
        return _address_verb(args, sql, now)
    name = servergate.account(sql, args.name)
    if name is None:
        raise AdminError(f"no account {args.name}")
    if args.verb == "ban":
        servergate.ban(sql, name, args.reason, _expires(args, now), now)
        return [f"{name} is banned from the server", _ENDS]
    if args.verb == "unban":
        if not servergate.unban(sql, name, now):
            raise AdminError(f"{name} is not banned from the server")
        return [f"{name} may log in again"]
    if args.verb == "grant":
        done = servergate.grant(sql, name, now)
        return [f"{name} is a server operator" + ("" if done else " already")]
    if not servergate.revoke(sql, name, now):
        raise AdminError(f"{name} is not a server operator")
    return [f"{name} is no longer a server operator"]


def _address_verb(args: argparse.Namespace, sql: servergate.Sql, now: float) -> list[str]:
    from chatroom_server import servergate

    try:
        net = servergate.network(args.address)
    except servergate.BadAddress as exc:
        raise AdminError(str(exc)) from None
    if args.verb == "ban":
        servergate.ban_address(sql, net, args.reason, _expires(args, now), now)
        return [f"{net} is banned from the server", _ENDS]
    if not servergate.unban_address(sql, net, now):
        raise AdminError(f"{net} is not banned from the server")
    return [f"{net} may log in again"]


# Every server on the database reads the bans once a second (servergate.WATCH_INTERVAL).
_ENDS = "sessions it names end within about a second, on every server on this database"


def _expires(args: argparse.Namespace, now: float) -> float | None:
    if args.hours is not None and not 0 < args.hours <= 24 * 365 * 10:
        raise AdminError("--hours is more than 0 and at most ten years")
    return None if args.hours is None else now + args.hours * 3600


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
