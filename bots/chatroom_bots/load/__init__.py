"""``chat-load``: a swarm of SDK bots that measures a chatroom server honestly.

Open loop (every send has an intended time on a fixed schedule; latency is measured from
that intended time, so a stalled server cannot hide its stall), HdrHistogram percentiles
merged across worker processes, loss/duplicate/out-of-order accounting per delivery.
"""

from chatroom._extras import require

require("load", "chatroom_bots.load")  # before faker and hdrh are imported

from chatroom_bots.load.runner import LoadConfig, LoadResult, Swarm, run_load  # noqa: E402
from chatroom_bots.load.stats import merge_histograms, new_histogram, percentiles  # noqa: E402

__all__ = [
    "LoadConfig",
    "LoadResult",
    "Swarm",
    "merge_histograms",
    "new_histogram",
    "percentiles",
    "run_load",
]
