"""A/B of two trees in one run, the machinery the A/B benches share: the base revision
checked out beside this tree for the run (a detached git worktree, removed after), and
a bench's child process run on either side, so that A and B alternate (A, B, A, B, ...)
through the same minutes of a shared box's load (docs/PERFORMANCE.md).

It imports nothing of the project: a child runs under the other tree's ``PYTHONPATH``,
and a bench that imports this module in its children imports nothing of this tree.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pythonpath(tree: Path, *dirs: str) -> str:
    """The ``PYTHONPATH`` that runs ``tree``'s packages (``dirs``: its folders, by default
    the server's and the SDK's) ahead of the installed ones."""
    return ":".join(f"{tree}/{d}" for d in dirs or ("server", "sdk"))


# B: this tree, named, so that B is this tree's code whatever the venv has installed.
THIS_TREE: str = pythonpath(ROOT)


@contextlib.contextmanager
def base_tree(rev: str) -> Iterator[Path]:
    """``rev`` checked out for the run (A): the checkout's folder (:func:`pythonpath`)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "-q", "--detach", str(tree), rev], check=True)
        try:
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=False)


def run_child(script: str, args: Sequence[str], path: str, timeout: float = 600.0) -> float:
    """``script --child ARGS`` run with ``path`` as its ``PYTHONPATH``: the number on the
    last line it prints (its measurement)."""
    out = subprocess.run(
        [sys.executable, script, "--child", *args],
        env={**os.environ, "PYTHONPATH": path},
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return float(out.stdout.strip().splitlines()[-1])
