"""IRC O-lines (docs/IRC.md, "Operators"): ``--irc-oper NAME:SECRET`` in the server's
configuration, and nowhere else, lets an IRC session that sends ``OPER NAME PASSWORD``
act as a server operator until it ends. A client alone can never grant one.

``SECRET`` is an argon2 hash (``$argon2id$...``, as ``chat-server admin hash-password``
prints it), or the password itself, for test servers (irctest's ``operuser
operpassword``): a hash is better, since the configuration is then no secret. A plain
password is compared in constant time.

No sockets, no locks: the lines are read-only once the configuration is made.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatroom.protocol import is_valid_username, username_key

__all__ = ["OperLine", "check", "hash_secret", "parse_oper"]

# Verifies any argon2 hash (its parameters travel inside it); hashes with OWASP's.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

Verdict = Literal["ok", "password", "none"]


@dataclass(frozen=True, slots=True)
class OperLine:
    """One O-line. ``str()`` and ``repr()`` never show the secret (check-config prints
    the settings)."""

    name: str
    secret: str

    @property
    def hashed(self) -> bool:
        return self.secret.startswith("$argon2")

    def __str__(self) -> str:
        return f"{self.name}:***"

    def __repr__(self) -> str:
        return f"OperLine({self.name!r}, ***)"

    def matches(self, password: str) -> bool:
        if not self.hashed:
            return hmac.compare_digest(self.secret.encode(), password.encode())
        try:
            return _HASHER.verify(self.secret, password)
        except (VerificationError, InvalidHashError):
            return False


def parse_oper(text: str) -> tuple[OperLine, ...]:
    """``NAME:SECRET`` (one O-line; the option is repeated for more); empty: none (as
    default-config writes it). ValueError names what is wrong, never the secret."""
    if not text.strip():
        return ()
    name, sep, secret = text.partition(":")
    name = name.strip()
    if not sep or not secret:
        raise ValueError(f"expected NAME:PASSWORD or NAME:$argon2id$..., got {name!r}:...")
    if not is_valid_username(name):
        raise ValueError(f"an operator name is 1-32 of A-Z a-z 0-9 _ -, got {name!r}")
    line = OperLine(name, secret)
    if line.hashed:
        try:
            _HASHER.check_needs_rehash(secret)  # parses it: a bad hash fails at startup
        except (InvalidHashError, ValueError) as exc:
            raise ValueError(f"the hash for {name!r} is not a valid argon2 hash") from exc
    return (line,)


def check(lines: tuple[OperLine, ...], name: str, password: str) -> Verdict:
    """``ok``: an O-line for ``name`` takes ``password``; ``password``: there is one and
    it does not; ``none``: no O-line names ``name``."""
    key = username_key(name)
    found = [line for line in lines if username_key(line.name) == key]
    if not found:
        return "none"
    return "ok" if any(line.matches(password) for line in found) else "password"


def hash_secret(password: str) -> str:
    """An O-line's hashed secret (``chat-server admin hash-password``)."""
    return _HASHER.hash(password)
