"""The processes of a run, each started, signalled and stopped only by the harness.

- :class:`Redis` and :class:`Postgres`: private servers on free ports in the run's
  directory (PostgreSQL by ``initdb``; as root, initdb and the server run as the
  ``postgres`` user, since initdb refuses root).
- :class:`ChatNode`: one ``chat-server`` process, a cluster node or the single SQLite
  server, on a port fixed for the run, so a node restarted after SIGKILL comes back
  where its proxy expects it (and under the same node name, as a supervisor would
  restart it).
- :class:`Tmpfs`: the single server's database on a small tmpfs the harness mounts and
  fills (root only: without it the disk-full fault is left out, and the run says so).
- :func:`sweep`: what runs killed earlier left behind (their children die with them,
  but a tmpfs stays mounted and PostgreSQL's temporary directory stays): each mount and
  directory names its run's pid in :data:`OWNER`, and those of dead runs go.

Every process runs in a session of its own (``start_new_session``), so a signal to its
process group reaches exactly what the harness started (PostgreSQL's children too) and
nothing else. Output goes to a log file per process in the run's directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ChatNode",
    "Postgres",
    "Proc",
    "Redis",
    "ServiceError",
    "Tmpfs",
    "free_port",
    "sweep",
]

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A process of the run could not be started (its log says why)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    """Until ``ready()``; fails at once if the process exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        try:
            status = proc.wait(0.05)
        except subprocess.TimeoutExpired:
            continue
        raise ServiceError(f"{what} exited with status {status} while starting")
    raise ServiceError(f"{what} did not get ready within {timeout:.0f} s")


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGKILL the child when its parent dies (Linux),
    so that a harness killed with SIGKILL leaves no server behind; None elsewhere. The
    function is looked up here, in the parent: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return arm


class _Spawner:
    """Every child of a run is forked by this one thread, which lives as long as the
    process. The kernel's parent-death signal fires when the *thread* that forked a
    child ends, so children forked by the nemesis thread (restarts) would otherwise be
    killed when that thread stops."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="nemesis-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, reply = self._jobs.get()
            try:
                reply.put((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                reply.put((False, exc))

    def call(self, fn: Callable[[], Any]) -> Any:
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs.put((fn, reply))
        ok, value = reply.get(timeout=60)
        if not ok:
            raise value
        return value


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()  # guards _spawner's creation


def _spawn(fn: Callable[[], Any]) -> Any:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.call(fn)


class Proc:
    """A child process in its own session; ``signal`` reaches its process group. It is
    killed by the kernel if the harness dies (``_die_with_parent``)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        as_user: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.as_user = as_user or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.paused = False

    def start(self) -> subprocess.Popen[bytes]:
        if self.running:
            raise ServiceError(f"{self.name} is already running")
        with self.log_path.open("ab") as out:
            out.write(f"--- start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = _spawn(
                lambda: subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),
                    **self.as_user,
                )
            )
        self.starts += 1
        self.paused = False
        return self.proc

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def signal(self, sig: int) -> None:
        """``sig`` to the process group this process leads (only if it still runs)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig == signal.SIGCONT:
            self.paused = False

    def kill(self) -> None:
        """SIGKILL to the group, and reap the leader."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.paused = False

    def stop(self, grace: float = 5.0) -> None:
        """SIGCONT (a paused process cannot exit), SIGTERM, then SIGKILL after ``grace``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()


class Redis:
    """A private redis-server without persistence: a restart comes back empty, the
    harshest case docs/CLUSTER.md describes (presence resync, the stream's gap fill)."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServiceError("redis-server is not installed (Debian package redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
        self.proc = Proc("redis", argv, workdir / "redis.log", cwd=workdir)

    def start(self, timeout: float = 20.0) -> None:
        import redis

        p = self.proc.start()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            _wait(ready, p, "redis-server", timeout)
        finally:
            client.close()


INITDB = ("--auth=trust", "-E", "UTF8", "--no-sync")
PG_PREFIX = "nemesis-pg-"  # Postgres's temporary directories: tempfile's, by this prefix


class Postgres:
    """A private PostgreSQL cluster (initdb in a temp directory of its own, which the
    ``postgres`` user can enter when the harness runs as root; a free port)."""

    def __init__(self, workdir: Path, database: str = "chatroom") -> None:
        exe = shutil.which("initdb") or shutil.which("postgres")
        binary = Path(exe).resolve().parent if exe else Path("/usr/lib/postgresql/15/bin")
        if not (binary / "initdb").exists():
            raise ServiceError("PostgreSQL's initdb and postgres are not installed")
        self.bin = binary
        self.dir = Path(tempfile.mkdtemp(prefix=PG_PREFIX))
        _own(self.dir)
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            # initdb refuses root: the cluster belongs to postgres, as Debian's does.
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
        data = self.dir / "data"
        done = subprocess.run(
            [str(binary / "initdb"), "-D", str(data), "-U", "postgres", *INITDB],
            capture_output=True,
            timeout=120,
            cwd=self.dir,
            **self.as_user,
        )
        if done.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise ServiceError(f"initdb failed: {done.stderr.decode(errors='replace').strip()}")
        self.port = free_port()
        self.database = database
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        argv = [str(binary / "postgres"), "-D", str(data), "-p", str(self.port)]
        argv += ["-k", str(self.dir), "-c", "listen_addresses=127.0.0.1"]
        # fsync off: a killed server loses nothing committed either way (the OS keeps
        # the WAL it was given); fsync only matters when the machine itself dies.
        argv += ["-c", "fsync=off", "-c", "max_connections=200"]
        self.proc = Proc(
            "postgres", argv, workdir / "postgres.log", cwd=self.dir, as_user=self.as_user
        )

    def remove(self) -> None:
        """Stop it (if it runs) and delete its data directory."""
        self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, port: int | None = None) -> str:
        """The chat database's URL, through ``port`` (a proxy) or directly."""
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{self.database}"

    def start(self, timeout: float = 60.0) -> None:
        import psycopg

        p = self.proc.start()

        def ready() -> bool:
            try:
                psycopg.connect(self.admin_url, connect_timeout=1).close()
            except psycopg.OperationalError:
                return False
            return True

        _wait(ready, p, "postgres", timeout)

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as db:
            db.execute(f"CREATE DATABASE {self.database}")


