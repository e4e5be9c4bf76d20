"""The gateway's status in Prometheus text exposition format 0.0.4: a pure renderer.

``render(status, devices, extra)`` turns the typed snapshots that ``Gateway.status()`` and
``Gateway.devices_view()`` build (:mod:`gateway.core.status`) into the text a Prometheus server
scrapes from ``/metrics`` (served as :data:`CONTENT_TYPE`). No I/O, no clock, no
prometheus_client at run time: the same snapshot always gives the same text.

Conventions kept here:

- every name starts ``garden_gateway_``; counters end in ``_total``; times are seconds
  (``_seconds``, ``_timestamp_seconds``), sizes bytes (``_bytes``), shares ratios 0..1;
- a state is a gauge of 1 with the current state as its ``state`` label;
- what is not known (``None``) gets no sample, never NaN; a family with no sample is left out;
- gateway id, site and version ride on the one ``garden_gateway_info`` gauge: Prometheus adds
  the target's own labels (``instance``, ``job``) itself;
- each family appears once, with its HELP and TYPE, in a fixed order; samples sorted by their
  label values; label values escaped (backslash, double quote, newline).

``extra`` carries sections the gateway adds later (``{"events": {"clients": 2, ...}}``): each
flat number in a section becomes the gauge ``garden_gateway_<section>_<key>``, so a new
section needs no code here; the keys :data:`_COUNTERS` names are counts since start and
become the counter ``garden_gateway_<section>_<key>_total``. A name that would collide with a
family already rendered is left out rather than make the exposition invalid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.core.status import (
    AlertsStatus,
    Counts,
    DeviceView,
    DiskStatus,
    GatewayInfo,
    InfluxStatus,
    ModbusStatus,
    MqttStatus,
    PolderView,
    SerialStatus,
    SourceStatus,
    SpoolStatus,
    Status,
)

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_PREFIX = "garden_gateway_"
# An int: int / int is correctly rounded, where int / 1e9 first rounds the nanoseconds.
_NS_PER_S = 10**9
_DEVICE_STATES = ("unknown", "online", "offline", "unmonitored")
_UP = {"online": 1, "offline": 0}

_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})
_NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_]")

Number = int | float


def render(status: Status, devices: Sequence[DeviceView],
           extra: Mapping[str, Any] | None = None,
           components: Mapping[str, bool] | None = None) -> str:
    """The exposition of one ``status()`` snapshot, the devices' views, and ``extra``.

    Both are the typed shapes of :mod:`gateway.core.status`, the same the API returns: a
    renamed field is a type error here, not a key that silently vanishes.
    """
    out = _Exposition()
    _gateway(out, status.gateway)
    _counts(out, status.counts)
    _mqtt(out, status.mqtt)
    _spool(out, status.spool)
    _disk(out, status.disk)
    _influx(out, status.influx)
    _sources(out, status.sources)
    _serial(out, status.serial)
    _modbus(out, status.modbus)
    _alerts(out, status.alerts)
    _devices(out, devices)
    _components(out, components or {})
    _auth(out, (extra or {}).get("auth"))
    _discovery(out, (extra or {}).get("discovery"))
    _polder(out, (extra or {}).get("polder"))
    _extra(out, {k: v for k, v in (extra or {}).items()
                 if k not in ("auth", "discovery", "polder")})
    return out.text()


# -- the exposition ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Family:
    name: str
    kind: Literal["counter", "gauge"]
    doc: str
    labels: tuple[str, ...]
    samples: dict[tuple[str, ...], Number] = field(default_factory=dict)

    def add(self, value: object, *label_values: object) -> None:
        """One sample; none when ``value`` is not a finite number (None above all)."""
        number = _number(value)
        if number is None:
            return
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, given {label_values!r}")
        key = tuple("" if v is None else str(v) for v in label_values)
        # A repeated label set would make the scrape invalid; the first one stands.
        self.samples.setdefault(key, number)

    def lines(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.doc.translate(_HELP_ESCAPES)}",
                 f"# TYPE {self.name} {self.kind}"]
        for key in sorted(self.samples):
            value = _format(self.samples[key])
            if key:
                pairs = ",".join(f'{label}="{text.translate(_LABEL_ESCAPES)}"'
                                 for label, text in zip(self.labels, key, strict=True))
                lines.append(f"{self.name}{{{pairs}}} {value}")
            else:
                lines.append(f"{self.name} {value}")
        return lines


class _Exposition:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def counter(self, name: str, doc: str, *labels: str) -> _Family:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} does not end in _total")
        return self._family(name, "counter", doc, labels)

    def gauge(self, name: str, doc: str, *labels: str) -> _Family:
        return self._family(name, "gauge", doc, labels)

    def taken(self, name: str) -> bool:
        """Whether ``name`` would clash with a family here. OpenMetrics readers name a
        counter's family without ``_total``, so ``x`` and ``x_total`` clash too."""
        base = (_PREFIX + name).removesuffix("_total")
        return any(f.name.removesuffix("_total") == base for f in self._families.values())

    def _family(self, name: str, kind: Literal["counter", "gauge"], doc: str,
                labels: tuple[str, ...]) -> _Family:
        if self.taken(name):
            raise ValueError(f"metric family {name} is defined twice")
        family = _Family(_PREFIX + name, kind, doc, labels)
        self._families[family.name] = family
        return family

    def text(self) -> str:
        lines = [line for f in self._families.values() if f.samples for line in f.lines()]
        return "\n".join(lines) + "\n"


