"""No client MAC gets past the entry (devices.privacy): scrub and DistinctClients."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import pickle
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.privacy import TOO_DEEP_REPLACEMENT, DistinctClients, Scrubbed, scrub

A = bytes.fromhex("aabbccddeeff")
B = bytes.fromhex("112233445566")
C = bytes.fromhex("a4cf12345678")
SEC = 10**9
WITA = timezone(timedelta(hours=8))
DAY1 = int(datetime(2026, 11, 28, 0, 0, tzinfo=WITA).timestamp()) * SEC  # local midnight
DAY2 = DAY1 + 86_400 * SEC
TOPIC = "garden/park/ap1/telemetry"


def deep(depth: int, inner: bytes) -> bytes:
    return b"[" * depth + inner + b"]" * depth


# (id, topic, payload, expected topic, expected payload, expected macs, expected redacted);
# an expected payload of None means "unchanged".
CASES: list[tuple[str, str, bytes, str, bytes | None, tuple[bytes, ...], int]] = [
    ("plain json", TOPIC, b'{"temperature_c": 27.5, "ts": "2026-11-28T14:02:11+08:00"}',
     TOPIC, None, (), 0),
    ("a time", TOPIC, b"14:02:11", TOPIC, None, (), 0),
    ("ipv6 link-local", TOPIC, b'{"ip": "fe80::1"}', TOPIC, None, (), 0),
    ("ipv6 short", TOPIC, b'["2001:db8::8a2e:370:7334"]', TOPIC, None, (), 0),
    ("ipv6 full", TOPIC, b"ip=2001:0db8:85a3:0000:0000:8a2e:0370:7334", TOPIC, None, (), 0),
    ("mixed separators", TOPIC, b"x=aa:bb-cc:dd-ee:ff", TOPIC, None, (), 0),
    ("five pairs", TOPIC, b"x=aa:bb:cc:dd:ee", TOPIC, None, (), 0),
    ("13 hex in a list", TOPIC, b'["aabbccddeeff0"]', TOPIC, None, (), 0),
    ("11 hex in a list", TOPIC, b'["aabbccddeef"]', TOPIC, None, (), 0),
    ("a uuid", TOPIC, b'["550e8400-e29b-41d4-a716-446655440000"]', TOPIC, None, (), 0),
    ("empty list", TOPIC, b'{"clients": []}', TOPIC, None, (), 0),
    ("bare hex in free text stays (documented)", TOPIC, b'{"note": "seen aabbccddeeff"}',
     TOPIC, None, (), 0),
    ("empty payload", TOPIC, b"", TOPIC, None, (), 0),
    ("collectd", "collectd/ap1/interface-wlan0/if_octets", b"1795850797.629:12:34\x00",
     "collectd/ap1/interface-wlan0/if_octets", None, (), 0),
    ("colon, upper case", TOPIC, b'{"client": "AA:BB:CC:DD:EE:FF", "rssi": -61}',
     TOPIC, b'{"client":"[mac]","rssi":-61}', (), 1),
    ("dash, mixed case, in text", TOPIC, b"client Aa-bB-cc-dd-ee-ff left",
     TOPIC, b"client [mac] left", (), 1),
    ("cisco in text", TOPIC, b"sta aabb.ccdd.eeff assoc", TOPIC, b"sta [mac] assoc", (), 1),
    ("seven groups are redacted whole", TOPIC, b"id=aa:bb:cc:dd:ee:ff:00;",
     TOPIC, b"id=[mac];", (), 1),
    ("an EUI-64 is redacted whole", TOPIC, b"eui=aa-bb-cc-ff-fe-dd-ee-ff",
     TOPIC, b"eui=[mac]", (), 1),
    ("four dotted quads", TOPIC, b"x 1234.aabb.ccdd.eeff", TOPIC, b"x [mac]", (), 1),
    ("inside a longer hex word", TOPIC, b"x=0aa:bb:cc:dd:ee:ff0", TOPIC, b"x=0[mac]0", (), 1),
    ("two in a row", TOPIC, b"aa:bb:cc:dd:ee:ff11:22:33:44:55:66",
     TOPIC, b"[mac][mac]", (), 2),
    ("line protocol", "telegraf/wifi",
     b'wifi,device=ap1 client="aa:bb:cc:dd:ee:ff",rssi=-60i 1795850797000000000',
     "telegraf/wifi", b'wifi,device=ap1 client="[mac]",rssi=-60i 1795850797000000000', (), 1),
    ("a list of MACs in every form", TOPIC,
     b'{"clients": ["aa:bb:cc:dd:ee:ff", "AABBCCDDEEFF", "aabb.ccdd.eeff", "11-22-33-44-55-66"],'
     b' "n": 1}',
     TOPIC, b'{"clients":2,"n":1}', (A, B), 4),
    ("the same MAC in two lists", TOPIC,
     b'{"wlan0": ["aa:bb:cc:dd:ee:ff"], "wlan1": ["112233445566", "AA-BB-CC-DD-EE-FF"]}',
     TOPIC, b'{"wlan0":1,"wlan1":2}', (A, B), 3),
    ("a top-level list", TOPIC, b'["a4:cf:12:34:56:78", "aabbccddeeff"]', TOPIC, b"2", (C, A), 2),
    ("a mixed list is not counted", TOPIC, b'["aa:bb:cc:dd:ee:ff", 3]',
     TOPIC, b'["[mac]",3]', (), 1),
    ("bare and 13 hex", TOPIC, b'["aabbccddeeff", "aabbccddeeff0"]',
     TOPIC, b'["[mac]","aabbccddeeff0"]', (), 1),
    ("nested lists", TOPIC, b'{"radios": [{"clients": ["aabbccddeeff"]}, {"clients": []}]}',
     TOPIC, b'{"radios":[{"clients":1},{"clients":[]}]}', (A,), 1),
    ("hostapd get_clients", TOPIC,
     b'{"freq": 2412, "clients": {"aa:bb:cc:dd:ee:ff": {"rx": 1}, "11:22:33:44:55:66": {}}}',
     TOPIC, b'{"freq":2412,"clients":2}', (A, B), 2),
    ("a MAC key among others", TOPIC, b'{"aa:bb:cc:dd:ee:ff": 1, "n": 2}',
     TOPIC, b'{"[mac]":1,"n":2}', (), 1),
    ("keys that become equal keep their values", TOPIC,
     b'{"x aa:bb:cc:dd:ee:ff": 1, "x 11:22:33:44:55:66": 2, "x [mac]": 3}',
     TOPIC, b'{"x [mac]":1,"x [mac] #2":2,"x [mac] #3":3}', (), 2),
    ("escaped in JSON", TOPIC, b'{"c": "aa\\u003abb:cc:dd:ee:ff"}',
     TOPIC, b'{"c":"[mac]"}', (), 1),
    ("a bare MAC as a whole value", TOPIC, b'{"mac": "AABBCCDDEEFF"}',
     TOPIC, b'{"mac":"[mac]"}', (), 1),
    ("a JSON string", TOPIC, b'"aa:bb:cc:dd:ee:ff"', TOPIC, b'"[mac]"', (), 1),
    ("broken JSON falls back to bytes", TOPIC,
     b'{"clients": ["aa:bb:cc:dd:ee:ff", "aabbccddeeff"',
     TOPIC, b'{"clients": ["[mac]", "[mac]"', (), 2),
    ("MAC in the topic", "garden/park/aa:bb:cc:dd:ee:ff/telemetry", b"{}",
     "garden/park/mac-redacted/telemetry", None, (), 1),
    ("bare MAC as a topic level", "clients/AABBCCDDEEFF", b"1", "clients/mac-redacted", None, (),
     1),
    ("bare MAC as the whole topic", "aabbccddeeff", b"1", "mac-redacted", None, (), 1),
    ("bare hex inside a topic level stays", "shelly-aabbccddeeff/status", b"online",
     "shelly-aabbccddeeff/status", None, (), 0),
    ("13 hex topic level", "x/aabbccddeeff0", b"1", "x/aabbccddeeff0", None, (), 0),
    ("topic and payload", "x/a4-cf-12-34-56-78", b'["aabbccddeeff"]', "x/mac-redacted", b"1",
     (A,), 2),
    ("deeper than orjson writes", TOPIC, deep(300, b'"aa:bb:cc:dd:ee:ff"'),
     TOPIC, TOO_DEEP_REPLACEMENT, (A,), 1),
    ("deep string", TOPIC, deep(1000, b'{"a": "x aa:bb:cc:dd:ee:ff"}'),
     TOPIC, TOO_DEEP_REPLACEMENT, (), 1),
    ("deep, writable", TOPIC, deep(200, b'{"a": "x aa:bb:cc:dd:ee:ff"}'),
     TOPIC, deep(200, b'{"a":"x [mac]"}'), (), 1),
    ("deep, no MAC", TOPIC, deep(1000, b"1"), TOPIC, None, (), 0),
    ("deeper than orjson reads", TOPIC, deep(2000, b'"aa:bb:cc:dd:ee:ff"'),
     TOPIC, deep(2000, b'"[mac]"'), (), 1),
]


@pytest.mark.parametrize(
    ("topic", "payload", "want_topic", "want_payload", "want_macs", "want_redacted"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_scrub(
    topic: str,
    payload: bytes,
    want_topic: str,
    want_payload: bytes | None,
    want_macs: tuple[bytes, ...],
    want_redacted: int,
) -> None:
    result = scrub(topic, payload)
    assert result.topic == want_topic
    assert result.payload == (payload if want_payload is None else want_payload)
    assert result.macs == want_macs
    assert result.redacted == want_redacted
    if want_topic == topic:
        assert result.topic is topic
    if want_payload is None:
        assert result.payload is payload


def test_unchanged_messages_are_the_same_objects() -> None:
    topic = "".join(["garden/", "park/ap1/telemetry"])  # not an interned constant
    for payload in (b'{"level_cm": 12.5}', b'{"levels": [1, 2]}', b'"a\\"b"', b"x\\y"):
        result = scrub(topic, payload)
        assert result == Scrubbed(topic, payload, (), 0)
        assert result.topic is topic
        assert result.payload is payload


def test_scrubbed_is_frozen_and_slotted() -> None:
    result = scrub(TOPIC, b"{}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.payload = b"x"  # type: ignore[misc]
    assert not hasattr(result, "__dict__")


def test_a_topic_with_a_lone_surrogate() -> None:
    result = scrub("x/\udc80/aa:bb:cc:dd:ee:ff", b"1")
    assert result.topic == "x/\udc80/mac-redacted"


# --- properties ------------------------------------------------------------------------------

MACS = st.binary(min_size=6, max_size=6)
SEPARATED_FORMS = ("colon", "dash", "cisco")
ALL_FORMS = (*SEPARATED_FORMS, "bare")
# Filler next to MACs: hex digits and separators included, so MACs sit inside longer runs,
# but too short to make twelve hex digits or six pairs on its own.
FILLER = st.text(alphabet="gxz _,=;0a:", max_size=6)


def render(mac: bytes, form: str, upper: bool) -> str:
    h = mac.hex()
    pairs = [h[i : i + 2] for i in range(0, 12, 2)]
    text = {
        "colon": ":".join(pairs),
        "dash": "-".join(pairs),
        "cisco": ".".join(h[i : i + 4] for i in range(0, 12, 4)),
        "bare": h,
    }[form]
    return text.upper() if upper else text


def textual_forms(mac: bytes) -> list[bytes]:
    """Every way of writing the MAC, lower case (the output is searched lower-cased)."""
    return [render(mac, form, False).encode() for form in ALL_FORMS]


@st.composite
def one_mac(draw: st.DrawFn, forms: tuple[str, ...]) -> tuple[str, bytes]:
    mac = draw(MACS)
    return render(mac, draw(st.sampled_from(forms)), draw(st.booleans())), mac


@st.composite
def text_with_macs(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    parts, macs = [draw(FILLER)], []
    for _ in range(draw(st.integers(0, 3))):
        text, mac = draw(one_mac(SEPARATED_FORMS))
        parts += [text, draw(FILLER)]
        macs.append(mac)
    return "".join(parts), macs


# A JSON string: text with MACs in separator forms, or a bare MAC as the whole string.
JSON_STRINGS = st.one_of(
    text_with_macs(), one_mac(("bare",)).map(lambda t: (t[0], [t[1]]))
)

# A node: (JSON value, MACs of MAC lists in document order, every MAC in it).
Node = tuple[Any, list[bytes], list[bytes]]


@st.composite
def mac_list(draw: st.DrawFn) -> Node:
    entries = draw(st.lists(one_mac(ALL_FORMS), min_size=1, max_size=5))
    macs = [mac for _, mac in entries]
    return [text for text, _ in entries], macs, macs


def plain_list(items: list[Node]) -> Node:
    # A leading number: such a list is never a list of MACs.
    values = [0, *(value for value, _, _ in items)]
    listed = [mac for _, macs, _ in items for mac in macs]
    every = [mac for _, _, macs in items for mac in macs]
    return values, listed, every


@st.composite
def plain_dict(draw: st.DrawFn, children: st.SearchStrategy[Node]) -> Node:
    # A first key that is no MAC: such an object is never one keyed by MACs.
    obj: dict[str, Any] = {"k": 0}
    listed: list[bytes] = []
    every: list[bytes] = []
    for _ in range(draw(st.integers(0, 4))):
        key, key_macs = draw(JSON_STRINGS)
        value, value_listed, value_every = draw(children)
        if key in obj:
            continue
        obj[key] = value
        listed += value_listed
        every += key_macs + value_every
    return obj, listed, every


LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.integers(0, 999).map(lambda i: (i, [], [])),
    st.sampled_from([None, True, False]).map(lambda v: (v, [], [])),
    JSON_STRINGS.map(lambda t: (t[0], [], t[1])),
    mac_list(),
)
TREES: st.SearchStrategy[Node] = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(plain_list), plain_dict(children)
    ),
    max_leaves=12,
)


@st.composite
def topics(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    levels, macs = [], []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["plain", "mac", "text"]))
        if kind == "plain":
            levels.append(draw(st.text(alphabet="gxz_", min_size=1, max_size=5)))
        elif kind == "mac":
            text, mac = draw(one_mac(ALL_FORMS))
            levels.append(text)
            macs.append(mac)
        else:
            text, found = draw(text_with_macs())
            levels.append(text)
            macs += found
    return "/".join(levels), macs


def assert_no_leak(result: Scrubbed, macs: list[bytes]) -> None:
    out = (result.topic.encode("utf-8", "surrogatepass") + b"\n" + result.payload).lower()
    for mac in macs:
        for form in textual_forms(mac):
            assert form not in out, (form, out)
    assert (result.redacted == 0) == (not macs)


@settings(max_examples=300, deadline=None)
@given(topics(), TREES)
def test_scrub_never_leaks_json(topic: tuple[str, list[bytes]], tree: Node) -> None:
    """(b) Whatever the form and place of a MAC in a JSON message, none of its forms remain,
    and ``macs`` holds exactly the distinct MACs of the lists, in order."""
    value, listed, every = tree
    result = scrub(topic[0], orjson.dumps(value))
    assert_no_leak(result, topic[1] + every)
    assert list(result.macs) == list(dict.fromkeys(listed))


@st.composite
def text_payloads(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    parts, macs = ["wifi,device=ap1"], []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            text, found = draw(text_with_macs())
            parts.append(text)
            macs += found
        else:
            text, mac = draw(one_mac(("bare",)))
            parts.append(f'client="{text}"')
            macs.append(mac)
    return " ".join(parts).encode(), macs


@settings(max_examples=200, deadline=None)
@given(topics(), text_payloads())
def test_scrub_never_leaks_text(
    topic: tuple[str, list[bytes]], payload: tuple[bytes, list[bytes]]
) -> None:
    result = scrub(topic[0], payload[0])
    assert_no_leak(result, topic[1] + payload[1])
    assert result.macs == ()


JSON_TEXT = st.text(alphabet="0123456789abcdefABCDEF:-.[] mac\\\x1fé", max_size=20)
ANY_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        JSON_TEXT,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), JSON_TEXT), children, max_size=5),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), ANY_JSON)
def test_scrub_keeps_json_valid_and_is_idempotent(topic: str, value: Any) -> None:
    """(c) Valid JSON in, valid JSON out; a second pass finds nothing more."""
    payload = orjson.dumps(value)
    result = scrub(topic, payload)
    orjson.loads(result.payload)
    again = scrub(result.topic, result.payload)
    assert again.redacted == 0
    assert again.macs == ()
    if result.redacted == 0:
        assert result.payload is payload
        assert result.macs == ()


MAC_ISH_BYTES = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet='0123456789abcdefABCDEF:-./[]{}",\\ ', max_size=80).map(str.encode),
)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), MAC_ISH_BYTES)
def test_scrub_never_raises(topic: str, payload: bytes) -> None:
    """(c) Any bytes: no exception, and a second pass finds nothing more."""
    result = scrub(topic, payload)
    assert scrub(result.topic, result.payload).redacted == 0


# --- DistinctClients -------------------------------------------------------------------------


class RecordingKeys:
    """A key source that hands out distinct, recognisable keys and remembers them."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        assert n == 32
        key = hashlib.sha256(b"key %d" % len(self.keys)).digest()
        self.keys.append(key)
        return key


