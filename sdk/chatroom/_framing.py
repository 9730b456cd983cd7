"""Framing (docs/PROTOCOL.md §Framing): a byte stream into newline-terminated frames,
under a size limit. No I/O. Public as :mod:`chatroom.protocol`'s names; the server's
sessions and the client's use the same decoder."""

from __future__ import annotations

from chatroom.errors import FrameTooLarge

__all__ = ["FrameDecoder", "split_block"]


class FrameDecoder:
    """Split a byte stream into newline-terminated frames.

    ``feed(data)`` returns the complete frames in ``data`` (without the ``\\n``, a trailing
    ``\\r`` removed, blank lines skipped so a person typing into netcat can press Enter)
    and keeps the incomplete tail for the next call. A frame longer than ``max_frame``
    bytes raises :class:`~chatroom.errors.FrameTooLarge` as soon as that is known, without
    buffering more than ``max_frame`` bytes of it; the stream cannot be resynchronised
    after that, so the caller closes the connection.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = 64 * 1024) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held since the last newline."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        return split_block(self.feed_block(data))

    def feed_block(self, data: bytes) -> bytes:
        """Like :meth:`feed`, but the complete frames come back unsplit: the bytes up to
        and including the last newline (``b""`` if ``data`` completes none), blank lines
        and ``\\r`` still in. For a caller that parses a whole read in one call
        (chat-load's bots); :func:`split_block` gives the frames :meth:`feed` would."""
        end = data.rfind(b"\n") + 1
        if not end:
            # Common case for byte-at-a-time or partial reads: just accumulate.
            if len(self._buf) + len(data) > self.max_frame:
                raise FrameTooLarge(self.max_frame)
            self._buf += data
            return b""
        tail = data[end:]
        if len(tail) > self.max_frame:
            raise FrameTooLarge(self.max_frame)
        # The common case, a read of whole frames, is passed on without a copy.
        block = data if end == len(data) else data[:end]
        if self._buf:
            block = self._buf + block
        self._buf = tail
        limit = self.max_frame
        # A block no longer than the limit (plus its newline) holds no frame over it.
        if len(block) > limit + 1 and any(len(c) > limit for c in block.split(b"\n")):
            raise FrameTooLarge(limit)
        return block


def split_block(block: bytes) -> list[bytes]:
    """The frames of a block of whole lines (:meth:`FrameDecoder.feed_block`): without
    their ``\\n``, a trailing ``\\r`` removed, blank lines skipped (§Framing)."""
    frames = []
    for chunk in block.split(b"\n")[:-1]:
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        if chunk and not chunk.isspace():
            frames.append(chunk)
    return frames
