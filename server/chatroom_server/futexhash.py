"""A futex hash table sized for thousands of threads (Linux 6.16 and later).

Every lock a thread sleeps in, the GIL's own mutex and condition variable among them, is
a futex, and the kernel finds a futex's sleepers in a hash table: a bucket's lock is
taken and its chain walked on every wait and every wake-up. Since Linux 6.16 a
threaded process gets a table of its own, sized by ``min(threads, online CPUs) x 4``
and at least 16 buckets: **16 on this 2-core machine**, however many threads the
process has. A chat server holds one thread per connection; with 10,000 of them asleep
in locks (the readers of a mass disconnect queued in ``Listeners._ending``, the parked
readers of :mod:`chatroom_server.parking`), each bucket chains some 600 sleepers, and
every hand-over of the GIL walks one of those chains with its spinlock held.

Measured here (docs/PERFORMANCE.md, "The futex hash"): a lock round trip between two
threads costs 40 µs with no other thread asleep, 66 µs with 10,000 threads asleep in
locks at 16 buckets, and 39 µs with them at 16,384.

:func:`widen` asks for one bucket per thread the server may hold
(``PR_FUTEX_HASH_SET_SLOTS``, 64 bytes of kernel memory a bucket: 1 MiB for 16,384).
Older kernels have no such table (one global table, sized by CPUs) and refuse the call:
nothing to do there. For the process chat-server owns; a ChatServer embedded elsewhere
leaves it alone, as it does the switch interval and the garbage collector.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_PR_FUTEX_HASH = 78  # <linux/prctl.h>, Linux 6.16
_PR_FUTEX_HASH_SET_SLOTS = 1
_PR_FUTEX_HASH_GET_SLOTS = 2
_MAX_SLOTS = 1 << 16  # 4 MiB of kernel memory; more buckets than threads buy nothing


def slots_for(threads: int) -> int:
    """The power of two at or above ``threads`` (the kernel takes only powers of two),
    within 16 and ``_MAX_SLOTS``."""
    return min(_MAX_SLOTS, max(16, 1 << max(0, threads - 1).bit_length()))


def slots() -> int | None:
    """The process's futex hash buckets now; 0: the kernel's global table; None: this
    kernel has no private tables (before Linux 6.16) or this is not Linux."""
    libc = _libc()
    if libc is None:
        return None
    n = int(libc.prctl(_PR_FUTEX_HASH, _PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0))
    return None if n < 0 else n


def widen(threads: int) -> int | None:
    """Give the process a futex hash of :func:`slots_for` ``(threads)`` buckets, unless
    it has as many already; the buckets it has after, or None where the kernel has no
    such setting."""
    libc = _libc()
    now = slots()
    if libc is None or now is None:
        return None
    want = slots_for(threads)
    if now >= want:
        return now
    if libc.prctl(_PR_FUTEX_HASH, _PR_FUTEX_HASH_SET_SLOTS, want, 0, 0) != 0:
        err = ctypes.get_errno()
        log.warning("cannot widen the futex hash to %d buckets: errno %d", want, err)
        return now
    return slots()


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