def test_counts_distinct_macs_per_scope_and_the_site_is_the_union() -> None:
    keys = RecordingKeys()
    clients = DistinctClients(key_source=keys)
    t = DAY1 + 10 * 3600 * SEC
    clients.add("ap:ap1", [A, B, A], t)
    clients.add("site:park", [A, B, A], t)
    clients.add("ap:ap2", [B, C], t + SEC)
    clients.add("site:park", [B, C], t + SEC)
    assert clients.count("ap:ap1", t) == 2
    assert clients.count("ap:ap2", t) == 2
    assert clients.count("site:park", t) == 3
    assert clients.count("ap:nowhere", t) == 0
    assert clients.scopes(t) == {"ap:ap1": 2, "site:park": 3, "ap:ap2": 2}
    assert len(keys.keys) == 1


def test_only_keyed_digests_are_kept() -> None:
    keys = RecordingKeys()
    clients = DistinctClients(key_source=keys)
    clients.add("ap:ap1", [A, B], DAY1)
    # White-box on purpose: what is held in memory is the point of the class.
    kept = clients._sets["ap:ap1"]
    assert kept == {hmac.new(keys.keys[0], mac, "sha256").digest()[:16] for mac in (A, B)}
    assert not any(A in digest or B in digest for digest in kept)


