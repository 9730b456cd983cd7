"""What one password check leaves resident in the thread that ran it.

    .venv/bin/python bench/login_stack.py [--threads 3000]

A connection thread that has run a function keeps every stack page the function
touched for the rest of its life, and chat-server holds one such thread per idle
client. For each way a login can check a password, this starts ``--threads`` bare
threads (``_thread``, the 8 KiB default stack of chat-server's readers aside) that each
do it once and then block, and prints the RSS per thread over threads that did nothing.
Each way runs in a fresh process, so one's pages are not the next one's. ``trip`` is a
check sent to another thread (the account store's way); ``argon2`` the check run in
place with ``--password-hash load-test``'s parameters; ``blake2b`` the keyed hash the
store keeps of a login that passed. See docs/PERFORMANCE.md, "Logins without the
store's threads".
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import _thread, hmac, os, sys, tempfile, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from chatroom_server.accounts import LOAD_TEST_HASHER as hasher, AccountStore
way, n = sys.argv[1], int(sys.argv[2])
stored = hasher.hash("correct horse battery")
key = os.urandom(32)
store = AccountStore(Path(tempfile.mkdtemp()) / "accounts.db", hasher)  # for its _proof
pool = ThreadPoolExecutor(4)
def check():
    if way == "trip":
        pool.submit(hasher.verify, stored, "correct horse battery").result(10)
    elif way == "argon2":
        hasher.verify(stored, "correct horse battery")
    elif way == "hmac-sha256":
        hmac.digest(key, b"correct horse battery", "sha256")
    elif way == "blake2b":
        store._proof("correct horse battery")  # what a remembered login is checked with
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
done = threading.Semaphore(0)
stop = _thread.allocate_lock()
stop.acquire()
def thread():
    check()
    done.release()
    stop.acquire(timeout=60)
base = rss_kib()
for _ in range(n):
    _thread.start_new_thread(thread, ())
for _ in range(n):
    done.acquire(timeout=60)
print((rss_kib() - base) / n)
sys.stdout.flush()
os._exit(0)  # the blocked threads are not joined: nothing of them is measured after
"""

WAYS = ("nothing", "trip", "argon2", "hmac-sha256", "blake2b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=3000)
    args = parser.parse_args()
    per: dict[str, float] = {}
    for way in WAYS:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, way, str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        per[way] = float(out.stdout)
    print(f"RSS per thread, {args.threads} threads each")
    for way in WAYS:
        more = per[way] - per["nothing"]
        print(f"  {way:12} {per[way]:6.2f} KiB  ({more:+.2f} over a thread that did nothing)")


if __name__ == "__main__":
    main()
