"""Server addresses: one, or several nodes of one cluster (docs/CLUSTER.md).

``"chat.example.org"``, ``"10.0.0.5:5051"``, ``"a:5050,b:5051"``, ``"[::1]:5050"`` or a
list of such strings and ``(host, port)`` pairs. A client tries them in order and, after
losing a connection, starts from the next one: a dead node is skipped at once and a hung
one is not retried first.

Public for tools on the SDK that take such a spec (chat-load's ``--host``); the clients
use :func:`in_turn` and :func:`none_answered` for their connection order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from chatroom.errors import ConnectFailed, UsageError

__all__ = ["Address", "describe", "in_turn", "none_answered", "parse_hosts"]

Address = tuple[str, int]


def parse_hosts(spec: str | Sequence[str | Address], default_port: int) -> list[Address]:
    """Every address in ``spec``, in order; UsageError for a malformed one."""
    items: list[str | Address] = (
        [p for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    )
    out: list[Address] = []
    for item in items:
        if isinstance(item, tuple):
            host, port = item
            out.append((str(host), int(port)))
            continue
        out.append(_one(item.strip(), default_port))
    if not out:
        raise UsageError("no server address given")
    return out


def _one(text: str, default_port: int) -> Address:
    if text.startswith("["):  # [IPv6]:port or [IPv6]
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a name, IPv4, or a bare IPv6 address
        host, port_text = text, ""
    if not host:
        raise UsageError(f"bad server address {text!r}")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"bad port in server address {text!r}") from None
    if not 0 < port < 65536:
        raise UsageError(f"port out of range in server address {text!r}")
    return host, port


def describe(addresses: Sequence[Address]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


def in_turn(addresses: Sequence[Address], start: int) -> Iterator[tuple[int, Address]]:
    """Every address with its index, from ``start`` round to the one before it."""
    n = len(addresses)
    for i in range(n):
        k = (start + i) % n
        yield k, addresses[k]


def none_answered(failures: list[ConnectFailed]) -> ConnectFailed:
    """The error when no address answered: the one failure, or all of them."""
    if len(failures) == 1:
        return failures[0]
    return ConnectFailed(f"no server reachable ({'; '.join(map(str, failures))})")
