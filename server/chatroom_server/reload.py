"""SIGHUP: re-read the settings and apply what a running server can take, without
dropping a connection (docs/OPERATIONS.md, Reload).

- The file, the environment and the original command line are read again
  (chatroom_server.settings); a file with an error changes nothing, and the log says
  why.
- Options marked reloadable in the table (chatroom_server.options, ``restart=False``:
  limits and timeouts, retention, the replay limit, the log level) take effect at once:
  the server's ``config`` is replaced by a copy with the new values, which every
  connection, sweep and pruning pass reads when it next needs one. Connections already
  open keep the limits they were given (their rate bucket, their output limit).
- The TLS certificate and key are loaded again from their files on every reload (a
  renewed certificate is served to the next handshake; a file that does not load
  keeps the old one, with the reason logged).
- Every other option that changed is named in the log as needing a restart, and stays
  as it was: at each reload until the restart, so none is silently ignored.

Runs on the main thread (chat-server's loop), one reload at a time.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import Any

from chatroom_server import settings
from chatroom_server.config import ConfigError
from chatroom_server.options import OPTIONS, build_config
from chatroom_server.server import ChatServer
from chatroom_server.session import SessionRules

log = logging.getLogger(__name__)

_TLS = ("tls-cert", "tls-key")


def reload(
    server: ChatServer, args: argparse.Namespace, current: settings.Settings
) -> settings.Settings:
    """Apply what changed since ``current``; the settings now in force."""
    try:
        new = settings.resolve(args)
        build_config(new.values)  # every value checked before anything is applied
    except ConfigError as exc:
        log.error("reload: %s; the running settings stay", exc)
        return current
    in_force = settings.Settings(dict(current.values), dict(current.sources))
    live: dict[str, Any] = {}
    tls_on = server._tls is not None
    for o in OPTIONS:
        old, value = current.values[o.name], new.values[o.name]
        if old == value:
            continue
        if not o.restart or (o.name in _TLS and tls_on and value is not None):
            o.apply(value, live)
            in_force.set(o.name, value, new.sources[o.name])
            log.info("reload: %s is now %s", o.name, settings.masked(value))
        else:
            log.warning(
                "reload: %s changed to %s, which needs a restart; it stays %s until then",
                o.name,
                settings.masked(value),
                settings.masked(old),
            )
    if live:
        limits = {k.removeprefix("limits."): live.pop(k) for k in list(live) if "." in k}
        config = server.config
        server.config = replace(config, limits=replace(config.limits, **limits), **live)
        # What every new session shares is made from the config once (the rate limit):
        # made again, for the connections that come next.
        server._rules = SessionRules(server.config, server._clock)
    level = in_force.values["log-level"]
    logging.getLogger().setLevel(str(level).upper())
    if tls_on:
        try:
            server._tls = server._tls_context()  # the next handshakes use it
            log.info("reload: TLS certificate loaded from %s", server.config.tls_cert)
        except ConfigError as exc:
            log.error("reload: %s; the previous certificate stays", exc)
    return in_force
