"""Modbus register maps: block validation, value decoding in every order, and the inverse."""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from devices.modbus import Block, Register, RegisterType, decode_block, encode_value
from devices.reading import DecodeError, Reading

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
PORT = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K5XYZ-if00-port0"
ORDERS: dict[str, dict[str, Any]] = {
    "ABCD": {"word_order": "big", "byte_order": "big"},
    "CDAB": {"word_order": "little", "byte_order": "big"},
    "BADC": {"word_order": "big", "byte_order": "little"},
    "DCBA": {"word_order": "little", "byte_order": "little"},
}


def value_of(reg: Register, words: list[int]) -> Any:
    block = Block(address=reg.address, count=reg.width, registers=(reg,))
    reading = decode_block(
        block, words, device="polder-1", measurement="polder", received_at_ns=RECEIVED
    )
    ((name, value),) = reading.fields
    assert name == reg.field
    return value


def reg(kind: RegisterType = "uint16", order: str = "ABCD", **kw: Any) -> Register:
    return Register("x", 0, kind, **ORDERS[order], **kw)


# --- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("register", "words", "expected"),
    [
        (reg("uint16"), [0x04D2], 1234),
        (reg("uint16"), [0xFFFF], 65535),
        (reg("uint16", "BADC"), [0xD204], 1234),
        (reg("int16"), [0xFFF6], -10),
        (reg("int16"), [0x8000], -32768),
        (reg("int16"), [0x7FFF], 32767),
        (reg("int16"), [0], 0),
        (reg("int16", "BADC"), [0xF6FF], -10),
        # float32 12.5 = 0x41480000 in every order
        (reg("float32", "ABCD"), [0x4148, 0x0000], 12.5),
        (reg("float32", "CDAB"), [0x0000, 0x4148], 12.5),
        (reg("float32", "BADC"), [0x4841, 0x0000], 12.5),
        (reg("float32", "DCBA"), [0x0000, 0x4841], 12.5),
        (reg("float32", "ABCD"), [0xC148, 0x0000], -12.5),
        (reg("float32", "CDAB"), [0xF3B6, 0x3F9D], struct.unpack(">f", b"\x3f\x9d\xf3\xb6")[0]),
        (reg("float32"), [0x8000, 0x0000], -0.0),
        # uint32 0x12345678 = 305419896
        (reg("uint32", "ABCD"), [0x1234, 0x5678], 305419896),
        (reg("uint32", "CDAB"), [0x5678, 0x1234], 305419896),
        (reg("uint32", "BADC"), [0x3412, 0x7856], 305419896),
        (reg("uint32", "DCBA"), [0x7856, 0x3412], 305419896),
        (reg("uint32"), [0xFFFF, 0xFFFF], 2**32 - 1),
        # int32 -100000 = 0xFFFE7960
        (reg("int32", "ABCD"), [0xFFFE, 0x7960], -100000),
        (reg("int32", "CDAB"), [0x7960, 0xFFFE], -100000),
        (reg("int32", "BADC"), [0xFEFF, 0x6079], -100000),
        (reg("int32", "DCBA"), [0x6079, 0xFEFF], -100000),
        (reg("int32"), [0x7FFF, 0xFFFF], 2**31 - 1),
        (reg("int32"), [0x8000, 0x0000], -(2**31)),
        (reg("int32", "CDAB"), [0x0001, 0x0000], 1),
        # scale and offset: integer types become floats, every time
        (reg("uint16", scale=0.1), [1234], 123.4),
        (reg("uint16", scale=0.01), [1234], 12.34),
        (reg("uint16", scale=0.1), [0], 0.0),
        (reg("uint16", scale=2), [5], 10.0),
        (reg("uint16", offset=0.5), [100], 100.5),
        (reg("int16", scale=0.1, offset=20), [0xFFF6], 19.0),
        (reg("int16", scale=0.1, offset=-40), [0x0000], -40.0),
        (reg("uint32", "CDAB", scale=0.001), [0x5678, 0x1234], 305419.896),
        (reg("int32", scale=0.5, offset=1), [0xFFFF, 0xFFFE], 0.0),
        (reg("float32", scale=100), [0x4148, 0x0000], 1250.0),
        (reg("float32", "CDAB", offset=0.35), [0x0000, 0x4148], 12.85),
    ],
)
def test_values(register: Register, words: list[int], expected: Any) -> None:
    value = value_of(register, words)
    assert value == expected
    assert type(value) is type(expected)
    if expected == 0:
        assert math.copysign(1, value) == math.copysign(1, expected)
    assert encode_value(register, expected) == words