def _number(value: object) -> Number | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _format(value: Number) -> str:
    # repr is the shortest text that reads back as the same float ("0.5", "1e-05").
    return str(value) if isinstance(value, int) else repr(value)


def _seconds(ns: object) -> float | None:
    return ns / _NS_PER_S if isinstance(ns, int) and not isinstance(ns, bool) else None


def _entries(section: object) -> list[tuple[str, Any]]:
    """A mapping's items in key order; nothing for ``None``."""
    if not isinstance(section, Mapping):
        return []
    return sorted(section.items(), key=lambda item: str(item[0]))


# -- sections ------------------------------------------------------------------------------------


def _gateway(out: _Exposition, gw: GatewayInfo) -> None:
    out.gauge("info", "The gateway's id, site and version (always 1).",
              "gateway", "site", "version").add(1, gw.id, gw.site, gw.version)
    out.gauge("uptime_seconds", "Seconds since the gateway process started.").add(
        gw.uptime_s)


_COUNTS: tuple[tuple[str, str], ...] = (
    ("received", "MQTT messages received."),
    ("readings", "Readings decoded from input, all sources."),
    ("rejected", "Input refused as malformed (kept in the dead-letter table)."),
    ("spooled", "Lines committed to the spool, the gateway's own points included."),
    ("own_points", "Points the gateway makes itself (device_status)."),
    ("acknowledged", "MQTT messages acknowledged once their readings were committed."),
    ("written", "Lines InfluxDB accepted."),
    ("quarantined", "Lines InfluxDB refused, moved to the quarantine table."),
    ("dead_lettered", "Messages stored in the dead-letter table."),
    ("evicted", "Unsent lines evicted to keep the spool under its size limit."),
    ("dropped_uncommitted", "Readings dropped because the spool could not keep up."),
    ("presence_messages", "Online/offline messages devices sent about themselves."),
    ("macs_redacted", "Client MAC addresses taken out of input."),
    ("own_topics_ignored", "The gateway's own state topics heard back and ignored."),
)


def _counts(out: _Exposition, counts: Counts) -> None:
    for key, doc in _COUNTS:
        out.counter(f"{key}_total", doc).add(getattr(counts, key))


