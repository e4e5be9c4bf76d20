"""Modbus RTU framing without I/O: the bytes of a read request, and reading its answer.

The gateway's poller (``gateway/sources/modbus.py``) owns the serial port and the clock; here
are the frames. An RTU frame is the slave's unit address, a function code, the data, and a
CRC-16 (polynomial 0xA001, initial 0xFFFF) sent low byte first. The four read functions:

=============  ====  ==================================  ===========================
``function``   code  request data                        answer data
=============  ====  ==================================  ===========================
``coils``      1     address (2 bytes), count (2 bytes)  byte count, bits LSB first
``discrete``   2     address, count                      byte count, bits LSB first
``holding``    3     address, count                      byte count, registers (BE)
``input``      4     address, count                      byte count, registers (BE)
=============  ====  ==================================  ===========================

A slave that cannot serve a request answers with the function code plus 0x80 and one
exception code (2: illegal data address, ...). One that does not hear it (wrong address,
broken wire, a CRC error on its side) does not answer at all: a timeout, which only the
caller's clock can tell.

:class:`ReadExchange` is one request and its answer. ``feed`` it the bytes that arrive; it
knows from the function code and the requested count how long the answer is, so it needs no
timing (RTU's 3.5-character silences) to find the end of the frame. It then holds either the
values or a :class:`RtuError` of kind ``"crc"`` (the frame arrived damaged), ``"exception"``
(the slave refused) or ``"mismatch"`` (an answer from another slave or to another function, or
of the wrong length). Many USB-RS485 adapters hear their own transmission; with ``echo=True``
the exchange first expects the request to come back and skips it.

One write: function 5, *write single coil* (the common RS485 relay boards: a siren),
:class:`CoilWrite`. Its request is the unit, 5, the coil's address and 0xFF00 (on) or 0x0000
(off); a slave that did it answers with the very same eight bytes.

The slave side (:class:`RequestFramer`, :func:`read_response`, :func:`exception_response`) is
here for the simulators and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from devices.modbus import Function

FUNCTION_CODES: dict[Function, int] = {"coils": 1, "discrete": 2, "holding": 3, "input": 4}
FUNCTIONS: dict[int, Function] = {code: name for name, code in FUNCTION_CODES.items()}

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

ErrorKind = Literal["crc", "exception", "mismatch"]


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 of ``data``; the frame carries it low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` (unit address, function, data) followed by its CRC."""
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def _check_unit(unit: int) -> None:
    # 0 is broadcast (no answer comes), 248..255 are reserved.
    if not 1 <= unit <= 247:
        raise ValueError(f"unit address {unit} is outside 1..247")


def read_request(unit: int, function: Function, address: int, count: int) -> bytes:
    """The frame that asks slave ``unit`` for ``count`` registers (or bits) at ``address``."""
    _check_unit(unit)
    if not 0 <= address <= 0xFFFF or not 1 <= count <= 0xFFFF:
        raise ValueError(f"address {address} / count {count} out of range")
    code = FUNCTION_CODES[function]
    return with_crc(bytes((unit, code)) + address.to_bytes(2, "big") + count.to_bytes(2, "big"))


def data_bytes(function: Function, count: int) -> int:
    """How many data bytes the answer to a read of ``count`` carries."""
    return (count + 7) // 8 if function in ("coils", "discrete") else 2 * count


class RtuError(Exception):
    """A failed exchange; ``kind`` is crc, exception or mismatch. ``code``: the exception code."""

    def __init__(self, kind: ErrorKind, reason: str, frame: bytes, code: int | None = None):
        super().__init__(reason)
        self.kind: ErrorKind = kind
        self.reason = reason
        self.frame = frame
        self.code = code


def answer_error(answer: bytes, unit: int, request: bytes, *, echo_hint: bool
                 ) -> RtuError | None:
    """What is wrong with a complete answer frame, in this order: its CRC (with
    ``echo_hint``: an answer that starts like our own request means an echoing adapter), the
    unit it came from, an exception response (5 bytes). None: the caller reads its data."""
    if not crc_ok(answer):
        shown = min(len(answer), len(request))
        if echo_hint and answer[:shown] == request[:shown]:
            return RtuError("mismatch", "the answer starts with our own request: the adapter "
                            "echoes what it sends (set echo)", answer)
        return RtuError("crc", f"CRC error in the answer {answer.hex(' ')}", answer)
    if answer[0] != unit:
        return RtuError("mismatch", f"answer from unit {answer[0]}, asked unit {unit}", answer)
    if len(answer) == 5:
        code = answer[2]
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        return RtuError("exception", f"exception {code} ({name})", answer, code)
    return None