def test_a_block_of_several_registers() -> None:
    block = Block(
        function="input",
        address=0x0100,
        count=8,
        registers=(
            Register("level_mm", 0x0100),
            Register("temperature_c", 0x0101, "int16", scale=0.1),
            # 0x0102 is a register the map does not use
            Register("flow_l_per_min", 0x0103, "float32", word_order="little"),
            Register("pulses", 0x0105, "uint32"),
            Register("status", 0x0107, "int16"),
        ),
    )
    values = [1234, 0xFF9C, 0xDEAD, 0x0000, 0x4148, 0x0001, 0x0002, 0xFFFF]
    reading = decode_block(block, values, device="polder-1", measurement="polder",
                           received_at_ns=RECEIVED)
    assert reading == Reading(
        "polder",
        (("device", "polder-1"),),
        (("level_mm", 1234), ("temperature_c", -10.0), ("flow_l_per_min", 12.5),
         ("pulses", 65538), ("status", -1)),
        RECEIVED,
    )


@pytest.mark.parametrize("function", ["coils", "discrete"])
def test_bits(function: str) -> None:
    block = Block(
        function=function,  # type: ignore[arg-type]
        address=10,
        count=3,
        registers=(Register("pump_on", 10, "bool"), Register("alarm", 12, "bool")),
    )
    # Bit reads come padded to a whole byte.
    values = [True, True, False, False, False, False, False, False]
    reading = decode_block(block, values, device="d", measurement="m", received_at_ns=RECEIVED)
    assert reading.fields == (("pump_on", True), ("alarm", False))
    assert [type(v) for _, v in reading.fields] == [bool, bool]
    ints = decode_block(block, [0, 1, 1], device="d", measurement="m", received_at_ns=RECEIVED)
    assert ints.fields == (("pump_on", False), ("alarm", True))


def test_measurement_and_longer_answers() -> None:
    block = Block(address=4, count=1, registers=(Register("level_mm", 4),))
    reading = decode_block(block, [7, 99], device="d", measurement="polder",
                           received_at_ns=RECEIVED)
    assert (reading.measurement, reading.fields) == ("polder", (("level_mm", 7),))
    own = dataclasses.replace(block, measurement="water")
    reading = decode_block(own, [7], device="d", measurement="polder", received_at_ns=RECEIVED)
    assert reading.measurement == "water"


# --- refusals -------------------------------------------------------------------------------

F32 = Block(address=0, count=2, registers=(Register("level_m", 0, "float32"),))
U16 = Block(address=0, count=2, registers=(Register("a", 0), Register("b", 1, "int16")))
COILS = Block(function="coils", address=0, count=2, registers=(Register("on", 1, "bool"),))


