"""The IRC line's decoder and parse against their plain definitions, on any input: the
fast paths of chatroom_server.irc.parse (docs/PERFORMANCE.md, "The per-message path in
process") must give what the byte-by-byte buffer and the word-by-word reading give."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatroom_server.irc.parse import LineDecoder, Message, parse

# Lines made of what matters to the parse: spaces, colons, @, CR, LF, NUL, letters.
TEXT = st.text(alphabet=st.sampled_from(list(" ::@\r\n\0abc#!é\t")), max_size=40)


def reference(line: str) -> Message | None:
    """Modern IRC's "Message format", a word at a time: tags, source, then words split
    on runs of spaces until one starts with a colon, which takes the rest of the line.
    CR, LF and NUL dropped from every field first."""
    tags = source = ""
    rest = "".join(c for c in line if c not in "\r\n\0").lstrip(" ")
    if rest.startswith("@"):
        tags, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    params: list[str] = []
    while rest:
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        word, _, rest = rest.partition(" ")
        params.append(word)
        rest = rest.lstrip(" ")
    if not params:
        return None
    return Message(params[0].upper(), params[1:], tags, source)


@given(TEXT)
def test_parse_is_the_word_by_word_reading(line: str) -> None:
    assert parse(line) == reference(line)


def test_parse_examples() -> None:
    assert parse("PRIVMSG #r :hello  there :x") == Message("PRIVMSG", ["#r", "hello  there :x"])
    assert parse("privmsg  #r   b:c  :") == Message("PRIVMSG", ["#r", "b:c", ""])
    assert parse("@t=1 :src  MODE #r +o a") == Message("MODE", ["#r", "+o", "a"], "t=1", "src")
    assert parse(": :trailing only") == Message("TRAILING ONLY", [])
    assert parse("PING a\rb\0c") == Message("PING", ["abc"])
    assert parse("   ") is None
    assert parse("@tags-only") is None


class ReferenceDecoder:
    """Lines out of a buffer one LF at a time; a line over ``limit`` is None, and an
    unfinished one past it (a last CR not counted) is None once, then skipped up to its
    end."""

    def __init__(self, limit: int) -> None:
        self.buf = b""
        self.limit = limit
        self.skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        self.buf += data
        out: list[bytes | None] = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if self.skipping:
                self.skipping = False
                continue
            line = line.rstrip(b"\r")
            out.append(None if len(line) > self.limit else line)
        if len(self.buf.removesuffix(b"\r")) > self.limit:  # a CR may await its LF
            if not self.skipping:
                out.append(None)
            self.skipping = True
            self.buf = b""
        return out


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"x", b"\n")), max_size=12),
    st.integers(min_value=1, max_value=12),
)
def test_decoder_is_the_buffered_reading(reads: list[bytes], limit: int) -> None:
    fast, ref = LineDecoder(limit=limit), ReferenceDecoder(limit)
    for data in reads:
        assert fast.feed(data) == ref.feed(data)


def test_decoder_examples() -> None:
    d = LineDecoder(limit=10)
    assert d.feed(b"one\r\ntwo\r\r\n") == [b"one", b"two"]  # whole lines: the fast path
    assert d.feed(b"0123456789ab\nok\n") == [None, b"ok"]
    assert d.feed(b"par") == []
    assert d.feed(b"t\n") == [b"part"]
    assert d.feed(b"0123456789abc") == [None]  # unfinished and too long: skipped to its end
    assert d.feed(b"def\nnext\n") == [b"next"]
