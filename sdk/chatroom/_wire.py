"""What every frame of docs/PROTOCOL.md has in common: the two base Structs and the
field types several frames share.

A module of its own so that :mod:`chatroom.protocol` (the v1 frames, the unions, the
decoders) and :mod:`chatroom.rooms` (the frames of §Rooms) both build on it without
importing each other in a cycle: protocol imports rooms to put the room frames in its
unions.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec

from chatroom.errors import RequestId


# Every message: frozen (hashable, compared by value), defaults left off the wire, and
# keyword-only so the optional ``id`` can sit in the base class.
class _Command(msgspec.Struct, tag_field="command", frozen=True, omit_defaults=True, kw_only=True):
    # A request id (string or integer) that the direct reply echoes.
    id: RequestId = None


class _Event(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True, kw_only=True):
    pass


# The largest seq there can be: both databases store it as a 64-bit signed integer
# (docs/PROTOCOL.md §Message log), so a larger cursor could only fail there.
MAX_SEQ: Final = 2**63 - 1
# A seq a client names (a cursor): validated when decoded, and again by
# validate_command for commands built in the server (the IRC gateway's).
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]

# A client-chosen id that makes a resend idempotent (docs/PROTOCOL.md §Idempotent sends).
Cid = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

UserTuple = tuple[str, ...]

# Usernames, and room names after the same rules (docs/PROTOCOL.md §Names, §Rooms).
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