@pytest.mark.parametrize(
    ("block", "values", "kind", "words", "payload"),
    [
        (F32, [0x7FC0, 0x0000], "nan", "nan", b"\x7f\xc0\x00\x00"),
        (F32, [0xFFC0, 0x0001], "nan", "nan", b"\xff\xc0\x00\x01"),
        (F32, [0x7F80, 0x0000], "nan", "inf", b"\x7f\x80\x00\x00"),
        (F32, [0xFF80, 0x0000], "nan", "-inf", b"\xff\x80\x00\x00"),
        (F32, [0x4148], "malformed", "1 values, expected 2", b"\x41\x48"),
        (U16, [], "malformed", "0 values, expected 2", b""),
        (U16, [1, 0x10000], "malformed", "16-bit", b"\x00\x01\x00\x00"),
        (U16, [-1, 0], "malformed", "16-bit", b"\xff\xff\x00\x00"),
        (COILS, [True], "malformed", "1 values, expected 2", b"\x01"),
        (COILS, [False, 2], "malformed", "not a bit", b"\x00\x01"),
    ],
)
def test_bad_answers(
    block: Block, values: list[int], kind: str, words: str, payload: bytes
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_block(block, values, device="polder-1", measurement="polder",
                     received_at_ns=RECEIVED, source=PORT)
    error = caught.value
    assert (error.kind, error.device, error.source, error.payload) == (
        kind, "polder-1", PORT, payload,
    )
    assert words in error.reason


def test_names_reading_refuses() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_block(U16, [1, 2], device="", measurement="polder", received_at_ns=RECEIVED)
    assert caught.value.kind == "bad_name"
    with pytest.raises(DecodeError) as caught:
        decode_block(U16, [1, 2], device="d", measurement="", received_at_ns=RECEIVED)
    assert caught.value.kind == "bad_name"
    with pytest.raises(DecodeError) as caught:
        decode_block(U16, [1, 2], device="d", measurement="m", received_at_ns=-1)
    assert caught.value.kind == "range"


# --- register maps, checked when the config is loaded --------------------------------------

R = Register("level_mm", 4)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"address": 4, "count": 0, "registers": (R,)}, "count 0 is not in 1..125"),
        ({"address": 4, "count": 126, "registers": (R,)}, "count 126 is not in 1..125"),
        ({"function": "input", "address": 4, "count": 126, "registers": (R,)}, "1..125"),
        ({"function": "coils", "address": 0, "count": 2001,
          "registers": (Register("on", 0, "bool"),)}, "count 2001 is not in 1..2000"),
        ({"function": "discrete", "address": 0, "count": 0,
          "registers": (Register("on", 0, "bool"),)}, "1..2000"),
        ({"address": -1, "count": 1, "registers": (R,)}, "outside 0..65535"),
        ({"address": 65536, "count": 1, "registers": (R,)}, "outside 0..65535"),
        ({"address": 65535, "count": 2, "registers": (R,)}, "past address 65535"),
        ({"address": 4, "count": 1, "registers": ()}, "no registers"),
        ({"address": 5, "count": 1, "registers": (R,)}, "outside the block (5..5)"),
        ({"address": 0, "count": 4, "registers": (R,)}, "outside the block (0..3)"),
        ({"address": 4, "count": 1, "registers": (Register("l", 4, "float32"),)},
         "(4..5) is outside the block (4..4)"),
        ({"address": 0, "count": 5, "registers": (Register("l", 4, "uint32"),)},
         "outside the block"),
        ({"address": 0, "count": 2, "registers": (Register("on", 0, "bool"),)},
         "use coils or discrete"),
        ({"function": "coils", "address": 4, "count": 1, "registers": (R,)}, "hold bools"),
        ({"function": "discrete", "address": 4, "count": 1, "registers": (R,)}, "hold bools"),
        ({"address": 0, "count": 4,
          "registers": (Register("a", 0, "float32"), Register("b", 1))}, "'a' and 'b' overlap"),
        ({"address": 0, "count": 4,
          "registers": (Register("b", 2, "int32"), Register("a", 1, "int32"))},
         "'a' and 'b' overlap at 2"),
        ({"address": 0, "count": 4, "registers": (Register("a", 0), Register("a2", 0))},
         "overlap"),
        ({"address": 0, "count": 4, "registers": (Register("a", 0), Register("a", 1))},
         "'a' appears twice"),
        ({"address": 4, "count": 1, "registers": (R,), "measurement": "bad\nname"},
         "control character"),
        ({"function": "fifo", "address": 4, "count": 1, "registers": (R,)}, "unknown function"),
    ],
)
def test_block_validation(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match="block") as caught:
        Block(**kwargs)
    assert words in str(caught.value)
    # The same errors through the config loader's path.
    plain = {**kwargs, "registers": [dataclasses.asdict(r) for r in kwargs["registers"]]}
    with pytest.raises(ValidationError):
        TypeAdapter(Block).validate_python(plain)


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("", 0), {}, "empty"),
        (("a\tb", 0), {}, "control"),
        (("time", 0), {}, "time"),
        (("x", -1), {}, "outside 0..65535"),
        (("x", 65536), {}, "outside 0..65535"),
        (("x", 65535, "float32"), {}, "outside 0..65535"),
        (("x", 0), {"scale": 0.0}, "scale"),
        (("x", 0), {"scale": math.nan}, "scale"),
        (("x", 0), {"offset": math.inf}, "offset"),
        (("x", 0, "int8"), {}, "unknown type"),
        (("x", 0), {"word_order": "middle"}, "orders"),
    ],
)
def test_register_validation(args: tuple[Any, ...], kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match="register") as caught:
        Register(*args, **kwargs)
    assert words in str(caught.value)