def _mqtt(out: _Exposition, mqtt: MqttStatus) -> None:
    out.gauge("mqtt_connected", "1 while connected to the MQTT broker.").add(mqtt.connected)
    out.gauge("mqtt_state", "The MQTT connection's state (1 for the current one).",
              "state").add(1, mqtt.state)
    out.counter("mqtt_connects_total", "Connections made to the broker.").add(mqtt.connects)
    out.counter("mqtt_disconnects_total", "Connections to the broker lost.").add(
        mqtt.disconnects)
    out.counter("mqtt_redeliveries_total", "Messages the broker sent again (DUP).").add(
        mqtt.redeliveries)
    out.counter("mqtt_redeliveries_matched_total",
                "Redelivered messages found already spooled (not stored twice).").add(
        mqtt.redeliveries_matched)
    out.counter("mqtt_flow_pauses_total",
                "Times reading from the broker paused for unacknowledged messages.").add(
        mqtt.flow_pauses)
    out.gauge("mqtt_unacknowledged", "Messages received and not yet acknowledged.").add(
        mqtt.unacknowledged)


def _spool(out: _Exposition, spool: SpoolStatus) -> None:
    out.gauge("spool_rows", "Lines in the spool not yet written to InfluxDB.").add(spool.rows)
    out.gauge("spool_bytes", "Size of the unsent lines.").add(spool.bytes)
    out.gauge("spool_max_bytes", "The spool's size limit; beyond it the oldest are evicted.").add(
        spool.max_bytes)
    out.gauge("spool_file_bytes", "Size of the spool's SQLite file.").add(spool.file_bytes)
    out.gauge("spool_oldest_unsent_age_seconds", "Age of the oldest unsent line.").add(
        spool.oldest_unsent_age_s)
    out.gauge("spool_pending_commit", "Lines received and waiting for the next commit.").add(
        spool.pending_commit)
    out.counter("spool_commit_failures_total", "Spool transactions that failed.").add(
        spool.commit_failures)
    out.gauge("spool_quarantine_rows", "Lines InfluxDB refused, kept for inspection.").add(
        spool.quarantine_rows)
    out.gauge("spool_dead_letter_rows", "Malformed messages kept for inspection.").add(
        spool.dead_letter_rows)
    out.counter("spool_evicted_for_reserve_total", "Rows evicted to keep spool.min_free_bytes "
                "free on the card (also in evicted_total).").add(spool.evicted_for_reserve)
    out.gauge("spool_open", "1 while the spool file is open; 0 when it could not open (a full "
              "card at start): nothing is acknowledged then.").add(
        int(spool.open_error is None))


def _disk(out: _Exposition, disk: DiskStatus) -> None:
    state = out.gauge("disk_state", "1 for the card's state now (ok, low, disk_full, "
                      "io_error).", "state")
    for name in ("ok", "low", "disk_full", "io_error"):
        state.add(int(disk.state == name), name)
    out.gauge("disk_free_bytes", "Free bytes on the filesystem of data_dir.").add(
        disk.free_bytes)
    out.gauge("disk_total_bytes", "Size of the filesystem of data_dir.").add(disk.total_bytes)
    out.gauge("disk_min_free_bytes", "spool.min_free_bytes: the reserve the spool leaves.").add(
        disk.min_free_bytes)
    failures = out.counter("disk_write_failures_total", "Writes the card refused, per file.",
                           "file")
    for file, n in disk.write_failures.items():
        failures.add(n, file)
    lost = out.counter("disk_not_recorded_total", "What the gateway could not record about "
                       "itself (outage rows, history buckets).", "what")
    for what, n in disk.not_recorded.items():
        lost.add(n, what)
    out.gauge("disk_damaged_notices", "Damaged files set aside at start, not yet "
              "acknowledged.").add(len(disk.notices))


