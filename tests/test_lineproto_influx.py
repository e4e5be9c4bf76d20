"""Line protocol through the real InfluxDB 1.6.7: what we escape comes back exactly.

Names and tag values with commas, spaces, ``=``, quotes, backslashes and non-ASCII text are
written with :func:`gateway.store.lineproto.encode` and read back through ``/query``; Hypothesis
picks the text. Control characters and newlines never get that far: ``Reading`` refuses them.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.reading import DecodeError, Reading
from gateway.store.lineproto import encode
from gateway.testing.stack import PrivateInfluxDB

_dbs = itertools.count()

# Printable text, weighted towards what line protocol must escape.
name_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",= \"'\\#é日ñ-_.")),
        st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                      blacklist_categories=("Cc", "Cs")),
    ),
    min_size=1, max_size=20,
)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                   blacklist_categories=("Cc", "Cs")), max_size=30),
)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    while True:
        tags = draw(st.dictionaries(name_text, name_text, max_size=3))
        fields = draw(st.dictionaries(name_text, values, min_size=1, max_size=3))
        if set(tags) & set(fields):
            continue
        try:
            return Reading.build(draw(name_text), tags, fields,
                                 draw(st.integers(min_value=0, max_value=2**62)))
        except DecodeError:
            continue


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_back(server: PrivateInfluxDB, db: str, prefix: str,
              names: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    # One query per measurement: a regex FROM merges columns across measurements, and
    # InfluxDB 1.6 then drops the series whose field has another type under the same name.
    series = [s for name in names
              for s in server.query(f"SELECT * FROM {quote_ident(name)} GROUP BY *", db=db)]
    types = {}
    for s in server.query(f"SHOW FIELD KEYS FROM /^{prefix}/", db=db):
        for key, kind in s["values"]:
            types[f"{s['name']}\x00{key}"] = kind
    return series, types


@pytest.fixture(scope="module")
def lp_db(influx_server: PrivateInfluxDB) -> str:
    influx_server.create_database("lineproto")
    return "lineproto"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(readings(), min_size=1, max_size=4, unique_by=lambda r: r.measurement))
def test_names_values_and_types_round_trip_through_influxdb(
    influx_server: PrivateInfluxDB, lp_db: str, batch: list[Reading]
) -> None:
    db = lp_db
    # Each example writes to measurements of its own (a prefix keeps them apart).
    prefix = f"x{next(_dbs)}-"
    batch = [Reading(prefix + r.measurement, r.tags, r.fields, r.time_ns) for r in batch]
    body = "\n".join(encode(r) for r in batch).encode()
    response = httpx.post(f"{influx_server.url}/write", params={"db": db, "precision": "ns"},
                          content=body, timeout=10)
    assert response.status_code == 204, (response.text, body)
    series, types = read_back(influx_server, db, prefix, [r.measurement for r in batch])
    got = {}
    for s in series:
        for row in s["values"]:
            point = dict(zip(s["columns"], row, strict=True))
            fields = {k: v for k, v in point.items() if k != "time" and v is not None}
            got[s["name"]] = (s.get("tags", {}), fields, point["time"])
    want = {r.measurement: r for r in batch}
    assert set(got) == set(want)
    kind = {bool: "boolean", int: "integer", float: "float", str: "string"}
    for name, r in want.items():
        tags, fields, time_ns = got[name]
        assert {k: v for k, v in tags.items() if v != ""} == dict(r.tags)
        assert set(fields) == {k for k, _ in r.fields}
        for key, value in r.fields:
            if isinstance(value, float):
                # InfluxDB's JSON writes an integral float without a decimal point; the
                # field's type is checked below through SHOW FIELD KEYS.
                assert float(fields[key]) == value
            else:
                assert fields[key] == value
                assert type(fields[key]) is type(value)
        assert time_ns == r.time_ns
        for key, value in r.fields:
            assert types[f"{name}\x00{key}"] == kind[type(value)]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\tb", "a\x00b", "line\u2028sep\x85"])
def test_control_characters_are_refused_before_encoding(bad: str) -> None:
    with pytest.raises(DecodeError):
        Reading.build("m", {"device": bad}, {"v": 1.0}, 0)
    with pytest.raises(DecodeError):
        Reading.build(bad, {"device": "d"}, {"v": 1.0}, 0)
    with pytest.raises(DecodeError):
        Reading.build("m", {"device": "d"}, {bad: 1.0}, 0)