def test_widths_and_defaults() -> None:
    assert [Register("x", 0, t).width for t in ("int16", "uint16", "bool")] == [1, 1, 1]
    assert [Register("x", 0, t).width for t in ("int32", "uint32", "float32")] == [2, 2, 2]
    r = Register("level_mm", 4)
    assert (r.type, r.word_order, r.byte_order, r.scale, r.offset, r.unit) == (
        "uint16", "big", "big", 1.0, 0.0, "",
    )
    assert Block(address=4, count=1, registers=(r,)).function == "holding"
    for cls in (Register, Block):
        assert cls.__pydantic_config__ == {"extra": "forbid"}
    assert not hasattr(r, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.scale = 2.0  # type: ignore[misc]


def test_config_example_from_the_docstring() -> None:
    adapter = TypeAdapter(Block)
    block = adapter.validate_python(
        {"function": "holding", "address": 4, "count": 1,
         "registers": [{"field": "level_mm", "address": 4, "type": "uint16", "unit": "mm"}]}
    )
    assert block == Block(address=4, count=1, registers=(Register("level_mm", 4, unit="mm"),))
    assert decode_block(block, [0x04D2], device="d", measurement="polder",
                        received_at_ns=RECEIVED).fields == (("level_mm", 1234),)
    f32 = adapter.validate_python(
        {"address": 0, "count": 2,
         "registers": [{"field": "level_m", "address": 0, "type": "float32",
                        "word_order": "little", "unit": "m"}]}
    )
    ((_, level),) = decode_block(f32, [0xF3B6, 0x3F9D], device="d", measurement="polder",
                                 received_at_ns=RECEIVED).fields
    assert level == pytest.approx(1.234, rel=1e-7)
    with pytest.raises(ValidationError):
        adapter.validate_python({"address": 0, "count": 1, "registers": [],
                                 "typo": 1})


@pytest.mark.parametrize(
    ("register", "value"),
    [
        (reg("uint16"), -1),
        (reg("uint16"), 65536),
        (reg("int16"), 32768),
        (reg("int16"), -32769),
        (reg("uint32"), 2**32),
        (reg("int32"), -(2**31) - 1),
        (reg("uint16", scale=0.1), 6553.6),
        (reg("int16"), math.nan),
        (reg("int16", scale=0.5), math.inf),
        (reg("float32"), 1e39),
    ],
)
def test_encode_refuses_what_the_type_cannot_hold(register: Register, value: float) -> None:
    with pytest.raises(ValueError, match="x"):
        encode_value(register, value)


def test_encode_bits() -> None:
    on = Register("on", 0, "bool")
    assert (encode_value(on, True), encode_value(on, False)) == ([1], [0])


# --- round trips and only DecodeError -------------------------------------------------------

INT_TYPES: list[RegisterType] = ["int16", "uint16", "int32", "uint32"]
RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
          "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}
orders = st.sampled_from(sorted(ORDERS))
scales = st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.5, 2.0, 10.0, -1.0, 0.25, 1 / 3])
offsets = st.sampled_from([0.0, 0.35, -40.0, 273.15, 1000.0])