@dataclass(slots=True)
class ReadExchange:
    """One read request and the parsing of its answer (see the module docstring)."""

    unit: int
    function: Function
    address: int
    count: int
    echo: bool = False
    request: bytes = field(init=False)
    values: list[int] | list[bool] | None = field(init=False, default=None)
    error: RtuError | None = field(init=False, default=None)
    # The complete answer frame, once received (with a wrong CRC too).
    answer: bytes = field(init=False, default=b"")
    # Bytes that came after the answer (line noise, a late answer): the caller drops them.
    leftover: bytes = field(init=False, default=b"")
    _buffer: bytearray = field(init=False, default_factory=bytearray)
    _skip: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.request = read_request(self.unit, self.function, self.address, self.count)
        self._skip = len(self.request) if self.echo else 0

    @property
    def done(self) -> bool:
        return self.values is not None or self.error is not None

    @property
    def received(self) -> int:
        """Bytes of the answer received so far (the echo not counted)."""
        return max(0, len(self._buffer) - self._skip)

    def feed(self, data: bytes) -> bool:
        """Take bytes from the line; True once the answer (or a definite error) is complete."""
        if self.done:
            self.leftover += data
            return True
        buf = self._buffer
        buf += data
        if self._skip:
            echoed = bytes(buf[: self._skip])
            if echoed != self.request[: len(echoed)]:
                return self._fail("mismatch", f"expected the adapter's echo of the request, got "
                                  f"{echoed.hex(' ')}", echoed)
            if len(buf) < self._skip:
                return False
        frame = buf[self._skip:]
        if len(frame) < 2:
            return False
        code = FUNCTION_CODES[self.function]
        if frame[1] == code | 0x80:
            size = 5
        elif frame[1] == code:
            size = 5 + data_bytes(self.function, self.count)
        else:
            return self._fail("mismatch", f"answer has function code {frame[1]}, "
                              f"expected {code}", bytes(frame))
        if len(frame) < size:
            return False
        answer = self.answer = bytes(frame[:size])
        self.leftover = bytes(frame[size:])
        error = answer_error(answer, self.unit, self.request, echo_hint=True)
        if error is not None:
            self.error = error
            return True
        expected = data_bytes(self.function, self.count)
        if answer[2] != expected:
            return self._fail("mismatch", f"answer says {answer[2]} data bytes, expected "
                              f"{expected}", answer)
        payload = answer[3:-2]
        if self.function in ("coils", "discrete"):
            self.values = [bool(payload[i >> 3] >> (i & 7) & 1) for i in range(self.count)]
        else:
            self.values = [int.from_bytes(payload[i:i + 2], "big")
                           for i in range(0, len(payload), 2)]
        return True

    def _fail(self, kind: ErrorKind, reason: str, frame: bytes, code: int | None = None) -> bool:
        self.error = RtuError(kind, reason, frame, code)
        return True


WRITE_COIL = 5


def write_coil_request(unit: int, address: int, on: bool) -> bytes:
    """Function 5: switch coil ``address`` of slave ``unit`` on or off."""
    _check_unit(unit)
    if not 0 <= address <= 0xFFFF:
        raise ValueError(f"coil address {address} out of range")
    value = b"\xff\x00" if on else b"\x00\x00"
    return with_crc(bytes((unit, WRITE_COIL)) + address.to_bytes(2, "big") + value)


@dataclass(slots=True)
class CoilWrite:
    """One write-single-coil request and its answer: the echo of the request, or an exception.
    The same interface as :class:`ReadExchange` for the poller (``request``, ``feed``,
    ``done``, ``error``, ``received``, ``leftover``, ``answer``)."""

    unit: int
    address: int
    on: bool
    echo: bool = False
    request: bytes = field(init=False)
    written: bool = field(init=False, default=False)
    error: RtuError | None = field(init=False, default=None)
    answer: bytes = field(init=False, default=b"")
    leftover: bytes = field(init=False, default=b"")
    _buffer: bytearray = field(init=False, default_factory=bytearray)
    _skip: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.request = write_coil_request(self.unit, self.address, self.on)
        self._skip = len(self.request) if self.echo else 0

    @property
    def done(self) -> bool:
        return self.written or self.error is not None

    @property
    def received(self) -> int:
        return max(0, len(self._buffer) - self._skip)

    def feed(self, data: bytes) -> bool:
        if self.done:
            self.leftover += data
            return True
        buf = self._buffer
        buf += data
        if len(buf) < self._skip + 2:
            return False
        frame = bytes(buf[self._skip:])
        size = 5 if frame[1] == WRITE_COIL | 0x80 else 8
        if frame[1] not in (WRITE_COIL, WRITE_COIL | 0x80):
            self.error = RtuError("mismatch", f"answer has function code {frame[1]}, expected "
                                  f"{WRITE_COIL}", frame)
            return True
        if len(frame) < size:
            return False
        answer = self.answer = frame[:size]
        self.leftover = frame[size:]
        # A write's good answer is its request again: no hint about an echoing adapter here.
        self.error = answer_error(answer, self.unit, self.request, echo_hint=False)
        if self.error is None and answer != self.request:
            self.error = RtuError("mismatch", f"the slave answered {answer.hex(' ')}, not the "
                                  "request's echo", answer)
        self.written = self.error is None
        return True


# -- the slave side: simulators and tests -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadRequest:
    unit: int
    function: Function
    address: int
    count: int


@dataclass(slots=True)
class RequestFramer:
    """Finds read requests (functions 1 to 4, always 8 bytes) in the bytes a slave hears.

    A slave has no other way to resynchronise after noise than dropping a byte and looking
    again; dropped bytes are counted in ``skipped``. Frames with other function codes are
    skipped the same way (the simulators answer reads only).
    """

    skipped: int = 0
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[ReadRequest]:
        buf = self._buffer
        buf += data
        found: list[ReadRequest] = []
        while len(buf) >= 8:
            frame = bytes(buf[:8])
            function = FUNCTIONS.get(frame[1])
            if function is not None and crc_ok(frame):
                found.append(ReadRequest(frame[0], function, int.from_bytes(frame[2:4], "big"),
                                         int.from_bytes(frame[4:6], "big")))
                del buf[:8]
            else:
                del buf[:1]
                self.skipped += 1
        return found


def read_response(unit: int, function: Function, values: list[int] | list[bool]) -> bytes:
    """A slave's answer carrying ``values`` (registers 0..65535, or bits)."""
    code = FUNCTION_CODES[function]
    if function in ("coils", "discrete"):
        packed = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i >> 3] |= 1 << (i & 7)
        data = bytes(packed)
    else:
        data = b"".join(int(v).to_bytes(2, "big") for v in values)
    return with_crc(bytes((unit, code, len(data))) + data)


def exception_response(unit: int, function: Function, code: int) -> bytes:
    return with_crc(bytes((unit, FUNCTION_CODES[function] | 0x80, code)))
