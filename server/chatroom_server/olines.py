"""IRC O-lines (docs/IRC.md, "Operators"): ``--irc-oper NAME:SECRET`` in the server's
configuration, and nowhere else, lets an IRC session that sends ``OPER NAME PASSWORD``
act as a server operator until it ends. A client alone can never grant one.

``SECRET`` is an argon2 hash (``$argon2id$...``, as ``chat-server admin hash-password``
prints it), or the password itself, for test servers (irctest's ``operuser
operpassword``): a hash is better, since the configuration is then no secret. A plain
password is compared in constant time.

``--irc-password SECRET`` is the IRC server password (docs/IRC.md, "Server password"),
stored the same way: every IRC client says it with PASS before registering.

No sockets, no locks: the lines are read-only once the configuration is made (a
:class:`ServerPassword` remembers the digest of the password it last verified: one
assignment of an immutable value, which any reader thread may make).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatroom.protocol import is_valid_username, username_key

__all__ = ["OperLine", "ServerPassword", "check", "hash_secret", "parse_oper", "parse_password"]

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


@dataclass(frozen=True, slots=True)
class ServerPassword:
    """The IRC server password (``--irc-password``). ``str()`` and ``repr()`` never show
    it. A hash costs an argon2 verification (tens of ms) per client; so the digest of
    the password last verified is kept, and the right password costs a SHA-256 from then
    on, while a wrong one still pays the argon2 price (the gateway closes the connection
    after it: one guess a connection)."""

    secret: str
    # The SHA-256 of the password last verified against ``secret`` (a list, so that a
    # frozen instance can hold it; its one item is replaced whole).
    _known: list[bytes] = field(default_factory=list, compare=False)

    @property
    def hashed(self) -> bool:
        return self.secret.startswith("$argon2")

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "ServerPassword(***)"

    def matches(self, password: str) -> bool:
        digest = hashlib.sha256(password.encode()).digest()
        known = self._known[:1]
        if known and hmac.compare_digest(known[0], digest):
            return True
        if not OperLine("", self.secret).matches(password):
            return False
        self._known[:] = [digest]
        return True


def parse_password(text: str) -> ServerPassword | None:
    """``--irc-password``: an argon2 hash or the password; empty: none. ValueError
    never shows it."""
    if not text:
        return None
    if text.startswith("$argon2"):
        try:
            _HASHER.check_needs_rehash(text)
        except (InvalidHashError, ValueError) as exc:
            raise ValueError("the IRC server password's hash is not a valid argon2 hash") from exc
    return ServerPassword(text)


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