def _influx(out: _Exposition, influx: InfluxStatus) -> None:
    out.gauge("influx_connected",
              "1 when the last attempt reached InfluxDB, 0 when it did not.").add(
        influx.connected)
    out.gauge("influx_state", "The forwarder's state (1 for the current one).", "state").add(
        1, influx.state)
    out.counter("influx_batches_total", "Batches InfluxDB accepted.").add(influx.batches)
    out.counter("influx_retries_total", "Batches tried again after a failure.").add(
        influx.retries)
    out.gauge("influx_last_success_timestamp_seconds",
              "When InfluxDB last accepted a batch (Unix time).").add(
        _seconds(influx.last_success_ns))
    out.gauge("influx_next_attempt_seconds", "Seconds until the next attempt after a failure.").add(
        influx.next_attempt_in_s)


def _sources(out: _Exposition, sources: Mapping[str, SourceStatus]) -> None:
    messages = out.counter("source_messages_total", "Messages per source.", "source")
    readings = out.counter("source_readings_total", "Readings decoded per source.", "source")
    errors = out.counter("source_errors_total", "Input a source refused, by kind.",
                         "source", "kind")
    last = out.gauge("source_last_message_timestamp_seconds",
                     "When a source last had a message (Unix time).", "source")
    for name, s in _entries(sources):
        messages.add(s.messages, name)
        readings.add(s.readings, name)
        last.add(_seconds(s.last_message_ns), name)
        for kind, count in _entries(s.errors):
            errors.add(count, name, kind)


def _serial(out: _Exposition, ports: Mapping[str, SerialStatus]) -> None:
    is_open = out.gauge("serial_open", "1 while the serial port is open.", "name", "port")
    opens = out.counter("serial_opens_total", "Times the serial port was opened.", "name")
    size = out.counter("serial_bytes_total", "Bytes read from the serial port.", "name")
    lines = out.counter("serial_lines_total", "Lines read from the serial port.", "name")
    readings = out.counter("serial_readings_total", "Readings decoded from the serial port.",
                           "name")
    errors = out.counter("serial_errors_total", "Serial port errors, by kind.", "name", "kind")
    last = out.gauge("serial_last_reading_timestamp_seconds",
                     "When the serial port last gave a reading (Unix time).", "name")
    for name, p in _entries(ports):
        is_open.add(p.open, name, p.port)
        opens.add(p.opens, name)
        size.add(p.bytes, name)
        lines.add(p.lines, name)
        readings.add(p.readings, name)
        last.add(_seconds(p.last_reading_ns), name)
        for kind, count in _entries(p.errors):
            errors.add(count, name, kind)


