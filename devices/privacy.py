"""No client MAC address gets past the entry: :func:`scrub` every message first.

The park's public Wi-Fi is used by residents, and a client's MAC address is personal data
under Indonesia's personal data protection law (UU 27/2022). The gateway stores counts, never
addresses: every incoming message (an MQTT topic and payload, a serial line) goes through
:func:`scrub` before anything else (decoders, the dead-letter table, logs) sees it, and
:class:`DistinctClients` counts distinct clients from the MACs scrub took out without keeping
any of them.

What counts as a MAC (hex digits of either case):

- ``aa:bb:cc:dd:ee:ff`` and ``aa-bb-cc-dd-ee-ff``: six pairs with one kind of separator;
- ``aabb.ccdd.eeff``: Cisco's three dotted quads;
- ``aabbccddeeff``: twelve bare hex digits, but only as a whole JSON string or a whole topic
  level: inside free text they are as likely a hash or a serial number.

Redacting more is safer than redacting less, so a longer run of separated pairs
(``aa:bb:cc:dd:ee:ff:00``, an EUI-64 that embeds a MAC) or of dotted quads is replaced whole,
and a match is taken wherever it starts, even inside a longer hex word. Times (``14:02:11``)
and IPv6 addresses (``fe80::1``, ``2001:db8::8a2e:370:7334``) are not six pairs in a row and
stay. Hex strings longer than twelve digits are not bare MACs.

What happens to them:

- JSON (object or array, whatever orjson parses): a non-empty list whose elements are all MAC
  strings becomes the number of distinct MACs in it, and those MACs are returned in
  ``Scrubbed.macs`` to be counted. An object whose keys are all MACs (hostapd's
  ``get_clients`` answer has that shape) is treated the same way: its per-client values go
  with the keys. Any other string, key or value, has each MAC replaced by ``[mac]``; when
  keys of one object become equal that way, the later ones get `` #2``, `` #3``... so that no
  value is lost. The document is written back with orjson. Strings are judged decoded, so a
  MAC hidden behind ``\\u003a`` escapes is found too.
- Anything else (text, line protocol, collectd, JSON that does not parse): MACs in separator
  forms and twelve hex digits between double quotes are replaced by ``[mac]`` in the bytes.
- The topic: each MAC, and each level that is twelve bare hex digits, becomes
  ``mac-redacted``. A device that names itself by its own MAC is renamed with the rest: we
  cannot tell it from a client's.

Most messages carry no MAC, and scrub runs for every one of them (tens of thousands a second
at peak), so the common case is one table translation and a few substring searches, and then
the original objects are returned untouched.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

_HEX = "[0-9A-Fa-f]"
# Six or more pairs with one separator kind, or three or more dotted quads; no boundary checks
# on purpose (see the module docstring).
_SEPARATED = (
    rf"{_HEX}{{2}}([:-]){_HEX}{{2}}(?:\1{_HEX}{{2}}){{4,}}"
    rf"|{_HEX}{{4}}(?:\.{_HEX}{{4}}){{2,}}"
)
_SEPARATED_STR = re.compile(_SEPARATED)
# Outside JSON the quoted bare form is caught too: a payload that orjson refuses may still be
# JSON to a person reading the dead-letter table.
_IN_BYTES = re.compile(_SEPARATED.encode() + rf'|(?<="){_HEX}{{12}}(?=")'.encode())
_ONE_MAC = re.compile(
    rf"{_HEX}{{2}}([:-]){_HEX}{{2}}(?:\1{_HEX}{{2}}){{4}}"
    rf"|{_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}}"
    rf"|{_HEX}{{12}}"
)
_BARE = re.compile(rf"{_HEX}{{12}}")
_NOT_HEX = re.compile(r"[^0-9A-Fa-f]")

TEXT_REPLACEMENT = "[mac]"
TOPIC_REPLACEMENT = "mac-redacted"
# A document whose MACs sit deeper than orjson writes (254 levels) cannot be written back;
# it is replaced whole rather than let through.
TOO_DEEP_REPLACEMENT = b'"[redacted]"'


def _classes() -> bytes:
    """A translation table that turns bytes into the few classes the fast path looks for.

    Hex digits become ``h``; ``:`` and ``-`` both become ``:`` and ``"`` and ``/`` both become
    ``q`` (one search instead of two; a mixed run is a false alarm the slow path clears);
    ``.`` stays; ``[`` and ``\\`` become ``[`` (a list may hold bare MACs, an escape may hide
    one); everything else becomes a space.
    """
    table = bytearray(b" " * 256)
    for digit in b"0123456789abcdefABCDEF":
        table[digit] = ord("h")
    for char, to in (
        (":", ":"),
        ("-", ":"),
        (".", "."),
        ('"', "q"),
        ("/", "q"),
        ("[", "["),
        ("\\", "["),
    ):
        table[ord(char)] = ord(to)
    return bytes(table)


_CLASSES = _classes()
_PROBE_SEPARATED = b"hh:hh:hh:hh:hh:hh"
_PROBE_CISCO = b"hhhh.hhhh.hhhh"
# Twelve bare hex digits as a JSON string or as a topic level.
_PROBE_BARE = b"qhhhhhhhhhhhhq"


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """A message with its MACs taken out.

    ``macs``: the distinct MACs found in JSON lists of MACs (see the module docstring), each
    as 6 bytes, in order of first appearance; they are for :class:`DistinctClients` and must
    not be kept. ``redacted``: how many MAC occurrences were removed or replaced; when it is
    0, ``topic`` and ``payload`` are the very objects that were passed in.
    """

    topic: str
    payload: bytes
    macs: tuple[bytes, ...]
    redacted: int


def scrub(topic: str, payload: bytes) -> Scrubbed:
    """Take every client MAC out of a message. Never raises for any str and bytes."""
    # The topic between slashes, so a bare MAC as its first or last level shows as "/h...h/";
    # the newline keeps topic and payload from forming one run.
    probe = b"/".join((b"", topic.encode("utf-8", "surrogatepass"), b"\n" + payload))
    probe = probe.translate(_CLASSES)
    if not (
        b"[" in probe or _PROBE_SEPARATED in probe or _PROBE_CISCO in probe or _PROBE_BARE in probe
    ):
        return Scrubbed(topic, payload, (), 0)
    new_topic, in_topic = _scrub_topic(topic)
    new_payload, macs, in_payload = _scrub_payload(payload)
    if not (in_topic or in_payload):
        return Scrubbed(topic, payload, (), 0)
    return Scrubbed(new_topic, new_payload, macs, in_topic + in_payload)


def _scrub_topic(topic: str) -> tuple[str, int]:
    new, count = _SEPARATED_STR.subn(TOPIC_REPLACEMENT, topic)
    levels = new.split("/")
    for i, level in enumerate(levels):
        if len(level) == 12 and _BARE.fullmatch(level):
            levels[i] = TOPIC_REPLACEMENT
            count += 1
    return ("/".join(levels) if count else topic), count


def _scrub_payload(payload: bytes) -> tuple[bytes, tuple[bytes, ...], int]:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        new, count = _IN_BYTES.subn(TEXT_REPLACEMENT.encode(), payload)
        return (new if count else payload), (), count
    walker = _Walker()
    document = walker.walk(document)
    if not walker.redacted:
        return payload, (), 0
    try:
        new = orjson.dumps(document)
    except orjson.JSONEncodeError:
        new = TOO_DEEP_REPLACEMENT
    return new, tuple(walker.macs), walker.redacted


class _Walker:
    """Redacts a parsed JSON document in place, depth first in document order.

    An explicit stack rather than recursion: orjson parses 1024 levels, more than Python's
    default recursion limit, and a message must not be able to crash the scrubber.
    """

    __slots__ = ("macs", "redacted")

    def __init__(self) -> None:
        self.macs: dict[bytes, None] = {}  # an ordered set
        self.redacted = 0

    def walk(self, document: object) -> object:
        holder: list[object] = [document]
        stack: list[tuple[Any, Any]] = [(holder, 0)]
        while stack:
            container, key = stack.pop()
            value = container[key]
            if isinstance(value, str):
                new = self._text(value)
                if new is not value:
                    container[key] = new
            elif isinstance(value, list):
                count = self._count_macs(value)
                if count is not None:
                    container[key] = count
                else:
                    stack.extend(
                        (value, i)
                        for i in range(len(value) - 1, -1, -1)
                        if isinstance(value[i], str | list | dict)
                    )
            elif isinstance(value, dict):
                count = self._count_macs(list(value))
                if count is not None:
                    container[key] = count
                else:
                    self._rename_keys(value)
                    stack.extend(
                        (value, k)
                        for k in reversed(list(value))
                        if isinstance(value[k], str | list | dict)
                    )
        return holder[0]

    def _count_macs(self, items: list[Any]) -> int | None:
        """The number of distinct MACs if ``items`` is a non-empty list of MAC strings."""
        if not items or not all(isinstance(s, str) and _ONE_MAC.fullmatch(s) for s in items):
            return None
        distinct = dict.fromkeys(bytes.fromhex(_NOT_HEX.sub("", s)) for s in items)
        for mac in distinct:
            self.macs.setdefault(mac)
        self.redacted += len(items)
        return len(distinct)

    def _rename_keys(self, obj: dict[str, Any]) -> None:
        renamed = [(self._text(k), v) for k, v in obj.items()]
        if all(new is old for (new, _), old in zip(renamed, obj, strict=True)):
            return
        obj.clear()
        for key, value in renamed:
            if key in obj:
                # Two keys that differed only by their MACs: keep both values.
                n = 2
                while f"{key} #{n}" in obj:
                    n += 1
                key = f"{key} #{n}"
            obj[key] = value

    def _text(self, text: str) -> str:
        if len(text) == 12 and _BARE.fullmatch(text):
            self.redacted += 1
            return TEXT_REPLACEMENT
        new, count = _SEPARATED_STR.subn(TEXT_REPLACEMENT, text)
        if not count:
            return text
        self.redacted += count
        return new


# --- distinct clients ------------------------------------------------------------------------

_NS = 10**9
_DAY_NS = 86_400 * _NS
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_KEY_BYTES = 32
_DIGEST_BYTES = 16


class DistinctClients:
    """Distinct clients per scope per local day, from MACs, without keeping any MAC.

    Each MAC becomes ``HMAC-SHA256(key of the day, mac)[:16]`` at once, and only these digests
    are kept, in one set per scope (the caller adds to an AP scope and to a site scope
    separately, e.g. ``"ap:<device>"`` and ``"site:<site>"``; a site's count is the union of
    its APs' because the digests share the day's key). 16 bytes make a collision between two
    of a park's clients in a day vanishingly unlikely.

    The key is 32 bytes from ``key_source`` (by default ``secrets.token_bytes``, which reads
    ``os.urandom``; ``os`` itself is kept out of ``devices/``), drawn the first time a day is
    used. When the local day changes, the key and
    every set of the previous day are dropped, so yesterday's digests cannot be linked to
    today's; a question about a later day drops them too, without waiting for the next
    :meth:`add`. MACs stamped with a day before the current one are ignored: that day is
    closed and its key is gone.

    The key is never returned, never persisted, never in ``repr``, and the object refuses to
    be pickled or copied. The price: after a restart the key is gone, so a client seen both
    before and after a restart is counted twice that day. Counts are therefore an upper bound
    on the day's distinct clients, exact when the gateway ran all day.

    Memory is bounded: a scope keeps at most ``max_per_scope`` digests (its count saturates
    there: the true count is at least that), and at most ``max_scopes`` scopes are tracked a
    day (a further scope counts 0).
    """

    __slots__ = (
        "_day",
        "_key",
        "_key_source",
        "_max_per_scope",
        "_max_scopes",
        "_offset_ns",
        "_sets",
    )

    def __init__(
        self,
        *,
        utc_offset_minutes: int = 480,
        key_source: Callable[[int], bytes] = secrets.token_bytes,
        max_per_scope: int = 100_000,
        max_scopes: int = 10_000,
    ) -> None:
        if type(utc_offset_minutes) is not int or not -14 * 60 <= utc_offset_minutes <= 14 * 60:
            raise ValueError(f"utc_offset_minutes must be within ±840, got {utc_offset_minutes!r}")
        if max_per_scope < 1 or max_scopes < 1:
            raise ValueError("max_per_scope and max_scopes must be at least 1")
        self._offset_ns = utc_offset_minutes * 60 * _NS
        self._key_source = key_source
        self._max_per_scope = max_per_scope
        self._max_scopes = max_scopes
        self._day: int | None = None
        self._key: bytes | None = None
        self._sets: dict[str, set[bytes]] = {}

    def add(self, scope: str, macs: Iterable[bytes], t_ns: int) -> None:
        """Count ``macs`` (6 bytes each, as :func:`scrub` returns them) into ``scope``."""
        batch = list(macs)
        for mac in batch:
            if type(mac) is not bytes:
                raise TypeError(f"a MAC is bytes, got {type(mac).__name__}")
            if len(mac) != 6:
                raise ValueError(f"a MAC is 6 bytes, got {len(mac)}")
        if not self._today(t_ns) or not batch:
            return
        seen = self._sets.get(scope)
        if seen is None:
            if len(self._sets) >= self._max_scopes:
                return
            seen = self._sets[scope] = set()
        key = self._key
        if key is None:
            key = self._key = self._draw_key()
        room = self._max_per_scope
        for mac in batch:
            if len(seen) >= room:
                break
            seen.add(hmac.digest(key, mac, "sha256")[:_DIGEST_BYTES])

    def count(self, scope: str, t_ns: int) -> int:
        """Distinct clients of ``scope`` on the local day of ``t_ns``; 0 if none seen then."""
        if not self._is_current(t_ns):
            return 0
        seen = self._sets.get(scope)
        return 0 if seen is None else len(seen)

    def scopes(self, t_ns: int) -> dict[str, int]:
        """Every scope seen on the local day of ``t_ns``, with its count."""
        if not self._is_current(t_ns):
            return {}
        return {scope: len(seen) for scope, seen in self._sets.items()}

    def _local_day(self, t_ns: int) -> int:
        if type(t_ns) is not int:
            raise TypeError(f"t_ns must be an int, got {type(t_ns).__name__}")
        if not 0 <= t_ns < 2**63:
            raise ValueError(f"t_ns {t_ns} is outside 1970..2262")
        return (t_ns + self._offset_ns) // _DAY_NS

    def _today(self, t_ns: int) -> bool:
        """Make the day of ``t_ns`` the current one if it is later; False if it is earlier."""
        day = self._local_day(t_ns)
        if self._day is not None and day < self._day:
            return False
        if day != self._day:
            self._forget(day)
        return True

    def _is_current(self, t_ns: int) -> bool:
        day = self._local_day(t_ns)
        if self._day is not None and day > self._day:
            self._forget(day)  # the day is over: its key and digests go now
        return day == self._day

    def _forget(self, day: int) -> None:
        self._day = day
        self._key = None
        self._sets = {}

    def _draw_key(self) -> bytes:
        key = self._key_source(_KEY_BYTES)
        if type(key) is not bytes or len(key) != _KEY_BYTES:
            raise ValueError(f"key_source must return {_KEY_BYTES} bytes")
        return key

    def __repr__(self) -> str:
        day = (
            "None"
            if self._day is None
            else date.fromordinal(_EPOCH_ORDINAL + self._day).isoformat()
        )
        counts = {scope: len(seen) for scope, seen in self._sets.items()}
        return f"DistinctClients(day={day}, counts={counts!r})"

    def __getstate__(self) -> object:
        raise TypeError("DistinctClients holds the day's secret key: it is not pickled or copied")
