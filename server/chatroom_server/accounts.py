"""Accounts: an SQLite file of usernames and argon2id password hashes.

Threading: one sqlite3 connection, guarded by ``AccountStore._lock``. A login's reads and
writes run on the store's own threads (:meth:`AccountStore.lookup`, ``register``,
``authenticate``): when the connection threads of a login storm took ``_lock`` themselves,
they queued for it while its holder waited for the GIL. Hashing and verifying (tens of
milliseconds each, and argon2-cffi releases the GIL while it works) always run *outside*
that lock, so a login storm never stalls another client's traffic or another login's
database access.

Memory: each argon2id hash needs 19 MiB. Registering and verifying run on the store's
own ``hash_workers`` threads (:func:`default_workers`), so a storm of 10,000 logins
queues instead of asking for 190 GB; :func:`_return_big_allocations_to_the_os` makes glibc
give those buffers back after each hash instead of keeping them in every thread's arena.
Running them there also keeps the connection threads' stacks shallow: a stack page that
argon2 or SQLite touched once stays resident for the life of the thread, and a server
holds one such thread per idle client (docs/PERFORMANCE.md, memory per connection).
A caller waits at most ``wait_timeout`` s and gets :class:`AccountStoreBusy` after it.

Cheap hashes (``--password-hash load-test``, 8 KiB): a login the store has seen succeed
before is checked on the caller's thread against a keyed BLAKE2b of that password
(``_proofs``, at most ``PROOFS_MAX``; the key is random per process and never leaves it).
The trip to a store thread and back (two wake-ups, a Future's Condition, SQLite calls
each giving the GIL up) cost more than such a hash: in a rejoin of 10,000 the store
threads made 15 context switches a login. BLAKE2b, unlike argon2 (3.7 KiB of stack more
than the trip), touches no stack page the connection thread would keep
(docs/PERFORMANCE.md, "Logins without the store's threads"). Never with the OWASP hash:
a fast hash of a real password in memory would undo what argon2 is for.

A first login with a cheap hash makes one trip, not two: the lookup that finds no
account hashes the password while it is on the store thread anyway (``_prehashed``), and
the registration that usually follows queues that hash for the group commit from the
caller's thread (:meth:`register`). Never with the OWASP hash: hashing every password of
an unknown name before the server has decided to register it would let one address
spend 25 ms of CPU and 19 MiB a try, where the registration limit stops it now.

Durability: WAL journal with ``synchronous=FULL``, so a registration that was answered
with ``login_ok`` survives a crash of the process or the machine. Registrations commit
in groups (:meth:`AccountStore._insert_later`): one store thread at a time commits every
registration queued by then in one transaction, one ``fsync`` for all, while the
registering connection threads wait for it asleep, holding no store thread. One commit
each, under ``_lock``, on the store thread that hashed it (0.4-25 ms of ``fsync`` on
this shared disk, the GIL given up and waited for again inside it) made a first-time
storm of 10,000 a queue of 10,000 commits, 16 at most in flight
(docs/PERFORMANCE.md, "Arrival storms").

Privacy: the file (shared with the message log, every DM in plain text) is created mode
0600 (:func:`~chatroom_server.dbfile.create_private`), and SQLite gives its -wal and -shm
files the same mode. Its schema, for both stores, is chatroom_server.schema's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from chatroom.protocol import username_key
from chatroom_server import schema
from chatroom_server.dbfile import InUse, create_private, hold, release

log = logging.getLogger(__name__)
T = TypeVar("T")

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1. The parameters travel
# inside every hash string, so changing these later rehashes old accounts on next login.
OWASP_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# For load tests only (``chat-server --password-hash load-test``): the least argon2id
# allows (8 KiB, t=1), ~25 µs instead of ~25 ms, so 10,000 logins measure the server, not
# argon2 (at 256 KiB a hash was ~0.12 ms, a fifth of the server's CPU in a rejoin of
# 10,000; docs/PERFORMANCE.md). Never for real accounts: the hash is ~1,000x cheaper to
# attack, and a later start with the OWASP setting rehashes each account at its next login.
LOAD_TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
HASHERS = {"owasp": OWASP_HASHER, "load-test": LOAD_TEST_HASHER}
# A hasher needing at most this much memory (KiB) is cheap enough to attack that keeping a
# keyed fast hash of a password that passed it weakens nothing (module docstring).
PROOF_MAX_KIB = 64
# Logins remembered at most (some 300 bytes each): the first accounts to log in or
# register since the start; later ones take the trip to a store thread each time.
PROOFS_MAX = 100_000
# The cheap hashes made ahead of a registration that may follow a lookup (module
# docstring); when this many are waiting, registrations that never came, all are dropped.
PREHASHED_MAX = 4096


def _return_big_allocations_to_the_os() -> None:
    """Pin glibc's mmap threshold at 128 KiB. By default it rises after the first large
    free, and then every thread keeps its freed 19 MiB argon2 buffers resident, a
    gigabyte for a few hundred logged-in clients. A no-op off glibc."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3
        if not libc.mallopt(m_mmap_threshold, 128 * 1024):
            log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    except (OSError, AttributeError) as exc:
        log.debug("cannot tune malloc: %s", exc)