def _modbus(out: _Exposition, buses: Mapping[str, ModbusStatus]) -> None:
    is_open = out.gauge("modbus_open", "1 while the RS485 bus's port is open.", "bus", "port")
    opens = out.counter("modbus_opens_total", "Times the bus's port was opened.", "bus")
    received = out.counter("modbus_received_bytes_total", "Bytes read from the bus.", "bus")
    sent = out.counter("modbus_sent_bytes_total", "Bytes written to the bus.", "bus")
    stray = out.counter("modbus_stray_bytes_total",
                        "Bytes that arrived when no answer was expected.", "bus")
    polls = out.counter("modbus_polls_total", "Requests sent on the bus.", "bus")
    errors = out.counter("modbus_errors_total", "Bus errors, by kind (open_failed, port_gone).",
                         "bus", "kind")
    up = out.gauge("modbus_slave_up", "1 while a slave answers, 0 when offline; none until "
                   "asked.", "bus", "device", "unit")
    state = out.gauge("modbus_slave_state", "A slave's state (1 for the current one).",
                      "bus", "device", "unit", "state")
    slave_polls = out.counter("modbus_slave_polls_total", "Polls of a slave.", "bus", "device")
    answered = out.counter("modbus_slave_answered_total", "Polls a slave answered.",
                           "bus", "device")
    went_offline = out.counter("modbus_slave_went_offline_total",
                               "Times a slave went offline.", "bus", "device")
    slave_errors = out.counter("modbus_slave_errors_total", "A slave's errors, by kind.",
                               "bus", "device", "kind")
    slave_last = out.gauge("modbus_slave_last_reading_timestamp_seconds",
                           "When a slave last gave a reading (Unix time).", "bus", "device")
    block_polls = out.counter("modbus_block_polls_total",
                              "Reads of a register block (function@address).",
                              "bus", "device", "block")
    block_ok = out.counter("modbus_block_ok_total", "Reads of a register block that succeeded.",
                           "bus", "device", "block")
    block_errors = out.counter("modbus_block_errors_total",
                               "A register block's errors, by kind (timeout, crc, exception, "
                               "mismatch, malformed, nan).", "bus", "device", "block", "kind")
    for bus, b in _entries(buses):
        is_open.add(b.open, bus, b.port)
        opens.add(b.opens, bus)
        received.add(b.bytes_in, bus)
        sent.add(b.bytes_out, bus)
        stray.add(b.stray_bytes, bus)
        polls.add(b.polls, bus)
        for kind, count in _entries(b.errors):
            errors.add(count, bus, kind)
        for device, s in _entries(b.slaves):
            up.add(_UP.get(s.state), bus, device, s.unit)
            state.add(1, bus, device, s.unit, s.state)
            slave_polls.add(s.polls, bus, device)
            answered.add(s.answered, bus, device)
            went_offline.add(s.went_offline, bus, device)
            slave_last.add(_seconds(s.last_reading_ns), bus, device)
            for kind, count in _entries(s.errors):
                slave_errors.add(count, bus, device, kind)
            for block, k in _entries(s.blocks):
                block_polls.add(k.polls, bus, device, block)
                block_ok.add(k.ok, bus, device, block)
                for kind, count in _entries(k.errors):
                    block_errors.add(count, bus, device, block, kind)


def _alerts(out: _Exposition, alerts: AlertsStatus) -> None:
    out.gauge("alerts_enabled", "1 when down/recovered alerts are configured on.").add(
        alerts.enabled)
    out.gauge("alerts_waiting", "Devices down whose alert delay is still running.").add(
        alerts.waiting)
    out.gauge("alerts_down", "Devices whose down alert went out, not recovered yet.").add(
        alerts.down)
    out.counter("alerts_suppressed_total",
                "Devices back up before their alert delay ran out: nothing sent.").add(
        alerts.suppressed)
    sent = out.counter("alerts_sent_total", "Alert messages a target accepted.",
                       "target", "kind")
    failed = out.counter("alerts_failed_total", "Alert deliveries that failed.",
                         "target", "kind")
    dropped = out.counter("alerts_dropped_total", "Alert messages given up on.",
                          "target", "kind")
    retries = out.counter("alerts_retries_total", "Alert deliveries tried again.",
                          "target", "kind")
    pending = out.gauge("alerts_pending", "Alert messages waiting to be delivered.",
                        "target", "kind")
    for t in alerts.targets:
        sent.add(t.sent, t.name, t.kind)
        failed.add(t.failed, t.name, t.kind)
        dropped.add(t.dropped, t.name, t.kind)
        retries.add(t.retries, t.name, t.kind)
        pending.add(t.pending, t.name, t.kind)


