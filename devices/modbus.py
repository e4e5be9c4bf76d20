"""Modbus register maps, and turning the registers a poll returned into a reading.

The I/O (an RTU client on the RS485 adapter, its CRC, timeouts and exception responses) is the
gateway's; here a poll's result is plain values, 16-bit unsigned integers for holding and input
registers or booleans for coils and discrete inputs, as any Modbus client returns them.

A :class:`Block` is one read request: a function, a start address and a count (at most 125
registers or 2000 bits, the protocol's limits), and the :class:`Register` fields found in it. A
register names a field, where it is, its type, and how to scale it::

    value = raw * scale + offset

``int16``/``int32`` are two's complement, ``uint16``/``uint32`` unsigned, ``float32`` IEEE 754;
an integer type keeps integer values only when ``scale`` is 1 and ``offset`` 0, and gives
floats otherwise, so a field's type never changes from one poll to the next (InfluxDB refuses a
field that changes type). The 32-bit types span two registers. Vendors disagree on their
order; with the four bytes of the value written A B C D, most significant first:

=========================  =================  ==============  ===============
register order             ``word_order``     ``byte_order``  vendors call it
=========================  =================  ==============  ===============
``AB`` ``CD``              ``"big"``          ``"big"``       ABCD, big-endian
``CD`` ``AB``              ``"little"``       ``"big"``       CDAB, word swap
``BA`` ``DC``              ``"big"``          ``"little"``    BADC, byte swap
``DC`` ``BA``              ``"little"``       ``"little"``    DCBA, little-endian
=========================  =================  ==============  ===============

``byte_order="little"`` swaps the two bytes of every register, so it applies to the 16-bit
types as well. ``unit`` is documentation for the technician; the field name carries the unit
into InfluxDB (``level_mm``).

Worked example: the common RS485 liquid-level transmitter
-----------------------------------------------------------
The cheap submersible level sensors sold for tanks and ponds (slave address 1, 9600 baud, 8N1
by default) hold the level in holding register ``0x0004`` as an unsigned integer, in the unit
set at register ``0x0002`` and with the decimal places set at ``0x0003``. With the unit set to
millimetres and no decimals, the gateway sends ``01 03 00 04 00 01 C5 CB`` (read one holding
register at 4) and the sensor answers ``01 03 02 04 D2 3A D9``: 0x04D2, 1234 mm. In the
config::

    blocks:
      - function: holding
        address: 4          # 0x0004
        count: 1
        registers:
          - {field: level_mm, address: 4, type: uint16, unit: mm}

or in Python ``Block(address=4, count=1, registers=(Register("level_mm", 4),))``. Had the
sensor been set to one decimal place, the same register would be ``scale: 0.1``.

Models that give the level as a float32 in metres at ``0x0000`` send the low word first
(CDAB): ``01 03 00 00 00 02 C4 0B`` is answered by ``01 03 04 F3 B6 3F 9D F8 C8``, registers
0xF3B6 0x3F9D, which read in order ABCD as 0x3F9DF3B6 = 1.234 m::

          - {field: level_m, address: 0, type: float32, word_order: little, unit: m}

in a block of ``address: 0, count: 2``. To report centimetres instead, ``field: level_cm``
with ``scale: 100``; to report the water's height above the basin floor when the sensor hangs
0.35 m above it, ``offset: 0.35``.

Errors: :func:`decode_block` raises :class:`~devices.reading.DecodeError` with ``device``,
``payload`` the registers as big-endian bytes (bits as one byte each), and the block and
register named in the reason: kind ``"malformed"`` for a short or out-of-range answer, ``"nan"``
for a float32 that is NaN or infinite (a sensor's "no reading"). Invalid register maps are
refused when the config is loaded, with :class:`ValueError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from devices.reading import DecodeError, FieldValue, Reading, check_name

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32", "bool"]
Function = Literal["holding", "input", "coils", "discrete"]
Order = Literal["big", "little"]

_WIDTHS: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "bool": 1,
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
# Largest count per request: 125 registers or 2000 bits fit in one RTU frame of 256 bytes.
_MAX_COUNT: dict[str, int] = {"holding": 125, "input": 125, "coils": 2000, "discrete": 2000}
_BIT_FUNCTIONS = frozenset({"coils", "discrete"})
_F32 = struct.Struct(">f")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Register:
    """One field in a block: where it is, its type and byte order, and its scaling."""

    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    field: str
    address: int
    type: RegisterType = "uint16"
    # 32-bit types: "big" when the first register holds the high word (ABCD), "little" (CDAB).
    word_order: Order = "big"
    # Within each register: "little" swaps its two bytes (BADC, or DCBA with word_order little).
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    def __post_init__(self) -> None:
        try:
            check_name("field name", self.field)
        except DecodeError as exc:
            raise ValueError(f"register {self.field!r}: {exc.reason}") from exc
        if self.field == "time":
            raise ValueError("register field 'time' is InfluxDB's timestamp, not a field")
        if self.type not in _WIDTHS:
            raise ValueError(f"register {self.field!r}: unknown type {self.type!r}")
        if self.word_order not in ("big", "little") or self.byte_order not in ("big", "little"):
            raise ValueError(f"register {self.field!r}: orders are 'big' or 'little'")
        if not 0 <= self.address <= 0xFFFF - self.width + 1:
            raise ValueError(
                f"register {self.field!r}: address {self.address} is outside 0..65535"
            )
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"register {self.field!r}: scale must be a finite non-zero number")
        if not math.isfinite(self.offset):
            raise ValueError(f"register {self.field!r}: offset must be a finite number")

    @property
    def width(self) -> int:
        """How many registers (or bits) the value spans: 2 for 32-bit types, else 1."""
        return _WIDTHS[self.type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """One read request (function, address, count) and the registers it holds."""

    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    function: Function = "holding"
    address: int
    count: int
    registers: tuple[Register, ...]
    # Empty: the slave's measurement.
    measurement: str = ""

    def __post_init__(self) -> None:
        # Datasheets give addresses in hex, configs often in decimal: say both.
        where = f"block {self.function} at {self.address} (0x{self.address:04X})"
        limit = _MAX_COUNT.get(self.function)
        if limit is None:
            raise ValueError(f"{where}: unknown function {self.function!r}")
        if not 1 <= self.count <= limit:
            raise ValueError(f"{where}: count {self.count} is not in 1..{limit}")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"{where}: address is outside 0..65535")
        if self.address + self.count > 0x10000:
            raise ValueError(f"{where}: count {self.count} runs past address 65535")
        if self.measurement:
            try:
                check_name("measurement", self.measurement)
            except DecodeError as exc:
                raise ValueError(f"{where}: {exc.reason}") from exc
        if not self.registers:
            raise ValueError(f"{where}: no registers")
        bits = self.function in _BIT_FUNCTIONS
        end = self.address + self.count
        names: set[str] = set()
        for reg in self.registers:
            if bits and reg.type != "bool":
                raise ValueError(
                    f"{where}: register {reg.field!r} is {reg.type}; {self.function} hold bools"
                )
            if not bits and reg.type == "bool":
                raise ValueError(
                    f"{where}: register {reg.field!r} is bool; use coils or discrete for bits"
                )
            if not self.address <= reg.address <= end - reg.width:
                span = f"{reg.address}..{reg.address + reg.width - 1}"
                raise ValueError(
                    f"{where}: register {reg.field!r} ({span}) is outside the block "
                    f"({self.address}..{end - 1})"
                )
            if reg.field in names:
                raise ValueError(f"{where}: field {reg.field!r} appears twice")
            names.add(reg.field)
        previous: Register | None = None
        for reg in sorted(self.registers, key=lambda r: r.address):
            if previous is not None and reg.address < previous.address + previous.width:
                raise ValueError(
                    f"{where}: registers {previous.field!r} and {reg.field!r} overlap at "
                    f"{reg.address}"
                )
            previous = reg


def decode_block(
    block: Block,
    values: Sequence[int] | Sequence[bool],
    *,
    device: str,
    measurement: str,
    received_at_ns: int,
    source: str = "",
) -> Reading:
    """The reading in one poll's answer to ``block``, stamped ``received_at_ns``.

    ``values`` may be longer than ``block.count`` (bit reads come padded to a whole byte).
    ``source`` (the port) is only copied into a :class:`DecodeError`.
    """
    try:
        if len(values) < block.count:
            raise DecodeError(
                f"block {block.function} at {block.address}: {len(values)} values, "
                f"expected {block.count}"
            )
        base = block.address
        bits = block.function in _BIT_FUNCTIONS
        fields: list[tuple[str, FieldValue]] = []
        for reg in block.registers:
            index = reg.address - base
            if bits:
                fields.append((reg.field, _bit(values[index], reg)))
            else:
                fields.append((reg.field, _value(reg, values, index)))
        return Reading(
            block.measurement or measurement, (("device", device),), tuple(fields), received_at_ns
        )
    except DecodeError as exc:
        exc.source, exc.device, exc.payload = source, device, _payload(block, values)
        raise


def encode_value(register: Register, value: float | int | bool) -> list[int]:
    """The raw registers (or the one bit, as 0 or 1) that :func:`decode_block` reads as ``value``.

    The inverse of decoding, for simulators and tests. Integer types round to the nearest raw
    value; a value the type cannot hold raises :class:`ValueError`.
    """
    kind = register.type
    if kind == "bool":
        return [1 if value else 0]
    if kind == "float32":
        raw_float = (float(value) - register.offset) / register.scale
        try:
            u32: int = _U32.unpack(_F32.pack(raw_float))[0]
        except OverflowError as exc:
            raise ValueError(f"{register.field}: {value} does not fit a float32") from exc
        return _words(register, u32)
    if isinstance(value, int) and register.scale == 1 and register.offset == 0:
        raw = int(value)  # exact, where a float would round 32-bit values
    else:
        scaled = (value - register.offset) / register.scale
        if not math.isfinite(scaled):
            raise ValueError(f"{register.field}: {value} is not a finite number")
        raw = round(scaled)
    low, high = _INT_RANGES[kind]
    if not low <= raw <= high:
        raise ValueError(f"{register.field}: raw {raw} does not fit {kind} ({low}..{high})")
    if register.width == 1:
        word = raw & 0xFFFF
        return [_swap(word) if register.byte_order == "little" else word]
    return _words(register, raw & 0xFFFF_FFFF)


def _words(register: Register, u32: int) -> list[int]:
    high, low = u32 >> 16, u32 & 0xFFFF
    if register.byte_order == "little":
        high, low = _swap(high), _swap(low)
    return [high, low] if register.word_order == "big" else [low, high]


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def _word(values: Sequence[int] | Sequence[bool], index: int, reg: Register) -> int:
    word = values[index]
    if not isinstance(word, int) or not 0 <= word <= 0xFFFF:
        raise DecodeError(
            f"register {reg.field!r} at {reg.address}: {word!r} is not a 16-bit register value"
        )
    return _swap(word) if reg.byte_order == "little" else word


def _bit(value: int | bool, reg: Register) -> bool:
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise DecodeError(f"register {reg.field!r} at {reg.address}: {value!r} is not a bit")


def _value(reg: Register, values: Sequence[int] | Sequence[bool], index: int) -> FieldValue:
    kind = reg.type
    first = _word(values, index, reg)
    raw: int | float
    if reg.width == 2:
        second = _word(values, index + 1, reg)
        u32 = (first << 16 | second) if reg.word_order == "big" else (second << 16 | first)
        if kind == "uint32":
            raw = u32
        elif kind == "int32":
            raw = u32 - 0x1_0000_0000 if u32 & 0x8000_0000 else u32
        else:
            raw = _F32.unpack(_U32.pack(u32))[0]
            if not math.isfinite(raw):
                raise DecodeError(
                    f"register {reg.field!r} at {reg.address}: float32 is {raw}", kind="nan"
                )
            return _scaled(raw, reg)
    elif kind == "int16":
        raw = first - 0x10000 if first & 0x8000 else first
    else:
        raw = first
    if reg.scale == 1 and reg.offset == 0:
        return raw
    return _scaled(raw, reg)


def _scaled(raw: int | float, reg: Register) -> float:
    scale, offset = reg.scale, reg.offset
    if scale == 1:
        value = float(raw)
    else:
        # A scale of 0.1 or 0.01 is a number of decimal places: dividing by 10 or 100 gives
        # the decimal the sensor meant (123.4), where multiplying gives 123.40000000000001.
        divisor = round(1 / scale)
        value = raw / divisor if divisor > 1 and 1 / divisor == scale else float(raw) * scale
    # Adding 0.0 would turn a float32's -0.0 into 0.0.
    return value + offset if offset else value


def _payload(block: Block, values: Sequence[int] | Sequence[bool]) -> bytes:
    """The answer as bytes for the error: registers big-endian, bits one byte each."""
    given = values[: block.count]
    if block.function in _BIT_FUNCTIONS:
        return bytes(1 if bit else 0 for bit in given)
    return b"".join(
        ((v & 0xFFFF) if isinstance(v, int) else 0).to_bytes(2, "big") for v in given
    )
