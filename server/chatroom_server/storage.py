"""What the server asks of its message log: :class:`MessageStore`, implemented by the
SQLite log (:class:`chatroom_server.messagelog.MessageLog`, one node) and the
PostgreSQL log (:class:`chatroom_server.cluster.pg.PgMessageLog`, a cluster).

The handlers, the fan-out and the replay are written against this protocol, not
against either database (as synapse's handlers sit above its storage interfaces):
docs/PROTOCOL.md §Message log says what each call means, and the two implementations'
docstrings say where they differ (the cluster's advisory lock, publishing, the cut).
The accounts already share one interface: PgAccountStore is an AccountStore
(chatroom_server.accounts) with PostgreSQL underneath.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from chatroom_server.messagelog import NewMessage, Outcome, Stored
from chatroom_server.roomstore import Loaded


class MessageStore(Protocol):
    """The message log, as the server uses it. ``last_seq`` is the last seq handed to
    this node's clients (the fan-out's, or in a cluster the bus's), ``oldest_seq`` the
    oldest still kept, ``epoch`` the log's identity for resuming clients."""

    epoch: str
    last_seq: int
    oldest_seq: int

    def describe(self) -> str: ...

    def close(self) -> None: ...

    def append(self, messages: Sequence[NewMessage]) -> list[Outcome]:
        """Store a group in one transaction (only under the fan-out's lock)."""
        ...

    def has_inbox(self, user: str) -> bool: ...

    def maybe_inbox(self, user: str) -> bool: ...

    def inbox_received(self, user: str, after: int, upto: int) -> int: ...

    def replay_start(
        self,
        user: str,
        since: int,
        upto: int,
        limit: int,
        inbox: bool = False,
        rooms: bool = False,
    ) -> int | None: ...

    def replay_page(
        self,
        user: str,
        after: int,
        upto: int,
        budget: int,
        inbox: bool = False,
        rooms: bool = False,
    ) -> list[Stored]: ...

    def history(
        self,
        user: str,
        *,
        before: int | None,
        after: int | None,
        limit: int,
        with_user: str | None,
        room: str = ...,
        from_seq: int = ...,
    ) -> tuple[list[Stored], bool]: ...

    def load_rooms(self) -> Loaded: ...

    def prune(
        self,
        *,
        now: float,
        max_age: float | None,
        max_count: int | None,
        batch: int = 500,
        pause: Callable[[], bool] = ...,
    ) -> int: ...

    def stats(self) -> dict[str, int]: ...