def _devices(out: _Exposition, devices: Sequence[DeviceView]) -> None:
    up = out.gauge("device_up", "1 while a device is online, 0 while offline; none while "
                   "unknown or unmonitored.", "device", "kind", "site")
    state = out.gauge("device_state", "A device's state (1 for the current one).",
                      "device", "kind", "site", "state")
    # The same device, kind and site labels on every device family, so they join.
    last_seen = out.gauge("device_last_seen_timestamp_seconds",
                          "When a device was last heard from (Unix time).",
                          "device", "kind", "site")
    uptime = out.gauge("device_uptime_ratio",
                       "Share of the observed time a device was online, over a window.",
                       "device", "kind", "site", "window")
    observed = out.gauge("device_observed_ratio",
                         "Share of a window the gateway could see the device (the uptime ratio "
                         "is of this share).", "device", "kind", "site", "window")
    tally = out.gauge("devices", "Devices in each state.", "state")
    counted = dict.fromkeys(_DEVICE_STATES, 0)
    for d in devices:
        device, kind, site, now = d.id, d.kind, d.site, d.state
        counted[now] = counted.get(now, 0) + 1
        up.add(_UP.get(now), device, kind, site)
        state.add(1, device, kind, site, now)
        last_seen.add(_seconds(d.last_seen_ns), device, kind, site)
        pct = d.uptime_pct
        for window, ratio in (("24h", pct.h24), ("7d", pct.d7), ("30d", pct.d30)):
            value = _number(ratio)
            if value is not None:
                uptime.add(value / 100, device, kind, site, window)
        seen = d.uptime_observed_pct
        if seen is not None:
            for window, ratio in (("24h", seen.h24), ("7d", seen.d7), ("30d", seen.d30)):
                value = _number(ratio)
                if value is not None:
                    observed.add(value / 100, device, kind, site, window)
    for name, count in counted.items():
        tally.add(count, name)


def _components(out: _Exposition, components: Mapping[str, bool]) -> None:
    up = out.gauge("component_up", "1 while one of the gateway's own components (bus:<name>, "
                   "serial:<name>) works, 0 while it is down (its devices are unmonitored).",
                   "component")
    for name, working in _entries(components):
        up.add(working, name)


def _auth(out: _Exposition, auth: Mapping[str, Any] | None) -> None:
    """The operator token's throttle and sessions (``OperatorAuth.statistics()``)."""
    if not auth:
        return
    out.counter("api_token_refusals_total", "Wrong operator tokens presented (bearer header "
                "or sign-in).").add(auth.get("token_refusals"))
    out.counter("api_token_throttled_total", "Token attempts answered 429 because their "
                "address gave too many wrong tokens.").add(auth.get("token_throttled"))
    out.counter("api_sessions_revoked_total", "Operator sessions ended by signing out.").add(
        auth.get("sessions_revoked"))
    out.gauge("api_sessions_active", "Operator sessions (browser sign-ins) the gateway "
              "currently honours.").add(auth.get("sessions_active"))
    out.gauge("api_token_throttle_addresses", "Client addresses the token throttle "
              "remembers (bounded).").add(auth.get("throttle_addresses"))
    out.counter("api_session_save_failures_total", "Times the operator sessions could not "
                "be saved (they then do not survive a restart).").add(
        auth.get("session_save_failures"))


def _discovery(out: _Exposition, discovery: Mapping[str, Any] | None) -> None:
    """Devices not in the device list (``Discovery.statistics()``): bounded, and how."""
    if not discovery:
        return
    out.gauge("discovered_devices", "Discovered devices the gateway tracks now (at most "
              "ingest.max_discovered).").add(discovery.get("discovered"))
    out.gauge("discovered_devices_limit", "ingest.max_discovered.").add(discovery.get("limit"))
    out.counter("discovery_admitted_total", "New ids taken on as discovered devices.").add(
        discovery.get("admitted"))
    refused = out.counter("discovery_refused_total", "New ids refused (reason rate: over "
                          "ingest.discovery_per_minute).", "reason")
    for reason, n in _entries(discovery.get("refused") or {}):
        refused.add(n, reason)
    forgotten = out.counter("discovery_forgotten_total", "Discovered devices forgotten (why: "
                            "evicted at the cap, silent, operator, limit at start).", "why")
    for why, n in _entries(discovery.get("forgotten") or {}):
        forgotten.add(n, why)
    out.counter("discovery_refused_not_kept_total", "Messages of refused ids counted but not "
                "kept as dead letters (beyond a sample a minute).").add(
        discovery.get("not_kept"))


