"""collectd's MQTT write plugin, tested first against a real capture of collectd 5.12."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.collectd import Options, decode
from devices.reading import DecodeError, Reading
from devices.timeparse import TimePolicy
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
CAPTURE = Path("/work/shared/samples/collectd-5.12-mqtt.tsv")
HOST = "ap-gerbang-utama"
# The capture was taken at 1795850797..1795850800; the gateway received it a moment later.
RECEIVED = 1_795_850_801 * SEC
OPTS = Options()

# What each collectd type of the capture becomes, written out independently of the decoder.
CAPTURE_NAMES = {
    "if_octets": ("rx_bytes_per_s", "tx_bytes_per_s"),
    "if_packets": ("rx_packets_per_s", "tx_packets_per_s"),
    "if_errors": ("rx_errors_per_s", "tx_errors_per_s"),
    "if_dropped": ("rx_dropped_per_s", "tx_dropped_per_s"),
    "load": ("load_1m", "load_5m", "load_15m"),
    "uptime": ("uptime_s",),
}


def capture() -> list[tuple[str, bytes]]:
    lines = CAPTURE.read_text(encoding="ascii").splitlines()
    assert lines[0] == "topic\tpayload_hex"
    rows = []
    for line in lines[1:]:
        topic, payload_hex = line.split("\t")
        rows.append((topic, bytes.fromhex(payload_hex)))
    return rows


def test_capture_shape() -> None:
    rows = capture()
    assert len(rows) == 64
    # Every payload is a C string sent with its terminating NUL.
    assert all(payload.endswith(b"\x00") and payload.count(b"\x00") == 1 for _, payload in rows)


@pytest.mark.parametrize(("topic", "payload"), capture(), ids=lambda v: str(v)[:60])
def test_every_row_of_the_capture(topic: str, payload: bytes) -> None:
    readings = decode(topic, payload, RECEIVED, OPTS)
    _, _, plugin, type_part = topic.split("/")
    stamp, *values = payload.rstrip(b"\x00").decode().split(":")
    seconds, millis = stamp.split(".")
    type_name, _, type_instance = type_part.partition("-")
    names = (
        (f"memory_{type_instance}_bytes",) if type_name == "memory" else (CAPTURE_NAMES[type_name])
    )
    expected_fields = tuple(
        (name, float(value)) for name, value in zip(names, values, strict=True) if value != "nan"
    )
    if not expected_fields:
        assert readings == []
        return
    plugin_name, _, plugin_instance = plugin.partition("-")
    tags = {"device": HOST} | ({plugin_name: plugin_instance} if plugin_instance else {})
    assert readings == [
        Reading.build(
            "collectd", tags, dict(expected_fields), int(seconds) * SEC + int(millis) * 10**6
        )
    ]
    assert all(type(v) is float for _, v in readings[0].fields)


def test_capture_examples() -> None:
    rows = capture()
    # First sample after start: no rate yet, both values nan.
    assert rows[0][0] == "collectd/ap-gerbang-utama/interface-lo/if_packets"
    assert decode(*rows[0], RECEIVED, OPTS) == []
    assert decode(*rows[8], RECEIVED, OPTS) == [
        Reading(
            "collectd",
            (("device", HOST),),
            (("load_1m", 0.1572265625), ("load_5m", 0.1953125), ("load_15m", 0.09326171875)),
            1795850797629000000,
        )
    ]
    assert decode(*rows[12], RECEIVED, OPTS) == [
        Reading(
            "collectd",
            (("device", HOST),),
            (("memory_free_bytes", 25052479488.0),),
            1795850797629000000,
        )
    ]
    assert decode(*rows[17], RECEIVED, OPTS) == [
        Reading(
            "collectd",
            (("device", HOST), ("interface", "lo")),
            (("rx_bytes_per_s", 6034.92008964908), ("tx_bytes_per_s", 6034.92008964908)),
            1795850798625000000,
        )
    ]


def test_capture_produces_one_reading_per_non_nan_message() -> None:
    results = [decode(t, p, RECEIVED, OPTS) for t, p in capture()]
    assert sum(1 for r in results if r == []) == 8
    assert sum(len(r) for r in results) == 56


@pytest.mark.parametrize(
    ("topic", "payload", "tags", "fields"),
    [
        (
            "collectd/ap1/iwinfo-wlan0/stations",
            b"1795850797.629:12\x00",
            {"iwinfo": "wlan0"},
            {"clients": 12.0},
        ),
        (
            "collectd/ap1/iwinfo-wlan0/signal_power",
            b"1795850797.629:-61",
            {"iwinfo": "wlan0"},
            {"signal_dbm": -61.0},
        ),
        (
            "collectd/ap1/iwinfo-wlan0/signal_noise",
            b"1795850797.629:-95\x00",
            {"iwinfo": "wlan0"},
            {"noise_dbm": -95.0},
        ),
        (
            "collectd/ap1/iwinfo-wlan0/bitrate",
            b"1795850797.629:72200000\x00",
            {"iwinfo": "wlan0"},
            {"bitrate_bps": 72200000.0},
        ),
        (
            "collectd/ap1/interface-br-lan/if_octets",
            b"1795850797.629:nan:1.5e3\x00",
            {"interface": "br-lan"},
            {"tx_bytes_per_s": 1500.0},
        ),
        (
            "collectd/ap1/interface-eth0/if_dropped",
            b"1795850797.629:NaN:2\x00",
            {"interface": "eth0"},
            {"tx_dropped_per_s": 2.0},
        ),
        ("collectd/ap1/memory/memory", b"1795850797.629:5\x00", {}, {"memory_bytes": 5.0}),
        (
            "collectd/ap1/cpu-0/percent-idle",
            b"1795850797.629:97.5\x00",
            {"cpu": "0"},
            {"percent_idle": 97.5},
        ),
        ("collectd/ap1/conntrack/conntrack", b"1795850797.629:120\x00", {}, {"conntrack": 120.0}),
        (
            "collectd/ap1/disk-sda/disk_octets",
            b"1795850797.629:1:2\x00",
            {"disk": "sda"},
            {"disk_octets_0": 1.0, "disk_octets_1": 2.0},
        ),
        (
            "collectd/ap1/df-root/df_complex-used",
            b"1795850797.629:1024\x00",
            {"df": "root"},
            {"df_complex_used": 1024.0},
        ),
        (
            "collectd/ap1/load/load",
            b"  1795850797.629:0.5:0.25:.125 \r\n\x00\x00",
            {},
            {"load_1m": 0.5, "load_5m": 0.25, "load_15m": 0.125},
        ),
    ],
)
def test_openwrt_shapes(
    topic: str, payload: bytes, tags: dict[str, str], fields: dict[str, Any]
) -> None:
    assert decode(topic, payload, RECEIVED, OPTS) == [
        Reading.build("collectd", {"device": "ap1", **tags}, fields, 1795850797629000000)
    ]


def test_now_is_the_receive_time() -> None:
    (reading,) = decode("collectd/ap1/uptime/uptime", b"N:3517\x00", RECEIVED, OPTS)
    assert reading.time_ns == RECEIVED


def test_implausible_device_time_falls_back() -> None:
    # An AP without NTP yet: collectd's clock says 1970.
    (reading,) = decode("collectd/ap1/uptime/uptime", b"86.5:86\x00", RECEIVED, OPTS)
    assert reading.time_ns == RECEIVED
    (reading,) = decode(
        "collectd/ap1/uptime/uptime",
        b"86.5:86\x00",
        RECEIVED,
        Options(time=TimePolicy(earliest_ns=0)),
    )
    assert reading.time_ns == 86_500_000_000


def test_all_nan_in_any_case_is_empty() -> None:
    # glibc prints a NaN with the sign bit set as "-nan".
    for nan in (b"nan", b"NaN", b"NAN", b"-nan"):
        payload = b"1795850797.629:" + nan + b":" + nan + b"\x00"
        assert decode("collectd/ap1/interface-eth0/if_octets", payload, RECEIVED, OPTS) == []


def test_counters_when_store_rates_is_off() -> None:
    opts = Options(store_rates=False)
    (reading,) = decode(
        "collectd/ap1/interface-eth0/if_octets",
        b"1795850797.629:123456789012:98765\x00",
        RECEIVED,
        opts,
    )
    assert reading.fields == (("rx_bytes", 123456789012), ("tx_bytes", 98765))
    assert all(type(v) is int for _, v in reading.fields)
    (reading,) = decode(
        "collectd/ap1/interface-eth0/if_packets", b"1795850797.629:12.0:1.5\x00", RECEIVED, opts
    )
    assert reading.fields == (("rx_packets", 12), ("tx_packets", 1.5))
    # Gauges stay floats.
    (reading,) = decode("collectd/ap1/load/load", b"1795850797.629:1:2:3\x00", RECEIVED, opts)
    assert reading.fields == (("load_1m", 1.0), ("load_5m", 2.0), ("load_15m", 3.0))


def test_options() -> None:
    opts = Options(
        measurement="wifi_ap", topic_prefix="kutim/collectd", rename={"clients": "clients_count"}
    )
    (reading,) = decode(
        "kutim/collectd/ap1/iwinfo-wlan1/stations", b"1795850797.629:3\x00", RECEIVED, opts
    )
    assert reading == Reading(
        "wifi_ap",
        (("device", "ap1"), ("iwinfo", "wlan1")),
        (("clients_count", 3.0),),
        1795850797629000000,
    )


@pytest.mark.parametrize(
    "topic",
    [
        "collectd/ap1/load",
        "collectd/ap1/load/load/extra",
        "collectd2/ap1/load/load",
        "tele/ap1/SENSOR",
        "",
    ],
)
def test_unknown_topic(topic: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(topic, b"1795850797.629:1:2:3\x00", RECEIVED, OPTS)
    assert caught.value.kind == "unknown_topic"
    assert caught.value.source == topic


@pytest.mark.parametrize(
    ("topic", "payload", "kind"),
    [
        ("collectd/ap1/load/load", b"", "malformed"),
        ("collectd/ap1/load/load", b"\x00", "malformed"),
        ("collectd/ap1/load/load", b"1795850797.629\x00", "malformed"),
        ("collectd/ap1/load/load", b"1795850797.629:\x00", "malformed"),
        ("collectd/ap1/load/load", b"1795850797.629:1:2\x00", "malformed"),
        ("collectd/ap1/load/load", b"1795850797.629:1:2:3:4\x00", "malformed"),
        ("collectd/ap1/interface-eth0/if_octets", b"1795850797.629:1\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:1:2\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:abc\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:1_000\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629: 1\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:inf\x00", "nan"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:-Infinity\x00", "nan"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:1e999\x00", "nan"),
        ("collectd/ap1/uptime/uptime", b"yesterday:1\x00", "malformed"),
        ("collectd/ap1/interface-eth0/if_octets", b"yesterday:nan:nan\x00", "malformed"),
        ("collectd/ap1/device-eth0/if_octets", b"1795850797.629:nan:nan\x00", "bad_name"),
        ("collectd/ap1/uptime/uptime", b"-1795850797.629:1\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"n:1\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:\xd9\xa1\x00", "malformed"),
        ("collectd/ap1/uptime/uptime", b"1795850797.629:1\x00junk", "malformed"),
        ("collectd/ap1/device-x/uptime", b"1795850797.629:1\x00", "bad_name"),
        ("collectd/ap1/time-x/uptime", b"1795850797.629:1\x00", "bad_name"),
        ("collectd/ap1/uptime/time", b"1795850797.629:1\x00", "bad_name"),
        ("collectd//uptime/uptime", b"1795850797.629:1\x00", "bad_name"),
    ],
)
def test_bad_messages(topic: str, payload: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(topic, payload, RECEIVED, OPTS)
    error = caught.value
    assert error.kind == kind
    assert error.source == topic
    assert error.device == topic.split("/")[1]
    assert error.payload == payload


# --- only DecodeError, whatever arrives ---------------------------------------------------


def decodes_or_refuses(topic: str, payload: bytes, opts: Options = OPTS) -> None:
    check(decode, topic, payload, RECEIVED, opts)


@settings(max_examples=200)
@given(st.text(max_size=40), st.binary(max_size=64))
def test_arbitrary_topic_and_bytes(topic: str, payload: bytes) -> None:
    decodes_or_refuses(topic, payload)


collectd_topics = st.builds(
    "collectd/{}/{}/{}".format,
    st.text(max_size=6),
    st.sampled_from(["load", "interface-eth0", "iwinfo-wlan0", "memory", "x-", "-y", "device-z"]),
    st.sampled_from(
        ["load", "if_octets", "memory-free", "uptime", "stations", "other", "a-b-c", "time"]
    ),
)
collectd_payloads = st.text(
    st.sampled_from(list("0123456789.:NnaAifIe+- \x00\t")), max_size=40
).map(str.encode)


@settings(max_examples=200)
@given(collectd_topics, collectd_payloads | st.binary(max_size=40), st.booleans())
def test_collectd_like_input(topic: str, payload: bytes, store_rates: bool) -> None:
    decodes_or_refuses(topic, payload, Options(store_rates=store_rates))
