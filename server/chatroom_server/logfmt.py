"""``chat-server --log-format json``: one JSON object per line, for log pipelines
(docs/OPERATIONS.md, Logs). The text format stays the default.

Every line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``msg``; ``exc`` if an exception is logged. A line written by a connection's own thread
also has ``conn`` (its number), ``addr`` (client address and port) and ``user`` (once
logged in): the reader thread says whose it is (:func:`serving`), so no log call has
to. Lines about a connection written elsewhere (the reaper's, the fan-out's) name it in
their text, as in the text format. Fields a call passes with ``extra=`` are kept too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Final, Protocol


class _Serving(Protocol):
    num: int
    addr: str
    username: str | None


# The connection this thread serves: set by its reader thread, read by the formatter.
# Only with the JSON format (``_json``, set once at start-up): a thread-local's dict is
# a few hundred bytes more per connection thread, which the text format does not need.
_current = threading.local()
_json = False

# LogRecord's own attributes: anything else on a record came with ``extra=``.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def serving(conn: _Serving | None) -> None:
    """This thread serves ``conn`` from now on (None: no connection)."""
    if _json:
        _current.conn = conn


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        conn: _Serving | None = getattr(_current, "conn", None)
        if conn is not None:
            out["conn"] = conn.num
            out["addr"] = conn.addr
            if conn.username is not None:
                out["user"] = conn.username
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str, fmt: str) -> None:
    """chat-server's logging: ``fmt`` is ``text`` or ``json``, on stderr."""
    global _json
    _json = fmt == "json"
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
