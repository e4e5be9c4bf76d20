"""The pure RTU framing (devices/modbus_rtu.py), checked against pymodbus's own CRC and
against datasheet frames; the live exchanges are in test_modbus.py."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from devices.modbus import Function
from devices.modbus_rtu import (
    ReadExchange,
    ReadRequest,
    RequestFramer,
    crc16,
    exception_response,
    read_request,
    read_response,
    with_crc,
)


@given(st.binary(max_size=300))
def test_crc_agrees_with_pymodbus(data: bytes) -> None:
    # pymodbus gives the CRC as the frame's two bytes read big-endian.
    assert crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(2, "big")


def test_frames_from_the_level_sensor_datasheet() -> None:
    assert read_request(1, "holding", 4, 1) == bytes.fromhex("01 03 00 04 00 01 C5 CB")
    assert read_request(1, "holding", 0, 2) == bytes.fromhex("01 03 00 00 00 02 C4 0B")
    exchange = ReadExchange(1, "holding", 4, 1)
    assert exchange.feed(bytes.fromhex("01 03 02 04 D2 3A D9"))
    assert exchange.values == [1234]
    assert exchange.error is None


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@given(
    function=st.sampled_from(["holding", "input", "coils", "discrete"]),
    unit=st.integers(1, 247),
    data=st.data(),
    cuts=st.lists(st.integers(0, 600), max_size=6),
    echo=st.booleans(),
)
def test_an_answer_in_any_pieces_gives_its_values(
    function: Function, unit: int, data: st.DataObject, cuts: list[int], echo: bool
) -> None:
    bits = function in ("coils", "discrete")
    count = data.draw(st.integers(1, 2000 if bits else 125))
    values: list[int] | list[bool] = (
        data.draw(st.lists(st.booleans(), min_size=count, max_size=count)) if bits
        else data.draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count)))
    exchange = ReadExchange(unit, function, 0, count, echo=echo)
    wire = (exchange.request if echo else b"") + read_response(unit, function, values)
    complete = [exchange.feed(piece) for piece in chunks(wire, cuts)]
    assert complete[-1]
    assert not any(complete[:-1])
    assert exchange.error is None
    assert exchange.values == values
    assert exchange.leftover == b""


@pytest.mark.parametrize(("wire", "kind", "reason"), [
    (exception_response(1, "holding", 2), "exception", "exception 2 (illegal data address)"),
    (exception_response(1, "holding", 99), "exception", "exception 99 (unknown exception)"),
    (read_response(2, "holding", [5, 6]), "mismatch", "answer from unit 2, asked unit 1"),
    (read_response(1, "input", [5, 6]), "mismatch", "function code 4, expected 3"),
    (read_response(1, "holding", [5, 6])[:-1] + b"\x00", "crc", "CRC error in the answer"),
    (read_request(1, "holding", 0, 2) + read_response(1, "holding", [5, 6]), "mismatch",
     "adapter echoes what it sends"),
])
def test_a_failed_exchange_says_what_went_wrong(wire: bytes, kind: str, reason: str) -> None:
    exchange = ReadExchange(1, "holding", 0, 2)
    assert exchange.feed(wire)
    assert exchange.values is None
    assert exchange.error is not None
    assert exchange.error.kind == kind
    assert reason in exchange.error.reason


def test_a_wrong_byte_count_with_a_good_crc_is_a_mismatch() -> None:
    exchange = ReadExchange(1, "holding", 0, 2)
    assert exchange.feed(with_crc(bytes([1, 3, 3, 0, 5, 0, 6])) + b"\xff")
    assert exchange.error is not None
    assert exchange.error.kind == "mismatch"
    assert "says 3 data bytes, expected 4" in exchange.error.reason


def test_bytes_after_the_answer_are_left_over() -> None:
    exchange = ReadExchange(1, "coils", 0, 3)
    assert exchange.feed(read_response(1, "coils", [True, False, True]) + b"\x01\x02")
    assert exchange.values == [True, False, True]
    assert exchange.leftover == b"\x01\x02"
    assert exchange.feed(b"\x03")
    assert exchange.leftover == b"\x01\x02\x03"


def test_incomplete_answers_wait_and_count_what_arrived() -> None:
    exchange = ReadExchange(7, "holding", 100, 3, echo=True)
    assert not exchange.feed(exchange.request[:5])
    assert exchange.received == 0
    assert not exchange.feed(exchange.request[5:] + b"\x07\x03\x06\x00")
    assert exchange.received == 4
    assert not exchange.done


def test_out_of_range_requests_are_refused() -> None:
    for unit in (0, 248):
        with pytest.raises(ValueError, match="unit address"):
            read_request(unit, "holding", 0, 1)
    with pytest.raises(ValueError, match="out of range"):
        read_request(1, "holding", 70000, 1)


@given(noise=st.binary(max_size=40), cuts=st.lists(st.integers(0, 100), max_size=5))
def test_the_slave_side_finds_requests_after_noise(noise: bytes, cuts: list[int]) -> None:
    requests = [read_request(3, "input", 10, 4), read_request(3, "coils", 0, 16)]
    framer = RequestFramer()
    found: list[ReadRequest] = []
    for piece in chunks(noise + b"".join(requests), cuts):
        found += framer.feed(piece)
    # Noise can itself contain a valid request by chance: the real ones are found last.
    assert found[-2:] == [ReadRequest(3, "input", 10, 4), ReadRequest(3, "coils", 0, 16)]