class ChatNode:
    """One ``chat-server`` process on a fixed port (see the module docstring)."""

    def __init__(
        self, name: str, workdir: Path, db: str, args: Sequence[str] = (), *, irc: bool = False
    ) -> None:
        self.name = name
        self.port = free_port()
        argv = [sys.executable, "-m", "chatroom_server", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--db", db, *args]
        # IRC on a fixed port of its own too, guests allowed (tests/nemesis/guests.py).
        self.irc_port = free_port() if irc else None
        if self.irc_port is not None:
            argv += ["--irc-port", str(self.irc_port), "--irc-guests"]
        self.proc = Proc(name, argv, workdir / f"{name}.log", cwd=workdir)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 30.0) -> None:
        p = self.proc.start()

        def ready() -> bool:
            try:
                socket.create_connection(self.address, timeout=0.5).close()
            except OSError:
                return False
            return True

        _wait(ready, p, self.name, timeout)


class Tmpfs:
    """A tmpfs of ``size_mb`` at ``path`` (mounted by the harness, as root), and a file
    that fills it to the last byte when asked."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(path):
            # Left mounted by a run of this seed that was killed: its own mount point.
            subprocess.run(["umount", str(path)], check=True, capture_output=True, timeout=30)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _own(path)
        self.filler = path / "filler"

    @staticmethod
    def possible() -> str | None:
        """None if a tmpfs can be mounted here, else why not."""
        if os.geteuid() != 0:
            return "the disk-full fault needs root to mount a tmpfs"
        if shutil.which("mount") is None:
            return "mount(8) is not installed"
        return None

    def fill(self) -> int:
        """Write until the file system is full; the bytes written."""
        chunk = b"\0" * 65536
        written = 0
        with self.filler.open("ab", buffering=0) as f:
            for size in (65536, 4096, 512, 1):
                block = chunk[:size]
                while True:
                    try:
                        written += f.write(block) or 0
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    @property
    def full(self) -> bool:
        return self.filler.exists()

    def unmount(self) -> None:
        self.free()
        result = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
        if result.returncode != 0:
            log.error("cannot unmount %s: %s", self.path, result.stderr.decode().strip())


# The pid of the run that made a tmpfs or a temporary directory, in a file inside it.
OWNER = ".nemesis-owner"
# A directory made before owners were written is swept once this old and unused.
UNOWNED_AGE = 3600.0


def _own(path: Path) -> None:
    (path / OWNER).write_text(f"{os.getpid()}\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's: alive
    return True


def _owner_alive(path: Path) -> bool | None:
    """Whether the run that made ``path`` still runs; None: no owner file (made before
    owners were written, or its files were deleted)."""
    try:
        pid = int((path / OWNER).read_text())
    except (OSError, ValueError):
        return None
    return _alive(pid)


def _mounts() -> list[tuple[str, Path]]:
    """(file system type, mount point) of every mount (Linux; empty elsewhere)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            # Spaces and the like are octal escapes (\040) in mount points.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
            out.append((fields[2], Path(point)))
    return out


def _in_use(path: Path) -> bool:
    """Whether any process has its working directory or an open file under ``path``."""
    inside = str(path) + os.sep
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [proc / "cwd", *(proc / "fd").iterdir()]
        except OSError:
            continue  # gone, or not ours to read
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target == str(path) or target.startswith(inside):
                return True
    return False


def _is_run_disk(point: Path) -> bool:
    """A mount point of :class:`Tmpfs`: ``<out>/single-<seed>/disk``."""
    run = point.parent.name
    return point.name == "disk" and run.startswith("single-") and run[7:].isdigit()


def sweep(tmp: Path | None = None) -> list[str]:
    """Unmount the tmpfs and delete the PostgreSQL directories (under ``tmp``,
    tempfile's directory by default) that runs killed earlier left behind; a line for
    each. A live run's are left alone: its owner file names a live pid, or a process
    uses them (a mount's owner file goes when pytest rotates its temporary directories
    away; a directory made before owners were written is left for an hour)."""
    swept: list[str] = []
    for fstype, point in _mounts():
        if fstype != "tmpfs" or not _is_run_disk(point):
            continue
        if _owner_alive(point) or _in_use(point):
            continue
        done = subprocess.run(["umount", str(point)], capture_output=True, timeout=30)
        if done.returncode == 0:
            swept.append(f"unmounted a killed run's tmpfs at {point}")
        else:
            log.warning("cannot unmount %s: %s", point, done.stderr.decode().strip())
    now = time.time()
    for d in (tmp or Path(tempfile.gettempdir())).glob(f"{PG_PREFIX}*"):
        owner = _owner_alive(d)
        if owner is None:
            try:
                owner = now - d.stat().st_mtime < UNOWNED_AGE  # young: maybe in initdb
            except OSError:
                continue
        if owner or _in_use(d):
            continue
        shutil.rmtree(d, ignore_errors=True)
        swept.append(f"deleted a killed run's PostgreSQL directory {d}")
    return swept
