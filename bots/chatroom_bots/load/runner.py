"""The chat-load orchestrator: one run (log in, one step, clean up) and its live progress.

The parts: :mod:`~chatroom_bots.load.result` (settings and result),
:mod:`~chatroom_bots.load.swarm` (worker processes, steps), :mod:`~chatroom_bots.load.tally`
(merging the workers' counts), :mod:`~chatroom_bots.load.churn` (``churn --drop-all``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from chatroom_bots.load.churn import drop_all
from chatroom_bots.load.result import LoadConfig, LoadResult
from chatroom_bots.load.swarm import Swarm

__all__ = ["LoadConfig", "LoadResult", "Swarm", "print_progress", "run_load"]


def run_load(
    cfg: LoadConfig,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> LoadResult:
    """Run one load test (log in, one step, clean up); ``progress`` gets a row of numbers
    a second. Every worker is stopped and joined whatever happens."""
    with Swarm(cfg) as swarm:
        if cfg.mode == "logins" or swarm.login.login_failures:
            return swarm.login
        if cfg.mode == "churn":
            return drop_all(swarm)
        if cfg.mode == "hold":
            result = swarm.step(
                cfg.probe_rate, cfg.probe_seconds, delay=cfg.duration, progress=progress, stop=stop
            )
        else:
            result = swarm.step(cfg.rate, cfg.duration, progress=progress, stop=stop)
        for key in ("login_seconds", "login_ms", "login_failures"):
            setattr(result, key, getattr(swarm.login, key))
        return result


def print_progress(out: TextIO = sys.stderr) -> Callable[[dict[str, Any]], None]:
    """Live progress: one rewritten line on a terminal, plain lines otherwise."""
    tty = out.isatty()

    def show(row: dict[str, Any]) -> None:
        # A second with no delivery has no latency: "-", not a p99 of 0 ms.
        p99 = f"{row['p99_ms']:>8.2f}" if row["delivered"] else f"{'-':>8}"
        line = (
            f"t={row['second']:>4}s  sent/s {row['sent']:>7}  delivered/s "
            f"{row['delivered']:>9}  p99 {p99} ms  errors {row['errors']}"
        )
        out.write(("\r" + line) if tty else line + "\n")
        out.flush()

    return show