def test_a_new_day_starts_at_zero_with_a_new_key() -> None:
    keys = RecordingKeys()
    clients = DistinctClients(key_source=keys)
    clients.add("ap:ap1", [A, B], DAY2 - SEC)  # 23:59:59 WITA
    assert clients.count("ap:ap1", DAY2 - SEC) == 2
    before = clients._sets["ap:ap1"]
    assert clients.count("ap:ap1", DAY2) == 0  # midnight: the old day is dropped
    assert clients.scopes(DAY2) == {}
    assert clients._key is None
    assert len(keys.keys) == 1  # a key is drawn when a day is first used, not when asked
    clients.add("ap:ap1", [A], DAY2 + SEC)
    assert keys.keys[1] != keys.keys[0]
    assert clients.count("ap:ap1", DAY2 + SEC) == 1
    # Yesterday's digest of A cannot be linked to today's.
    assert clients._sets["ap:ap1"].isdisjoint(before)


def test_the_day_follows_the_offset() -> None:
    keys = RecordingKeys()
    utc = DistinctClients(utc_offset_minutes=0, key_source=keys)
    utc.add("s", [A], DAY2 - SEC)  # 15:59:59 UTC
    assert utc.count("s", DAY2) == 1  # 16:00 UTC: still the same UTC day
    assert utc.count("s", DAY2 + 8 * 3600 * SEC) == 0


