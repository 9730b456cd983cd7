"""``chat-load``: a swarm of SDK bots that measures a chatroom server honestly.

Open loop (every send has an intended time on a fixed schedule; latency is measured from
that intended time, so a stalled server cannot hide its stall), HdrHistogram percentiles
merged across worker processes, loss/duplicate/out-of-order accounting per delivery.

It needs the 'load' extra (faker, hdrhistogram). Importing this package does not: the
names below are imported on first use, after the check that says which extra is missing
(:func:`chatroom.extras.lazy_exports`), so that the ``chat-load`` console script
(:mod:`chatroom_bots.load.__main__`) can say it in one line instead of a traceback.
"""

from typing import TYPE_CHECKING

from chatroom.extras import lazy_exports

if TYPE_CHECKING:
    from chatroom_bots.load.result import LoadConfig, LoadResult
    from chatroom_bots.load.runner import run_load
    from chatroom_bots.load.stats import merge_histograms, new_histogram, percentiles
    from chatroom_bots.load.swarm import Swarm

__all__ = [
    "LoadConfig",
    "LoadResult",
    "Swarm",
    "merge_histograms",
    "new_histogram",
    "percentiles",
    "run_load",
]

__getattr__ = lazy_exports(
    __name__,
    "load",
    {
        **dict.fromkeys(("LoadConfig", "LoadResult"), f"{__name__}.result"),
        "Swarm": f"{__name__}.swarm",
        "run_load": f"{__name__}.runner",
        **dict.fromkeys(("merge_histograms", "new_histogram", "percentiles"), f"{__name__}.stats"),
    },
)
