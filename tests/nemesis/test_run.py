"""The short nemesis run that ``make test`` includes: 30 s of randomised faults on the
cluster and 30 s on the single server, each checked (docs/RELIABILITY.md).

The seed is random unless ``NEMESIS_SEED`` is set, and is printed (and is in every
failure message, with the command that replays it); ``NEMESIS_SECONDS`` changes the
length. ``make nemesis`` is the ten-minute run.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.nemesis.harness import RunConfig, run

SECONDS = float(os.environ.get("NEMESIS_SECONDS", "30"))
# A failed run's directory (history, report, logs) is kept here: pytest's own temporary
# directories are rotated away by the next sessions.
KEEP = Path(__file__).resolve().parents[2] / "nemesis-runs" / "failed"


def _seed() -> int:
    given = os.environ.get("NEMESIS_SEED")
    return int(given) if given else random.SystemRandom().randrange(1, 10**9)


# Set-up (initdb, three nodes), the final heal and drain, and the check come on top of
# the faults' seconds; the drain alone may take its whole minute when a client is stuck.
@pytest.mark.timeout(SECONDS + 200)
@pytest.mark.parametrize("target", ["cluster", "single"])
def test_a_short_nemesis_run_breaks_no_promise(target: str, tmp_path: Path) -> None:
    seed = _seed()
    config = RunConfig(seed=seed, duration=SECONDS, target=target, out=tmp_path)
    print(f"nemesis {target} seed {seed}: replay with {config.replay_command()}")
    result = run(config, progress=print)
    res = result.check
    kept = result.directory
    if not result.ok:
        kept = KEEP / result.directory.name
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(result.directory, kept, ignore=shutil.ignore_patterns("disk"))
    where = f"seed {seed}, replay: {config.replay_command()}; history and report in {kept}"
    for line in result.not_exercised:
        print(f"not exercised: {line}")
    assert result.problems == [], f"{where}: the run could not complete: {result.problems}"
    assert res.notes == [], f"{where}: {res.notes}"
    # Every finding of docs/RELIABILITY.md is fixed: any anomaly fails the run.
    assert res.anomalies == [], f"{where}: " + "; ".join(a.describe() for a in res.anomalies)
    # The run did what it says: faults happened, messages were sent and delivered.
    assert res.stats.get("required receipts", 0) > 0
    assert len(result.specs) > 0