def _polder(out: _Exposition, polder: Mapping[str, Any] | None) -> None:
    """The flood watch (issue 16): each polder's level, warning level, rise and time to the
    next level, and how its readings were judged."""
    if not polder:
        return
    views: Sequence[PolderView] = polder.get("views") or ()
    level = out.gauge("polder_level", "The polder's last trusted reading, in its unit (none "
                      "while the sensor is not believed).", "polder", "unit")
    state = out.gauge("polder_alert_level", "1 for the polder's warning level (normal, "
                      "waspada, siaga, awas, unknown).", "polder", "level")
    trusted = out.gauge("polder_sensor_trusted", "1 while the polder's level sensor is "
                        "believed, 0 while judged faulty.", "polder")
    trend = out.gauge("polder_trend_per_hour", "The rise of the level per hour, in its unit "
                      "(Theil-Sen over polder.window_s).", "polder", "unit")
    eta = out.gauge("polder_eta_next_seconds", "Seconds until the next warning level while "
                    "the level rises (none when flat, falling or untrusted).", "polder",
                    "next_level")
    eta_low = out.gauge("polder_eta_low_seconds", "The early end of that estimate.", "polder",
                        "next_level")
    eta_high = out.gauge("polder_eta_high_seconds", "The late end of that estimate.",
                         "polder", "next_level")
    siren = out.gauge("polder_siren_on", "1 while the polder's siren output is confirmed on, "
                      "0 off (none without a siren).", "polder")
    siren_state = out.gauge("polder_siren_state", "1 for the siren's state (off, on, silenced, "
                            "test).", "polder", "state")
    for v in views:
        if v.siren_detail is not None:
            siren.add(v.siren_detail.get("output"), v.id)
            for name in ("off", "on", "silenced", "test"):
                siren_state.add(1 if v.siren == name else 0, v.id, name)
        level.add(v.level, v.id, v.unit)
        for name in ("normal", "waspada", "siaga", "awas", "unknown"):
            state.add(1 if v.alert_level == name else 0, v.id, name)
        trusted.add(0 if v.sensor_fault else 1, v.id)
        trend.add(v.trend_per_h, v.id, v.unit)
        if v.next_level is not None:
            eta.add(v.eta_next_s, v.id, v.next_level)
            eta_low.add(v.eta_low_s, v.id, v.next_level)
            eta_high.add(v.eta_high_s, v.id, v.next_level)
    judged = out.counter("polder_readings_total", "Polder readings judged, by verdict (ok, "
                         "range, spike, flatline, disagree; stale: silences found).", "polder",
                         "verdict")
    for polder_id, verdicts in _entries(polder.get("judged") or {}):
        for verdict, n in _entries(verdicts):
            judged.add(n, polder_id, verdict)


def _extra(out: _Exposition, extra: Mapping[str, Any]) -> None:
    for section, values in _entries(extra):
        for key, value in _entries(values):
            if _number(value) is None:
                continue
            said = _HELP.get((section, key))
            raw = key
            key, value = _in_base_units(key, value)
            name = _NOT_IN_NAME.sub("_", f"{section}_{key}")
            if out.taken(name):
                continue
            doc = said or f"{section}: {key} (from the gateway's {section} statistics)."
            if (section, raw) in _COUNTERS:
                out.counter(f"{name}_total", doc).add(value)
            else:
                out.gauge(name, doc).add(value)


