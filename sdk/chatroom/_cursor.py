"""The cursor file both clients keep with ``cursor_file=`` (docs/SDK.md §Resume): the
seq up to which the hooks have run and the log's epoch, as JSON, written atomically so
that a crash leaves the old file or the new one."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from chatroom.errors import UsageError

__all__ = ["read_cursor", "save_throttled", "write_cursor"]

log = logging.getLogger(__name__)

# At most one write per this many seconds while hooks run, unless forced (at the end).
EVERY = 0.1


def read_cursor(path: Path) -> tuple[int, str | None] | None:
    """(seq, epoch) from a cursor file; None if there is none. A broken file is an error
    the user must see, not a silent restart from nothing."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the cursor file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the cursor file {path} is not a JSON object")
    seq, epoch = data.get("seq"), data.get("epoch")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise UsageError(f"the cursor file {path} has no valid seq: {data!r}")
    return seq, epoch if isinstance(epoch, str) else None


def write_cursor(path: Path, seq: int, epoch: str | None) -> None:
    """Replace the file atomically (OSError if it cannot)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"seq": seq, "epoch": epoch}))
    os.replace(tmp, path)


def save_throttled(
    path: Path | None,
    seq: int | None,
    epoch: str | None,
    saved: int | None,
    at: float,
    force: bool = False,
) -> tuple[int | None, float]:
    """Write ``seq`` unless it is what the file says or the last write was under
    :data:`EVERY` ago (``force`` skips that wait); returns the new (saved, at). A write
    that fails is logged and changes nothing, so the next call tries again."""
    if path is None or seq is None or seq == saved:
        return saved, at
    now = time.monotonic()
    if not force and now - at < EVERY:
        return saved, at
    try:
        write_cursor(path, seq, epoch)
    except OSError as exc:
        log.error("cannot write the cursor file %s: %s", path, exc)
        return saved, at
    return seq, now
