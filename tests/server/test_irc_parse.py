"""The IRC line's parse against its plain definition, on any text: the fast paths of
chatroom_server.irc.parse (docs/PERFORMANCE.md, "The per-message path in process")
must give what the word-by-word reading gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatroom_server.irc.parse import Message, parse

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