@st.composite
def int_cases(draw: st.DrawFn) -> tuple[Register, int]:
    kind = draw(st.sampled_from(INT_TYPES))
    register = reg(kind, draw(orders))
    return register, draw(st.integers(*RANGES[kind]))


@settings(max_examples=300)
@given(int_cases())
def test_round_trip_ints_exactly(case: tuple[Register, int]) -> None:
    register, value = case
    words = encode_value(register, value)
    assert len(words) == register.width
    assert all(0 <= w <= 0xFFFF for w in words)
    decoded = value_of(register, words)
    assert decoded == value
    assert type(decoded) is int


@settings(max_examples=300)
@given(st.sampled_from(INT_TYPES), orders, scales, offsets, st.data())
def test_round_trip_scaled_ints(
    kind: RegisterType, order: str, scale: float, offset: float, data: st.DataObject
) -> None:
    register = reg(kind, order, scale=scale, offset=offset)
    raw = data.draw(st.integers(*RANGES[kind]))
    # Registers -> value -> the same registers: every raw value is reachable.
    words = encode_value(dataclasses.replace(register, scale=1.0, offset=0.0), raw)
    value = value_of(register, words)
    assert type(value) is (int if scale == 1 and offset == 0 else float)
    assert value == pytest.approx(raw * scale + offset, rel=1e-12, abs=1e-9)
    assert encode_value(register, value) == words
    # Any value in range -> the nearest raw value.
    low, high = sorted(((RANGES[kind][0] * scale) + offset, (RANGES[kind][1] * scale) + offset))
    target = data.draw(st.floats(low, high))
    again = value_of(register, encode_value(register, target))
    assert abs(again - target) <= abs(scale) / 2 * (1 + 1e-9) + 1e-9 * abs(target)


@settings(max_examples=300)
@given(orders, scales, offsets, st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_round_trip_float32(order: str, scale: float, offset: float, value: float) -> None:
    plain = reg("float32", order)
    assert value_of(plain, encode_value(plain, value)) == value  # exact without scaling
    register = reg("float32", order, scale=scale, offset=offset)
    try:
        words = encode_value(register, value)
    except ValueError:  # (value - offset) / scale beyond float32
        assert abs((value - offset) / scale) > 3.4e38
        return
    again = value_of(register, words)
    # float32 keeps 24 bits: relative to the value, or to the offset where it dominates, or
    # the smallest subnormal step for raw values near zero.
    tolerance = abs(offset) * 2**-23 + abs(scale) * 2**-149
    assert again == pytest.approx(value, rel=2**-23, abs=tolerance)


words_strategy = st.lists(st.integers(-5, 0x1_0005) | st.sampled_from([0x7FC0, 0x7F80, 0xFF80]),
                          max_size=6)


@settings(max_examples=300)
@given(st.sampled_from([F32, U16, COILS]), words_strategy | st.lists(st.booleans(), max_size=6),
       orders)
def test_decode_raises_only_decode_error(block: Block, values: list[Any], order: str) -> None:
    registers = tuple(dataclasses.replace(r, **ORDERS[order]) for r in block.registers)
    block = dataclasses.replace(block, registers=registers)
    try:
        reading = decode_block(block, values, device="d", measurement="m",
                               received_at_ns=RECEIVED, source=PORT)
    except DecodeError as error:
        refused = error
    else:
        assert isinstance(reading, Reading)
        return
    assert (refused.source, refused.device) == (PORT, "d")
