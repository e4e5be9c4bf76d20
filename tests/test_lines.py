"""The serial line framer: lines, garbage and overlong lines, whatever the reads' boundaries."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.lines import LineEvent, LineFramer


def line(data: bytes) -> LineEvent:
    return LineEvent("line", data, len(data))


def garbage(data: bytes) -> LineEvent:
    return LineEvent("garbage", data, len(data))


def overlong(data: bytes, limit: int) -> LineEvent:
    return LineEvent("overlong", data, limit + 1)


def feed_all(chunks: list[bytes], max_line_bytes: int = 16) -> tuple[list[LineEvent], bytes]:
    framer = LineFramer(max_line_bytes=max_line_bytes)
    events = [event for chunk in chunks for event in framer.feed(chunk)]
    return events, framer.pending


@pytest.mark.parametrize(
    ("chunks", "events", "pending"),
    [
        ([b"t=1\n"], [line(b"t=1")], b""),
        ([b"t=1\r\n"], [line(b"t=1")], b""),
        ([b"t=1\r"], [line(b"t=1")], b""),
        ([b"a\nb\r\nc\rd\n"], [line(b"a"), line(b"b"), line(b"c"), line(b"d")], b""),
        # "\r\n" split across two reads: no extra empty line.
        ([b"t=1\r", b"\nt=2\r", b"\n"], [line(b"t=1"), line(b"t=2")], b""),
        # A partial line waits for the rest.
        ([b"t=2", b"9.5 h="], [], b"t=29.5 h="),
        ([b"t=2", b"9.5", b" h=7\n"], [line(b"t=29.5 h=7")], b""),
        ([b"t=1\nt=", b"2\nt=3"], [line(b"t=1"), line(b"t=2")], b"t=3"),
        # Empty and blank lines are skipped.
        ([b"\n\n\r\n\r\r\n"], [], b""),
        ([b"  \t \na\n"], [line(b"a")], b""),
        ([b""], [], b""),
        # Tabs and UTF-8 are text.
        ([b"a\tb\n"], [line(b"a\tb")], b""),
        ([b"suhu=29.5\xc2\xb0C\n"], [line(b"suhu=29.5\xc2\xb0C")], b""),
        # Leading and trailing spaces are kept: the decoder strips.
        ([b" t=1 \n"], [line(b" t=1 ")], b""),
    ],
)
def test_lines(chunks: list[bytes], events: list[LineEvent], pending: bytes) -> None:
    assert feed_all(chunks) == (events, pending)


@pytest.mark.parametrize(
    "noise",
    [
        b"\x00",
        b"t=1\x00",
        b"\x00\x00\x00t=1",
        b"\x1b[0m",
        b"a\x7fb",
        b"\x08",
        b"\xff\xfe\xfd",
        b"\xc2",  # a UTF-8 sequence cut short
        b"\xed\xa0\x80",  # a surrogate, not UTF-8
        b"\x80abc",
        b"\xe0\x80\xaf",  # an overlong encoding of "/"
    ],
)
def test_garbage_between_lines(noise: bytes) -> None:
    events, pending = feed_all([b"t=1\n" + noise + b"\nt=2\n"])
    assert events == [line(b"t=1"), garbage(noise), line(b"t=2")]
    assert pending == b""


def test_garbage_split_across_reads() -> None:
    events, _ = feed_all([b"t=1\n\xff", b"\xfe\x00", b"\r\nt=2\n"])
    assert events == [line(b"t=1"), garbage(b"\xff\xfe\x00"), line(b"t=2")]


def test_a_utf8_character_split_across_reads_is_text() -> None:
    events, _ = feed_all([b"x=\xc2", b"\xb0\n"])
    assert events == [line(b"x=\xc2\xb0")]


@pytest.mark.parametrize(
    ("chunks", "events", "pending"),
    [
        # Exactly the limit is fine; one byte more is not.
        ([b"a" * 16 + b"\n"], [line(b"a" * 16)], b""),
        ([b"a" * 17 + b"\n"], [overlong(b"a" * 16, 16)], b""),
        # Reported as soon as the limit is passed, before any terminator.
        ([b"a" * 17], [overlong(b"a" * 16, 16)], b""),
        ([b"a" * 16], [], b"a" * 16),
        # The rest of the line is discarded, not buffered, not reported again.
        ([b"b" * 20, b"c" * 100, b"d" * 5], [overlong(b"b" * 16, 16)], b""),
        # An overlong line followed by a good one.
        ([b"x" * 40 + b"\nt=1\n"], [overlong(b"x" * 16, 16), line(b"t=1")], b""),
        ([b"x" * 10, b"y" * 10, b"z\r", b"\nt=1\n"],
         [overlong(b"x" * 10 + b"y" * 6, 16), line(b"t=1")], b""),
        # A lone "\r" ends an overlong line too.
        ([b"x" * 17 + b"\rt=1\r"], [overlong(b"x" * 16, 16), line(b"t=1")], b""),
        # Two overlong lines in a row are two events.
        ([b"x" * 17 + b"\n" + b"y" * 17 + b"\n"],
         [overlong(b"x" * 16, 16), overlong(b"y" * 16, 16)], b""),
        # Control bytes in an overlong line: it is overlong (known first), not garbage.
        ([b"\x00" * 17 + b"\n"], [overlong(b"\x00" * 16, 16)], b""),
    ],
)
def test_overlong(chunks: list[bytes], events: list[LineEvent], pending: bytes) -> None:
    assert feed_all(chunks) == (events, pending)


def test_reset_drops_the_partial_line() -> None:
    framer = LineFramer(max_line_bytes=16)
    assert framer.feed(b"t=1\nt=2") == [line(b"t=1")]
    assert framer.pending == b"t=2"
    framer.reset()
    assert framer.pending == b""
    assert framer.feed(b"9\n") == [line(b"9")]


def test_reset_ends_an_overlong_line() -> None:
    framer = LineFramer(max_line_bytes=4)
    assert framer.feed(b"abcdef") == [overlong(b"abcd", 4)]
    framer.reset()
    assert framer.feed(b"t=1\n") == [line(b"t=1")]


def test_defaults_and_limits() -> None:
    framer = LineFramer()
    assert framer.max_line_bytes == 512
    assert framer.feed(b"a" * 512 + b"\n") == [line(b"a" * 512)]
    assert framer.feed(b"a" * 513) == [overlong(b"a" * 512, 512)]
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineFramer(max_line_bytes=0)


def test_event_is_frozen_and_slotted() -> None:
    event = line(b"x")
    assert not hasattr(event, "__dict__")
    with pytest.raises(AttributeError):
        event.data = b"y"  # type: ignore[misc]


# --- any chunking, the same events ----------------------------------------------------------

# Streams made of the pieces that matter: text, terminators, control bytes, invalid UTF-8.
pieces = st.sampled_from(
    [b"t=1", b"h=78.2", b"a", b"\xc2\xb0", b"\xc2", b"\xff", b"\x00", b"\t", b" ",
     b"\n", b"\r", b"\r\n", b"x" * 7]
)
streams = st.lists(pieces, max_size=40).map(b"".join) | st.binary(max_size=200)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(streams)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300)
@given(chunked(), st.integers(1, 24))
def test_any_chunking_gives_the_same_events(
    split: tuple[bytes, list[bytes]], max_line_bytes: int
) -> None:
    data, chunks = split
    whole = feed_all([data], max_line_bytes)
    assert feed_all(chunks, max_line_bytes) == whole
    # Byte by byte too: the hardest cut.
    assert feed_all([data[i : i + 1] for i in range(len(data))], max_line_bytes) == whole


@settings(max_examples=300)
@given(st.lists(streams, max_size=8), st.integers(1, 24))
def test_never_raises_and_never_buffers_past_the_limit(
    chunks: list[bytes], max_line_bytes: int
) -> None:
    framer = LineFramer(max_line_bytes=max_line_bytes)
    for chunk in chunks:
        for event in framer.feed(chunk):
            assert event.data
            assert b"\r" not in event.data
            assert b"\n" not in event.data
            assert len(event.data) <= max_line_bytes
            if event.kind == "overlong":
                assert event.size == max_line_bytes + 1
            else:
                assert event.size == len(event.data)
            if event.kind == "line":
                event.data.decode("utf-8")
        assert len(framer.pending) <= max_line_bytes


@settings(max_examples=200)
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]),
                        max_size=20), max_size=10),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_text_lines_come_back_as_sent(texts: list[str], terminator: bytes) -> None:
    data = b"".join(t.encode() + terminator for t in texts)
    events, pending = feed_all([data], max_line_bytes=256)
    expected = [line(t.encode()) for t in texts if t.strip(" \t")]
    assert (events, pending) == (expected, b"")
