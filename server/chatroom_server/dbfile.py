"""The SQLite database as a file: created private, held by whoever has it open, and
copied consistently while a server writes to it (docs/OPERATIONS.md).

- **Private.** The file holds the password hashes and every DM in plain text, so it and
  every copy of it are created mode 0600 (:func:`create_private`); SQLite gives the -wal
  and -shm files the database's mode.
- **Held.** A process using the database keeps a shared ``flock`` on it
  (:func:`hold`); ``chat-server restore`` takes it exclusively (:func:`exclusive`), so a
  restore never writes under a running server, and a server never starts in the middle
  of a restore. ``flock`` locks are apart from the POSIX locks SQLite itself takes on
  Linux, so neither sees the other's.
- **Copied.** :func:`copy` uses SQLite's online backup API in one step: the copy is one
  read transaction's snapshot, so it is consistent however busy the server is (in WAL
  mode a reader never stops the writer). Copying the file with ``cp`` while a server runs
  is not a backup: the last commits are in the -wal file, and a copy taken mid-write can
  be torn.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path


class InUse(Exception):
    """The database is open in another process (a server, or a restore)."""


def create_private(path: Path) -> bool:
    """Create ``path`` empty and readable by this user only, unless it exists; whether it
    did. SQLite takes an empty file for a new database and creates its -wal and -shm
    files with the mode of the database's (docs/SECURITY.md, a local user)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError:
        return False  # a missing directory, say: sqlite3.connect says so in its words
    os.close(fd)
    return True


def hold(path: Path) -> int | None:
    """A shared hold on the database for as long as the returned descriptor is open
    (:func:`release` it); None when the file cannot be opened (sqlite3.connect then
    says why). Raises :class:`InUse` while a restore holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InUse(f"{path} is being restored (chat-server restore); try again after") from None
    except OSError:
        pass  # a file system without flock: nothing to hold, nothing to refuse
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # drops the flock


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold ``path`` (created private if missing) so that nothing else opens it as a
    server does; :class:`InUse` if something has it open now."""
    create_private(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InUse(f"{path} is in use (a running chat-server?): stop it first") from None
        yield
    finally:
        os.close(fd)


def in_use(path: Path) -> bool:
    """Whether a process has the database open as a server does (:func:`hold`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no file: nobody has it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def connect_existing(path: Path) -> sqlite3.Connection:
    """A connection to a database that must exist (never creates an empty one)."""
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}")
    return sqlite3.connect(path, isolation_level=None, timeout=10.0)


def copy(
    source: sqlite3.Connection,
    dest: Path,
    *,
    mark: Callable[[sqlite3.Connection], None] | None = None,
) -> None:
    """Copy the database ``source`` is connected to into a new file ``dest``, private,
    as one self-contained file (rollback journal, no -wal): first into
    ``dest.partial``, renamed once complete and synced, so that a file at ``dest`` is
    always a whole copy. ``mark(copy)`` may write to the copy before that (an open
    transaction is committed by the caller's function itself)."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists: choose a new file name")
    tmp = dest.with_name(dest.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a copy that was interrupted before
    if not create_private(tmp):
        raise OSError(f"cannot create {tmp}")
    try:
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            # pages=-1: the whole database in one step, from one snapshot. In steps, a
            # write to the source between them restarts the copy, which a busy server
            # could make last forever.
            source.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.execute("PRAGMA synchronous=FULL")
            if mark is not None:
                mark(dst)
        finally:
            dst.close()
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