_malloc_tuned = False


def default_workers(hasher: PasswordHasher) -> int:
    """The store's threads: twice the cores, or more while their hashes together stay
    under 64 MiB, at most 16. With OWASP hashes (19 MiB) that is twice the cores: more
    would only share them and hold more memory. With load-test hashes (8 KiB) it is
    16: a login is then mostly waiting for the GIL, not hashing, and with four threads
    their queue was where a rejoin of 10,000 waited (docs/PERFORMANCE.md, "Mass
    arrivals")."""
    floor = 2 * (os.cpu_count() or 1)
    return max(floor, min(16, 64 * 1024 // hasher.memory_cost))


def _not_weaker(hasher: PasswordHasher, stored: str) -> bool:
    """Whether rehashing ``stored`` with ``hasher`` keeps it at least as costly to
    attack. A start with ``--password-hash load-test`` must not bring real accounts'
    OWASP hashes down to it as they log in (docs/SECURITY.md)."""
    try:
        old = extract_parameters(stored)
    except InvalidHashError:
        return True  # not a hash we can read: replace it
    return hasher.memory_cost >= old.memory_cost and hasher.time_cost >= old.time_cost


class AccountStoreError(Exception):
    """The credentials file cannot be used (not a database, unreadable, newer schema)."""


class AccountExists(Exception):
    """Registration lost a race: the name (ignoring case) is taken."""


class AccountStoreBusy(Exception):
    """No worker could check the password in time, the store is closed, or its database
    cannot answer now (locked by another process, say)."""


def _busy(exc: Exception) -> AccountStoreBusy:
    return AccountStoreBusy(f"the account database cannot answer now ({exc})")


@dataclass(frozen=True, slots=True)
class Account:
    name: str  # canonical spelling
    password_hash: str


class _Insert:
    """A registration waiting for its group's commit (AccountStore._insert_later)."""

    __slots__ = ("_done", "error", "hash", "name", "proof", "then")

    def __init__(
        self,
        name: str,
        password_hash: str,
        proof: bytes | None = None,
        then: Callable[[Exception | None], None] | None = None,
    ) -> None:
        self.name = name
        self.hash = password_hash
        # With ``then`` (AccountStore.register_soon): the password's proof, remembered
        # once the row is durable, and what the committing thread calls then, with the
        # error that refused it or None. Nobody waits in ``wait``.
        self.proof = proof
        self.then = then
        self.error: Exception | None = None  # set by the committing thread before _done
        self._done = threading.Lock()  # released once committed or refused
        self._done.acquire()

    def stored(self) -> None:
        self._done.release()
        if self.then is not None:
            try:
                self.then(self.error)
            except Exception:
                # A bug in the continuation costs its registration's client, never the
                # commit loop and the registrations after it.
                log.exception("the continuation of %s's registration failed", self.name)

    def wait(self, timeout: float) -> None:
        """The registering thread, asleep: returns once the account is stored; raises
        what refused it (AccountExists, AccountStoreBusy)."""
        if not self._done.acquire(timeout=timeout):
            raise AccountStoreBusy(f"the registration was not stored within {timeout:.0f} s")
        if self.error is not None:
            raise self.error


class AccountStore:
    # Registrations queue for a shared commit (_insert_later) without I/O on the caller's
    # thread: a hash made ahead can be queued from there (module docstring).
    GROUP_COMMIT = True

    def __init__(
        self,
        path: str | Path,  # the SQLite file (the PostgreSQL store: its description)
        hasher: PasswordHasher = OWASP_HASHER,
        hash_workers: int | None = None,  # None: default_workers(hasher)
        wait_timeout: float = 120.0,
        busy_timeout: float = 10.0,  # s a write waits for another's lock, then "busy"
    ) -> None:
        self.path = Path(path)
        self._hasher = hasher
        self.wait_timeout = wait_timeout
        self.busy_timeout = busy_timeout
        if hash_workers is None:
            hash_workers = default_workers(hasher)
        self._workers = ThreadPoolExecutor(
            hash_workers, thread_name_prefix="chat-accounts", initializer=self._worker_started
        )
        _return_big_allocations_to_the_os()
        self._lock = threading.Lock()  # guards self._db (one connection, many threads)
        # Registrations for the next group commit, and whether a store thread is
        # committing (it takes the next group before it stops): both guarded by
        # _commit_lock, which is never held across a syscall (_insert_later).
        self._commit_lock = threading.Lock()
        self._inserts: deque[_Insert] = deque()
        self._committing = False
        self._readers = threading.local()  # .db: a store thread's own read connection
        self._reader_dbs: list[sqlite3.Connection] = []  # all of those, for close(); _lock
        # username_key -> (the account, _proof() of a password that passed for it):
        # written after a registration (by the registering thread) or a check that
        # passed (by a store thread), read by authenticate() on any thread. A password
        # changes and an account goes only by an operator (delete, set_password), which
        # drop the entry; otherwise it stays true. Single dict operations, atomic under
        # the GIL: no lock. None: not kept at all.
        self._proofs: dict[str, tuple[Account, bytes]] | None = (
            {} if hasher.memory_cost <= PROOF_MAX_KIB else None
        )
        self._proof_key = os.urandom(32)
        # username_key -> (_proof() of the password, its hash): made by a store thread in
        # a lookup that found no account, taken by the registration that follows on its
        # connection's thread. Single dict operations (atomic under the GIL): no lock.
        # None: not made (a costly hash, or no group commit to queue it for).
        self._prehashed: dict[str, tuple[bytes, str]] | None = (
            {} if self._proofs is not None and self.GROUP_COMMIT else None
        )
        self._hold: int | None = None  # the file's shared flock (chatroom_server.dbfile)
        self._open()

    def _open(self) -> None:
        created = create_private(self.path)
        try:
            self._hold = hold(self.path)
        except InUse as exc:
            raise AccountStoreError(str(exc)) from exc
        try:
            self._db = sqlite3.connect(
                self.path,
                check_same_thread=False,
                isolation_level=None,
                timeout=self.busy_timeout,
            )
        except sqlite3.Error as exc:
            release(self._hold)
            raise AccountStoreError(f"cannot open credentials file {self.path}: {exc}") from exc
        try:
            self._init_schema()
        except schema.SchemaError as exc:
            self._db.close()
            release(self._hold)
            raise AccountStoreError(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            self._db.close()
            release(self._hold)
            # Never "repair" by overwriting: that would destroy someone's accounts.
            raise AccountStoreError(
                f"{self.path} is not a chatroom credentials database ({exc}); "
                "choose another path with --db"
            ) from exc
        if not created:
            self._check_private()  # a credentials database: said once it is known to be

    def _check_private(self) -> None:
        """An existing file other users may read: said once, at start-up, and left as
        it is (the operator's file; servers before 0600 creation made it 0644)."""
        try:
            mode = self.path.stat().st_mode & 0o777
        except OSError:
            return  # sqlite3.connect reports what is wrong with the path
        if mode & 0o077:
            log.warning(
                "%s is readable by other users (mode %03o): it holds the password hashes "
                "and every DM in plain text; chmod 600 it",
                self.path,
                mode,
            )

    def _init_schema(self) -> None:
        db = self._db
        # Reading first makes a non-database file fail before anything is written to it.
        schema.version_of(db)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        schema.migrate(db, self.path)  # the whole file's schema (chatroom_server.schema)

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._close_db()

    def _close_db(self) -> None:
        with self._lock:
            self._db.close()
            for db in self._reader_dbs:
                db.close()
            self._reader_dbs.clear()
            release(self._hold)
            self._hold = None

    def _worker_started(self) -> None:
        """Each store thread's first act: a read connection of its own, so that its
        lookups take no lock (WAL lets readers run beside the writer). Sharing ``_db``
        under ``_lock`` they convoyed: a holder that gave the GIL up inside SQLite
        waited for it back while every other lookup waited for the holder."""
        try:
            db = sqlite3.connect(
                self.path,
                check_same_thread=False,
                isolation_level=None,
                timeout=self.busy_timeout,
            )
            db.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            log.warning("a store thread reads through the shared connection: %s", exc)
            return
        with self._lock:
            self._reader_dbs.append(db)
        self._readers.db = db

    def _on_worker(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on one of the store's threads (module docstring, Memory)."""
        try:
            future = self._workers.submit(fn, *args)
        except RuntimeError as exc:  # shut down: the server is stopping
            raise AccountStoreBusy("the account store is closed") from exc
        try:
            return future.result(timeout=self.wait_timeout)
        except TimeoutError as exc:
            future.cancel()
            raise AccountStoreBusy(
                f"no password check within {self.wait_timeout:.0f} s (a login storm?)"
            ) from exc

    # The database calls: one method each, so the cluster's PostgreSQL store
    # (chatroom_server.cluster.pg) replaces only these. A database that cannot answer
    # (locked by another process past ``busy_timeout``, unreadable, disk full) is
    # :class:`AccountStoreBusy`, which a login answers with ``unavailable``.

    def get(self, name: str) -> Account | None:
        query = "SELECT name, hash FROM accounts WHERE name = ?"
        own: sqlite3.Connection | None = getattr(self._readers, "db", None)
        try:
            if own is not None:
                row = own.execute(query, (name,)).fetchone()  # a store thread: no lock
            else:
                with self._lock:
                    row = self._db.execute(query, (name,)).fetchone()
        except sqlite3.Error as exc:
            raise _busy(exc) from exc
        return Account(row[0], row[1]) if row else None

    def count(self) -> int:
        try:
            with self._lock:
                return int(self._db.execute("SELECT count(*) FROM accounts").fetchone()[0])
        except sqlite3.Error as exc:
            raise _busy(exc) from exc

    def _insert(self, name: str, password_hash: str) -> None:
        """Store a new account; :class:`AccountExists` if the name is taken."""
        self._insert_later(name, password_hash).wait(self.wait_timeout)

    def _insert_later(self, name: str, password_hash: str) -> _Insert:
        """Queue a new account for the next group commit (module docstring); the
        caller waits for it with ``wait``. A store thread commits unless one already
        is, and that one takes this in its next group."""
        return self._queue(_Insert(name, password_hash))

    def _queue(self, ins: _Insert) -> _Insert:
        """``_insert_later``'s queueing, of a registration made already."""
        with self._commit_lock:
            self._inserts.append(ins)
            begin = not self._committing
            self._committing = True
        if begin:
            try:
                self._workers.submit(self._commit_loop)
            except RuntimeError:  # shut down: the server is stopping
                with self._commit_lock:
                    self._committing = False
                    group = list(self._inserts)
                    self._inserts.clear()
                for lost in group:
                    lost.error = AccountStoreBusy("the account store is closed")
                    lost.stored()
        return ins

    def _commit_loop(self) -> None:
        """A store thread: commit groups until none is waiting."""
        while True:
            with self._commit_lock:
                group = list(self._inserts)
                self._inserts.clear()
                if not group:
                    self._committing = False
                    return
            try:
                with self._lock:
                    names = self._commit_locked(group)
            finally:
                for ins in group:
                    if ins.proof is not None and ins.error is None:  # committed
                        # Before its continuation runs: the login that follows it is
                        # checked against this proof, with no trip (register_soon).
                        self._remember_proof(Account(ins.name, ins.hash), ins.proof)
                    ins.stored()
            # One line per commit: a line per registration, each a write that gives the
            # GIL up with the log handler's lock held, queued the store threads.
            if len(names) == 1:
                log.info("registered account %s", names[0])
            elif names:
                log.info("registered %d accounts: %s, ...", len(names), ", ".join(names[:10]))

    def _commit_locked(self, group: list[_Insert]) -> list[str]:
        """Store ``group`` in one transaction; each one's error is set if refused.
        Returns the names stored."""
        db, now = self._db, time.time()
        committed = False
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO accounts (name, hash, created) VALUES (?, ?, ?)",
                    [(ins.name, ins.hash, now) for ins in group],
                )
                if db.total_changes - before < len(group):
                    # Some names were taken (before, or earlier in this group): the row
                    # with another hash (each has its own salt) is someone else's.
                    for ins in group:
                        row = db.execute(
                            "SELECT hash FROM accounts WHERE name = ?", (ins.name,)
                        ).fetchone()
                        if row is None or row[0] != ins.hash:
                            ins.error = AccountExists(ins.name)
                db.execute("COMMIT")
                committed = True
            finally:
                if not committed and db.in_transaction:
                    db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            for ins in group:
                ins.error = _busy(exc)
        finally:
            for ins in group:
                if not committed and not isinstance(ins.error, AccountStoreBusy):
                    ins.error = AccountStoreBusy("the registration was not stored")
        return [ins.name for ins in group if committed and ins.error is None]

    def _update_hash(self, name: str, password_hash: str) -> bool:
        """Whether the account exists (and now has this hash)."""
        try:
            with self._lock:
                cur = self._db.execute(
                    "UPDATE accounts SET hash = ? WHERE name = ?", (password_hash, name)
                )
        except sqlite3.Error as exc:
            raise _busy(exc) from exc
        return cur.rowcount > 0

    def _delete(self, name: str) -> bool:
        try:
            with self._lock:
                cur = self._db.execute("DELETE FROM accounts WHERE name = ?", (name,))
        except sqlite3.Error as exc:
            raise _busy(exc) from exc
        return cur.rowcount > 0

    def accounts(self) -> list[tuple[str, float]]:
        """Every account's name and creation time, by name (chat-server admin)."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT name, created FROM accounts ORDER BY name"
                ).fetchall()
        except sqlite3.Error as exc:
            raise _busy(exc) from exc
        return [(str(r[0]), float(r[1])) for r in rows]

    # ------------------------------------------------------------ administration
    # (chat-server admin, chatroom_server.adminctl): the only ways a password changes or
    # an account goes, so each forgets what ``_proofs`` remembered of it.

    def delete(self, name: str) -> bool:
        """Delete the account (its messages stay); whether there was one."""
        gone = self._delete(name)
        if self._proofs is not None:
            self._proofs.pop(username_key(name), None)
        return gone

    def set_password(self, name: str, password: str) -> bool:
        """Give the account a new password; whether there is such an account."""
        password_hash = self._on_worker(self._hasher.hash, password)
        done = self._update_hash(name, password_hash)
        if self._proofs is not None:
            self._proofs.pop(username_key(name), None)
        return done

    def lookup(self, name: str) -> Account | None:
        """:meth:`get` on one of the store's threads, as a login does it. On the
        caller's thread, a login storm's threads queued for ``_lock`` while its holder
        waited for the GIL (a convoy: 36 ms a lookup in a rejoin of 10,000, the largest
        part of a login); a store thread reads through its own connection, without the
        lock, and the connection thread's stack never grows into SQLite's (module
        docstring, Memory)."""
        return self._on_worker(self.get, name)

    def authenticate(self, name: str, password: str) -> tuple[Account | None, bool]:
        """The account called ``name`` (None if there is none) and whether ``password``
        is its password: the lookup and the check in one trip to a store
        thread. In a login storm those trips are the queue every login waits in; with
        a cheap hash, a login that passed before makes no trip (module docstring)."""
        if self._proofs is not None:
            seen = self._proofs.get(username_key(name))
            # A mismatch is not the answer: the store's own check below gives it.
            if seen is not None and hmac.compare_digest(seen[1], self._proof(password)):
                return seen[0], True
        return self._on_worker(self._authenticate, name, password)

    def remembered(self, name: str, password: str) -> bool:
        """Whether :meth:`authenticate` would answer from the remembered proofs, with no
        trip to a store thread (a login the admission thread may run itself,
        chatroom_server.listeners). Any thread; a dict lookup and a keyed hash."""
        if self._proofs is None:
            return False
        seen = self._proofs.get(username_key(name))
        return seen is not None and hmac.compare_digest(seen[1], self._proof(password))

    def _authenticate(self, name: str, password: str) -> tuple[Account | None, bool]:
        account = self.get(name)
        if account is None:
            self._prehash(name, password)
            return None, False
        right, current = self._verify(account, password)
        if right and current:
            self._remember(account, password)
        return account, right

    def _proof(self, password: str) -> bytes:
        return hashlib.blake2b(
            password.encode("utf-8", "surrogatepass"), key=self._proof_key, digest_size=32
        ).digest()

    def _remember(self, account: Account, password: str) -> None:
        """Store thread: keep a proof that ``password`` is ``account``'s (module
        docstring, Cheap hashes)."""
        if self._proofs is not None:
            self._remember_proof(account, self._proof(password))

    def _remember_proof(self, account: Account, proof: bytes) -> None:
        proofs, key = self._proofs, username_key(account.name)
        if proofs is not None and (len(proofs) < PROOFS_MAX or key in proofs):
            proofs[key] = (account, proof)

    def _prehash(self, name: str, password: str) -> None:
        """Store thread, a lookup that found no account: hash ``password`` for the
        registration that may follow (module docstring; cheap hashes only)."""
        ahead = self._prehashed
        if ahead is None:
            return
        if len(ahead) >= PREHASHED_MAX:
            ahead.clear()  # lookups whose registration never came (refused, or a typo)
        ahead[username_key(name)] = (self._proof(password), self._hasher.hash(password))

    def register(self, name: str, password: str) -> Account:
        """Create an account; raise :class:`AccountExists` if the name is taken.

        Atomic: the PRIMARY KEY (NOCASE) lets exactly one of two racing registrations win.
        The hash is made on a store thread (or was, by the lookup before: module
        docstring); the commit is waited for on the caller's, asleep, so that a storm's
        registrations share commits.
        """
        ahead = self._prehashed
        made = None if ahead is None else ahead.pop(username_key(name), None)
        ins: _Insert | None
        if made is not None and hmac.compare_digest(made[0], self._proof(password)):
            account, ins = Account(name, made[1]), self._insert_later(name, made[1])
        else:
            account, ins = self._on_worker(self._register, name, password)
        if ins is not None:
            ins.wait(self.wait_timeout)
        self._remember(account, password)
        return account

    @property
    def registers_soon(self) -> bool:
        """Whether :meth:`register_soon` and :meth:`find_here` may be used: a cheap
        hash, and a group commit to queue it for (module docstring)."""
        return self._prehashed is not None

    def find_here(self, name: str) -> Account | None:
        """:meth:`get` on the calling thread, through a read connection of its own (made
        at its first call, closed with the store), never ``_lock``: the admission thread
        looks up a name it may register (chatroom_server.earlylogin ``EarlyLogin.early``) and must
        not wait while a group commit holds the lock through its ``fsync``. A primary
        key read of a WAL database, which no writer blocks."""
        if getattr(self._readers, "db", None) is None:
            self._worker_started()
        if getattr(self._readers, "db", None) is None:
            raise AccountStoreBusy("no read connection of its own")
        return self.get(name)

    def register_soon(
        self, name: str, password: str, then: Callable[[Exception | None], None]
    ) -> None:
        """Any thread, with :attr:`registers_soon` only: hash ``password`` here (a cheap
        hash, some 25 µs), queue the account for the next group commit and return at
        once. The committing store thread calls ``then(None)`` once the account is
        durable (its password remembered first, so a login of it makes no trip), or
        ``then(error)``: :class:`AccountExists` (the name was taken, by then or earlier
        in its group) or :class:`AccountStoreBusy`. Nothing waits in between: the
        admission thread registers a storm's new names this way
        (chatroom_server.earlylogin ``EarlyLogin.early``)."""
        assert self.registers_soon, "a cheap hash and a group commit only"
        password_hash = self._hasher.hash(password)
        self._queue(_Insert(name, password_hash, self._proof(password), then))

    def _register(self, name: str, password: str) -> tuple[Account, _Insert | None]:
        password_hash = self._hasher.hash(password)  # slow; outside the lock on purpose
        return Account(name, password_hash), self._insert_later(name, password_hash)

    def _verify(self, account: Account, password: str) -> tuple[bool, bool]:
        """Store thread: whether the password is right, and whether its stored hash is
        current; rehash it in place when the parameters have changed and that does not
        lower its cost."""
        try:
            self._hasher.verify(account.password_hash, password)  # slow; outside _lock
        except VerifyMismatchError:
            return False, True
        except (VerificationError, InvalidHashError):
            log.error("account %s has an unusable password hash", account.name)
            return False, True
        if self._hasher.check_needs_rehash(account.password_hash) and _not_weaker(
            self._hasher, account.password_hash
        ):
            try:
                self._update_hash(account.name, self._hasher.hash(password))
            except AccountStoreBusy as exc:
                # The password is right whatever the hash; not remembered (_remember),
                # so that the next login checks it again and rehashes.
                log.warning("cannot rehash %s's password now: %s", account.name, exc)
                return True, False
        return True, True