def test_an_earlier_day_is_closed() -> None:
    clients = DistinctClients(key_source=RecordingKeys())
    clients.add("s", [A], DAY2)
    clients.add("s", [B], DAY2 - SEC)
    assert clients.count("s", DAY2) == 1
    assert clients.count("s", DAY2 - SEC) == 0
    assert clients.count("s", DAY2) == 1  # asking about yesterday dropped nothing


def test_counts_saturate_and_scopes_are_bounded() -> None:
    clients = DistinctClients(key_source=RecordingKeys(), max_per_scope=3, max_scopes=2)
    macs = [bytes([i]) * 6 for i in range(10)]
    clients.add("a", macs, DAY1)
    clients.add("b", macs[:1], DAY1)
    clients.add("c", macs, DAY1)
    assert clients.scopes(DAY1) == {"a": 3, "b": 1}


def test_bad_macs_are_refused_before_anything_is_added() -> None:
    keys = RecordingKeys()
    clients = DistinctClients(key_source=keys)
    with pytest.raises(ValueError, match="6 bytes"):
        clients.add("s", [A, b"\x00" * 5], DAY1)
    with pytest.raises(TypeError, match="bytes"):
        clients.add("s", [A, "aa:bb:cc:dd:ee:ff"], DAY1)  # type: ignore[list-item]
    assert clients.count("s", DAY1) == 0
    assert keys.keys == []


