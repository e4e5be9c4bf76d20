"""Splitting a serial byte stream into lines, sans-IO: bytes in, :class:`LineEvent` out.

The serial source reads whatever the port has and calls :meth:`LineFramer.feed`; nothing here
touches a port or a clock. Three things can come out of a stretch of bytes:

- ``"line"``: a complete line of text, without its terminator;
- ``"garbage"``: a complete line that is not text: it holds a NUL or another control byte
  (tab excepted), or it is not UTF-8. This is what a baud-rate mismatch, line noise or a board
  printing its boot banner at another speed looks like;
- ``"overlong"``: a line that passed ``max_line_bytes`` without a terminator (a sensor printing
  without newlines, or noise that never contains one).

Incomplete input is neither: it stays buffered (see :attr:`LineFramer.pending`) and yields
nothing until the rest arrives. Lines end at ``"\\n"``, ``"\\r\\n"`` or a lone ``"\\r"``: Arduino
sketches use all three. Blank lines (empty, or only spaces and tabs) are skipped silently, which
is also why a ``"\\r\\n"`` split across two reads does not yield an extra line: the ``"\\n"``
alone ends an empty one.

The events depend only on the bytes, never on how the reads happened to cut them: an overlong
line is reported the moment its ``max_line_bytes + 1``-th byte arrives (so a stream with no
terminators at all is still reported, and never buffered beyond the limit), and the rest of that
line, up to the next terminator, is discarded without being kept or reported again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["line", "garbage", "overlong"]

_TERMINATORS = re.compile(rb"[\r\n]+")
# Control bytes other than tab; CR and LF never reach a line (they end it).
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_BLANK = b" \t"


@dataclass(frozen=True, slots=True)
class LineEvent:
    """One outcome of the byte stream.

    ``data`` is the line without its terminator, or the dropped bytes (for ``"overlong"`` only
    the first ``max_line_bytes`` of them). ``size`` counts the bytes the event stands for: the
    line's length for ``"line"`` and ``"garbage"``; for ``"overlong"`` the bytes seen when the
    limit was passed, ``max_line_bytes + 1`` (the rest of the line is discarded uncounted, so
    that every way of cutting the stream into reads gives the same events).
    """

    kind: EventKind
    data: bytes
    size: int


class LineFramer:
    """Buffer partial lines across reads and hand out complete ones (see the module docstring)."""

    __slots__ = ("_buffer", "_discarding", "_max")

    def __init__(self, *, max_line_bytes: int = 512) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
        self._max = max_line_bytes
        self._buffer = bytearray()
        # Inside a line already reported as overlong: drop bytes until the next terminator.
        self._discarding = False

    @property
    def max_line_bytes(self) -> int:
        return self._max

    @property
    def pending(self) -> bytes:
        """The bytes of an incomplete line, waiting for their terminator."""
        return bytes(self._buffer)

    def reset(self) -> None:
        """Forget any partial line, e.g. after the port went away: its rest will never come."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[LineEvent]:
        """The events completed by ``data``; an unfinished line is kept for the next call."""
        events: list[LineEvent] = []
        buffer = self._buffer
        limit = self._max
        start = 0
        size = len(data)
        while start < size:
            match = _TERMINATORS.search(data, start)
            end = size if match is None else match.start()
            if self._discarding:
                pass
            elif len(buffer) + end - start > limit:
                keep = bytes(buffer) + data[start : start + limit - len(buffer)]
                events.append(LineEvent("overlong", keep, limit + 1))
                buffer.clear()
                self._discarding = True
            elif match is None:
                buffer += data[start:end]
            else:
                if buffer:
                    buffer += data[start:end]
                    line = bytes(buffer)
                    buffer.clear()
                else:
                    line = data[start:end]
                event = _classify(line)
                if event is not None:
                    events.append(event)
            if match is None:
                break
            # A terminator ends any line, an overlong one included.
            self._discarding = False
            start = match.end()
        return events


def _classify(line: bytes) -> LineEvent | None:
    if not line.strip(_BLANK):
        return None
    if _CONTROL.search(line) is not None:
        return LineEvent("garbage", line, len(line))
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return LineEvent("garbage", line, len(line))
    return LineEvent("line", line, len(line))