# What the sections the gateway adds (``extra``) mean, for Prometheus's HELP lines.
_HELP: dict[tuple[str, str], str] = {
    ("clock", "synced"): "1 once the wall clock is believed (above clock.min_valid_time and "
    "synchronised as clock.require_sync asks).",
    ("clock", "kernel_synchronised"): "1 when the kernel (adjtimex) says the clock is "
    "synchronised, 0 when it says not.",
    ("clock", "since_boottime_s"): "Seconds since this boot (CLOCK_BOOTTIME).",
    ("clock", "synced_at_ns"): "When the clock was believed in this run (Unix time).",
    ("clock", "last_step_s"): "How far the clock jumped when it synchronised, seconds.",
    ("clock", "held_rows"): "Readings stamped before the clock was believed, waiting on disk.",
    ("clock", "unsynced_rows"): "Readings held in an earlier boot, kept apart, never sent.",
    ("clock", "held"): "Readings held for the clock since the spool was made.",
    ("clock", "released"): "Held readings released with corrected times.",
    ("clock", "kept_apart"): "Held readings of an earlier boot kept apart.",
    ("clock", "held_evicted"): "Held readings dropped over clock.held_max_rows.",
    ("clock", "refused_time"): "Readings refused for their time (before the floor, far "
    "ahead).",
    ("events", "clients"): "Live event streams open now (the pages).",
    ("events", "operator_clients"): "Of them, operators' streams.",
    ("events", "connections"): "Live event streams opened since start.",
    ("events", "published"): "Events published since start.",
    ("events", "sent"): "Events sent to streams since start.",
    ("events", "dropped"): "Events dropped for streams too slow to take them.",
    ("events", "refused"): "Streams refused over api.sse_max_clients.",
    ("history", "series"): "Chart series (device, field) kept in history.sqlite3.",
    ("history", "pending_buckets"): "Chart buckets waiting for the next flush.",
    ("history", "rows"): "Rows in history.sqlite3.",
    ("history", "flushes"): "History flushes since start.",
    ("history", "flush_failures"): "History flushes the disk refused (kept for the next).",
    ("history", "last_flush_ns"): "When the history was last flushed (Unix time).",
    ("history", "skipped_old"): "Readings older than the longest tier, not charted.",
    ("history", "skipped_future"): "Readings too far ahead of the clock, not charted.",
    ("history", "refused_series"): "Values refused: history.max_series reached.",
    ("history", "refused_buckets"): "Values refused: too many buckets pending.",
    ("history", "lost_buckets"): "Chart buckets dropped unwritten while the disk refused.",
    ("history", "file_bytes"): "Size of history.sqlite3 with its WAL.",
    ("watchdog", "alive"): "1 while systemd's watchdog is told the gateway is alive.",
    ("watchdog", "skips"): "Watchdog pings withheld because something was stuck.",
}


# Of them, the counts since start: typed ``counter``, named ``..._total``.
_COUNTERS: frozenset[tuple[str, str]] = frozenset({
    ("clock", "held"), ("clock", "released"), ("clock", "kept_apart"),
    ("clock", "held_evicted"), ("clock", "refused_time"),
    ("events", "connections"), ("events", "published"), ("events", "sent"),
    ("events", "dropped"), ("events", "refused"),
    ("history", "flushes"), ("history", "flush_failures"), ("history", "skipped_old"),
    ("history", "skipped_future"), ("history", "refused_series"),
    ("history", "refused_buckets"), ("history", "lost_buckets"),
    ("watchdog", "skips"),
})


def _in_base_units(key: str, value: Any) -> tuple[str, Any]:
    """Prometheus names units in full and counts time in seconds: ``x_s`` -> ``x_seconds``,
    ``x_ms`` -> ``x_seconds`` (/1000), ``x_at_ns``/``x_ns`` -> ``x_timestamp_seconds`` (/1e9)."""
    number = _number(value)
    if key.endswith("_ns") and number is not None:
        return key.removesuffix("_ns").removesuffix("_at") + "_timestamp_seconds", number / 1e9
    if key.endswith("_ms") and number is not None:
        return key.removesuffix("_ms") + "_seconds", number / 1000
    if key.endswith("_s"):
        return key.removesuffix("_s") + "_seconds", value
    return key, value