@pytest.mark.parametrize("key", [b"short", "x" * 32])
def test_a_bad_key_source_is_an_error(key: Any) -> None:
    clients = DistinctClients(key_source=lambda n: key)
    with pytest.raises(ValueError, match="32 bytes"):
        clients.add("s", [A], DAY1)


def test_the_default_key_source_draws_random_keys() -> None:
    one, two = DistinctClients(), DistinctClients()
    one.add("s", [A], DAY1)
    two.add("s", [A], DAY1)
    assert one._sets["s"] != two._sets["s"]


def test_the_key_is_never_shown_pickled_or_copied() -> None:
    keys = RecordingKeys()
    clients = DistinctClients(key_source=keys)
    clients.add("ap:ap1", [A, B], DAY1)
    text = repr(clients)
    assert text == "DistinctClients(day=2026-11-28, counts={'ap:ap1': 2})"
    with pytest.raises(TypeError):
        pickle.dumps(clients)
    with pytest.raises(TypeError):
        copy.copy(clients)
    with pytest.raises(TypeError):
        copy.deepcopy(clients)
    assert not hasattr(clients, "__dict__")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ap:ap1", "ap:ap2", "site:park"]),
            st.lists(st.sampled_from([A, B, C, bytes(6), b"\xff" * 6]), max_size=4),
            st.integers(0, 3),  # day
            st.integers(0, 86_399),  # second of the day
        ),
        max_size=25,
    )
)
def test_distinct_clients_model(ops: list[tuple[str, list[bytes], int, int]]) -> None:
    """(d) The count is the number of distinct MACs added per scope and day; each day that
    counts anything draws its own key; no key ever shows in repr."""
    keys = RecordingKeys()
    clients = DistinctClients(key_source=keys)
    model: dict[str, set[bytes]] = {}
    day_of_model = None
    days_used: set[int] = set()
    for scope, macs, day, second in sorted(ops, key=lambda op: (op[2], op[3])):
        t = DAY1 + (day * 86_400 + second) * SEC
        if day != day_of_model:
            model, day_of_model = {}, day
        clients.add(scope, macs, t)
        if macs:
            model.setdefault(scope, set()).update(macs)
            days_used.add(day)
        for name in ("ap:ap1", "ap:ap2", "site:park"):
            assert clients.count(name, t) == len(model.get(name, ()))
        assert clients.scopes(t) == {name: len(seen) for name, seen in model.items()}
    assert len(keys.keys) == len(days_used)
    assert len(set(keys.keys)) == len(keys.keys)
    text = repr(clients)
    for key in keys.keys:
        assert key.hex() not in text
        assert repr(key)[2:-1] not in text
        assert key.decode("latin-1") not in text
