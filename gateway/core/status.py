"""One typed shape per fact: the gateway's status and the park's views.

The parts report through these models, the composition root (:mod:`gateway.app.status`)
assembles them, and every reader takes them as they are: the API returns them (and so documents
them in its OpenAPI schema), ``/metrics`` renders them (:mod:`gateway.web.metrics`), the
``gateway_health`` point is built from them (:mod:`gateway.park.health`). A renamed field is a
type error in all of them at once, not a string key that silently vanishes.

Pure data: no I/O, nothing of the gateway imported, so every layer may use them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def iso(ns: int | None, *, timespec: str = "milliseconds") -> str | None:
    """A nanosecond timestamp as ISO 8601 UTC ("...T01:02:03.456Z"; ``timespec`` as
    :meth:`datetime.isoformat` takes it: the state topics and outages say seconds)."""
    if ns is None:
        return None
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.isoformat(timespec=timespec).replace("+00:00", "Z")


class _Shape(BaseModel):
    # By name or by alias (UptimePct's "24h"); what a part reports beyond the shape is left out.
    model_config = ConfigDict(populate_by_name=True)
    # Times as ISO 8601 beside their nanoseconds: each twin field (``since``) filled from its
    # ``_ns`` field (``since_ns``) when the part did not give it.
    _iso_twins: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _iso_times(cls, data: Any) -> Any:
        if cls._iso_twins and isinstance(data, dict):
            missing = [name for name in cls._iso_twins if data.get(name) is None]
            if missing:
                data = dict(data)
                for name in missing:
                    value = data.get(f"{name}_ns")
                    data[name] = iso(value) if isinstance(value, int) else None
        return data


class Health(_Shape):
    status: str
    uptime_s: float


class GatewayInfo(_Shape):
    id: str
    site: str
    version: str
    uptime_s: float
    stopping: bool


class MqttStatus(_Shape):
    broker: str
    state: str
    connected: bool
    connects: int
    disconnects: int
    session_present: bool | None
    last_error: str | None
    redeliveries: int
    redeliveries_matched: int
    unacknowledged: int
    flow_pauses: int


class InfluxStatus(_Shape):
    _iso_twins = ("last_success",)
    url: str
    api: str
    state: str
    connected: bool | None
    last_error: str | None
    last_success_ns: int | None
    last_success: str | None = Field(None, description="last_success_ns as ISO 8601 UTC")
    batches: int
    retries: int
    next_attempt_in_s: float | None


class SpoolStatus(_Shape):
    rows: int
    bytes: int
    max_bytes: int
    file_bytes: int
    oldest_unsent_age_s: float | None
    pending_commit: int
    commit_failures: int
    quarantine_rows: int
    dead_letter_rows: int
    evicted_for_reserve: int = Field(description="Rows evicted to keep spool.min_free_bytes "
                                     "free on the card (also in counts.evicted)")
    open_error: str | None = Field(description="Why the spool file is not open (a full card "
                                   "at start); nothing is acknowledged meanwhile")


class DiskFailing(_Shape):
    _iso_twins = ("since",)
    failure: Literal["full", "io"]
    error: str
    since_ns: int
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")


class DiskNotice(_Shape):
    _iso_twins = ("at",)
    id: int
    at_ns: int
    at: str | None = Field(None, description="at_ns as ISO 8601 UTC")
    file: str = Field(description="spool, state or history")
    action: str = Field(description="set_aside (started fresh) or salvaged (readable rows "
                        "copied into a fresh file)")
    detail: str
    set_aside_as: str | None = Field(description="Where the damaged file was moved")
    salvaged: int
    lost: int | None = Field(description="Rows known lost; null when it cannot be known")
    acknowledged: bool


class DiskStatus(_Shape):
    _iso_twins = ("since",)
    """The SD card (the filesystem holding data_dir) and what it refused."""

    state: Literal["ok", "low", "disk_full", "io_error"] = Field(
        description="low: under spool.min_free_bytes free, the spool evicts rather than grow; "
        "disk_full / io_error: a write was refused and none has succeeded since")
    since_ns: int
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")
    free_bytes: int | None
    total_bytes: int | None
    min_free_bytes: int
    failing: dict[str, DiskFailing] = Field(description="Per file, the refusal going on")
    write_failures: dict[str, int] = Field(description="Refused writes per file, since start")
    not_recorded: dict[str, int] = Field(description="What the gateway could not record about "
                                         "itself (outage rows, history buckets), counted")
    notices: list[DiskNotice] = Field(description="Damaged files set aside at start, until an "
                                      "operator acknowledges them")


class Counts(_Shape):
    received: int
    readings: int
    rejected: int
    spooled: int = Field(description="Lines committed to the spool, own_points included")
    own_points: int = Field(description="Points the gateway makes itself (device_status)")
    acknowledged: int
    written: int
    quarantined: int
    dead_lettered: int
    evicted: int
    dropped_uncommitted: int
    presence_messages: int = Field(description="A device's own online/offline (last will)")
    macs_redacted: int = Field(description="Client MAC addresses taken out of input")
    own_topics_ignored: int = Field(description="The gateway's own state topics, heard back")


class SourceStatus(_Shape):
    _iso_twins = ("last_message",)
    messages: int
    readings: int
    errors: dict[str, int]
    last_message_ns: int | None
    last_message: str | None = Field(None, description="last_message_ns as ISO 8601 UTC")
    last_error: str | None


class SerialStatus(_Shape):
    _iso_twins = ("last_reading",)
    port: str
    open: bool
    opens: int
    bytes: int
    lines: int
    readings: int
    errors: dict[str, int]
    last_error: str | None
    last_reading_ns: int | None
    last_reading: str | None = Field(None, description="last_reading_ns as ISO 8601 UTC")


class ModbusBlockStatus(_Shape):
    _iso_twins = ("last_ok",)
    function: str
    address: int
    count: int
    polls: int
    ok: int
    errors: dict[str, int] = Field(description="timeout, crc, exception, mismatch, malformed, nan")
    last_error: str | None
    last_exception: int | None = Field(description="The slave's last exception code (2: "
                                       "illegal data address)")
    last_ok_ns: int | None
    last_ok: str | None = Field(None, description="last_ok_ns as ISO 8601 UTC")


class ModbusSlaveStatus(_Shape):
    _iso_twins = ("last_reading",)
    unit: int
    state: Literal["unknown", "online", "offline", "unmonitored"] = Field(
        description="unknown: not asked yet; offline: no answer to offline_after polls in a "
        "row; unmonitored: the bus's port is not open")
    interval_s: float
    polls: int
    answered: int
    failures_in_row: int
    went_offline: int
    next_poll_in_s: float | None
    last_error: str | None
    last_reading_ns: int | None
    last_reading: str | None = Field(None, description="last_reading_ns as ISO 8601 UTC")
    errors: dict[str, int]
    blocks: dict[str, ModbusBlockStatus] = Field(description="Keyed function@address")


class ModbusStatus(_Shape):
    _iso_twins = ("last_reading",)
    port: str
    open: bool
    opens: int
    bytes_in: int
    bytes_out: int
    polls: int
    stray_bytes: int = Field(description="Bytes that arrived when no answer was expected")
    errors: dict[str, int] = Field(description="open_failed, port_gone")
    last_error: str | None
    last_reading_ns: int | None
    last_reading: str | None = Field(None, description="last_reading_ns as ISO 8601 UTC")
    slaves: dict[str, ModbusSlaveStatus] = Field(description="Keyed by device id")


class Latest(_Shape):
    _iso_twins = ("time",)
    time_ns: int | None
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    fields: dict[str, float | int | bool | str]


class UptimePct(_Shape):
    h24: float | None = Field(alias="24h", description="% of the observed time online")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class ApWifi(_Shape):
    rx_bps: float | None
    tx_bps: float | None
    rx_bytes_today: int
    tx_bytes_today: int
    clients: int | None
    distinct_clients_today: int
    day: str
    counter_events: dict[str, int] = Field(description="wrap32, wrap64, reset, gap")


DeviceState = Literal["unknown", "online", "offline", "unmonitored"]
"""A device's state: ``unmonitored`` when the gateway cannot see it (a link is gone)."""


class DeviceView(_Shape):
    _iso_twins = ("since", "last_seen")
    id: str
    name: str
    kind: str | None
    site: str
    zone: str | None
    source: str | None
    origin: Literal["config", "discovered", "gateway", "removed"]
    interval_s: float
    state: DeviceState = Field(
        description="unmonitored: a link to it (its bus's adapter) is gone, see cause")
    since_ns: int | None = Field(description="When the current state began")
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")
    cause: str | None = Field(
        description="Why it is offline, or unmonitored (port_gone, broker_down)")
    last_seen_ns: int | None
    last_seen: str | None = Field(None, description="last_seen_ns as ISO 8601 UTC")
    presence: Literal["online", "offline"] | None = Field(
        description="What the device last said itself (its last will), if it does")
    latest: Latest | None = Field(description="The latest value of each field")
    uptime_pct: UptimePct
    uptime_observed_pct: UptimePct | None = Field(
        None, description="How much of each window was observed (%): the uptime % is of that "
        "share; the rest was before the device was known, the gateway down, or unmonitored")
    wifi: ApWifi | None = Field(description="For access points: traffic and clients")


class OutageView(_Shape):
    id: int
    device: str
    site: str
    kind: str | None
    start_ns: int
    end_ns: int | None
    start: str | None
    end: str | None
    duration_s: float = Field(description="Up to now while ongoing")
    ongoing: bool
    cause: str | None
    end_cause: str | None


class Tally(_Shape):
    up: int
    down: int
    unknown: int
    unmonitored: int = Field(0, description="Not seen because a link to them is gone")
    total: int


class SiteGateway(_Shape):
    _iso_twins = ("since",)
    id: str
    state: str
    since_ns: int | None
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")


class SiteWifi(_Shape):
    rx_bps: float
    tx_bps: float
    rx_bytes_today: int
    tx_bytes_today: int
    clients: int
    distinct_clients_today: int | None
    aps_reporting: int
    day: str


class SiteView(_Shape):
    _iso_twins = ("time",)
    site: str
    time_ns: int
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    gateways: list[SiteGateway]
    aps: Tally
    sensors: Tally
    clients_now: int | None = Field(description="Connected clients summed over online APs")
    wifi: SiteWifi | None
    uptime_pct: UptimePct = Field(description="All devices' online time over observed time")
    open_outages: int


SUMMARY_SCHEMA = 1


class SummaryGateway(_Shape):
    id: str
    version: str
    state: Literal["online", "stopping"] = Field(
        description="The gateway publishing; its own last will (offline) is on "
        "garden/<site>/gateway/<id>/status")
    uptime_s: float


class SummaryOutage(_Shape):
    _iso_twins = ("since",)
    device: str
    kind: str | None
    since_ns: int
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")


class SummaryWifi(_Shape):
    clients_now: int | None = Field(description="Connected clients over the online APs")
    distinct_today: int | None = Field(description="Distinct clients today (local day)")


class SummaryPolder(_Shape):
    _iso_twins = ("since",)
    id: str
    name: str
    level: float | None = Field(description="The last trusted reading, in unit")
    unit: str
    alert_level: Literal["normal", "waspada", "siaga", "awas", "unknown"]
    since_ns: int | None
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")
    trend_per_h: float | None
    eta_next_s: float | None
    next_level: Literal["waspada", "siaga", "awas"] | None
    quality: str = Field(description="ok, or why the sensor is not believed")


class SummarySpool(_Shape):
    rows: int = Field(description="Readings waiting for InfluxDB")
    oldest_unsent_age_s: float | None


class ParkSummary(_Shape):
    """The park in one retained message on garden/<site>/summary (issue 17): what the regency
    needs to see every park at once. Versioned by ``schema``; nothing personal in it (no MAC
    address, no free text from a device: names and causes come from the config and the
    gateway)."""

    _iso_twins = ("time",)
    schema_version: int = Field(SUMMARY_SCHEMA, alias="schema",
                                description="This shape's version; a change that removes or "
                                "renames a field raises it")
    site: str
    time_ns: int = Field(description="When the summary was made")
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    gateway: SummaryGateway
    devices: dict[str, Tally] = Field(description="Per kind: up, down, unknown, unmonitored, "
                                      "total (the gateway itself not counted)")
    outages: list[SummaryOutage] = Field(description="Open outages, oldest first (at most 50)")
    outages_open: int = Field(description="How many outages are open (also beyond the 50)")
    uptime_pct: dict[str, dict[str, float | None]] = Field(
        description="Per device: 24h, 7d, 30d uptime % over the observed time")
    wifi: SummaryWifi
    polder: list[SummaryPolder]
    spool: SummarySpool
    clock_synced: bool


class ClockStatus(_Shape):
    _iso_twins = ("synced_at",)
    synced: bool = Field(description="The wall clock is believed: above clock.min_valid_time "
                         "and, per clock.require_sync, synchronised (NTP)")
    kernel_synchronised: bool | None = Field(description="adjtimex's verdict; None: unknown")
    require_sync: str
    boot_id: str
    since_boottime_s: float
    synced_at_ns: int | None
    synced_at: str | None = Field(None, description="synced_at_ns as ISO 8601 UTC")
    last_step_s: float | None = Field(description="How far the clock jumped when it synced")
    held_rows: int = Field(description="Readings stamped before the sync, waiting on disk")
    unsynced_rows: int = Field(description="Held in an earlier boot: kept apart, never sent")
    held: int
    released: int
    kept_apart: int
    held_evicted: int
    refused_time: int = Field(description="Device times before the floor or far ahead")


class WatchdogStatus(_Shape):
    alive: bool = Field(description="What systemd's WATCHDOG=1 vouches for: every task runs, "
                        "the event loop wakes on time, the committer is not stuck")
    why_not: str | None
    pings: int
    skips: int


class AlertTargetStatus(_Shape):
    _iso_twins = ("last_sent", "next_attempt")
    name: str
    kind: str
    sent: int
    failed: int
    dropped: int
    retries: int
    pending: int
    last_error: str | None
    last_sent_ns: int | None
    last_sent: str | None = Field(None, description="last_sent_ns as ISO 8601 UTC")
    next_attempt_ns: int | None
    next_attempt: str | None = Field(None, description="next_attempt_ns as ISO 8601 UTC")


class AlertsStatus(_Shape):
    enabled: bool
    waiting: int = Field(description="Down, and the alert delay (down_after_s) still running")
    down: int = Field(description="Down alert sent, not recovered yet")
    suppressed: int = Field(description="Back up before the delay ran out: nothing sent")
    targets: list[AlertTargetStatus] = Field(description="Per target: sent, failed, dropped, "
                                             "pending")
    outbox_rows: int | None = Field(None, description="Messages waiting in data_dir/"
                                    "outbox.sqlite3 (one per target); none without the file")
    not_durable: int = Field(0, description="Messages the card would not take into the "
                             "outbox: kept in memory only (lost on a restart)")


class Status(_Shape):
    gateway: GatewayInfo
    mqtt: MqttStatus
    influx: InfluxStatus
    spool: SpoolStatus
    counts: Counts
    totals: dict[str, int]
    sources: dict[str, SourceStatus]
    discovered_devices: list[str]
    liveness: dict[str, int]
    wifi: dict[str, int]
    alerts: AlertsStatus
    serial: dict[str, SerialStatus]
    modbus: dict[str, ModbusStatus]
    watchdog: WatchdogStatus
    clock: ClockStatus
    disk: DiskStatus


class DeadLetterView(_Shape):
    _iso_twins = ("at",)
    id: int
    at_ns: int
    at: str | None = Field(None, description="at_ns as ISO 8601 UTC")
    source: str
    topic: str
    kind: str
    error: str
    payload: str = Field(description="As received (client MACs already taken out)")


class QuarantineView(_Shape):
    _iso_twins = ("at",)
    id: int
    at_ns: int
    at: str | None = Field(None, description="at_ns as ISO 8601 UTC")
    status: int | None = Field(description="InfluxDB's HTTP status when it refused the line")
    reason: str
    line: str


class ResidentWifi(_Shape):
    status: Literal["normal", "gangguan", "mati", "unmonitored", "unknown"] = Field(
        description="normal: every access point up; gangguan: some down; mati: none up")
    aps_up: int
    aps_total: int
    clients_now: int | None


class ResidentPolder(_Shape):
    _iso_twins = ("time", "not_measured_since")
    value: float | None
    unit: str
    level: Literal["normal", "waspada", "siaga", "awas", "unknown"]
    thresholds: dict[str, float] = Field(description="waspada, siaga, awas: from these up")
    time_ns: int | None
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    stale: bool = Field(description="No value within pages.fresh_s")
    state: str
    measured: bool = Field(True, description="False while its sensor is offline or "
                           "unmonitored: no level is shown (value and level are empty)")
    not_measured_since_ns: int | None = Field(
        None, description="Since when it is not measured (its sensor's state's start)")
    not_measured_since: str | None = Field(
        None, description="not_measured_since_ns as ISO 8601 UTC")
    guidance: dict[str, str] = Field(
        default_factory=dict, description="siaga, awas: what to do (polder.*_guidance)")
    emergency_number: str | None = Field(None, description="The number to call at Siaga, Awas")
    name: str | None = Field(None, description="The polder's name")
    sensor_fault: bool = Field(False, description="The sensor is judged untrustworthy: no "
                               "level is shown (sensor sedang bermasalah)")
    quality: str = Field("ok", description="ok, or why the reading is not believed: range, "
                         "spike, flatline, stale, disagree, not_measured")
    trend_per_h: float | None = Field(None, description="The rise in the unit per hour")
    eta_next_s: float | None = Field(None, description="Seconds to the next level while it "
                                     "rises; absent when flat, falling or untrusted")
    eta_low_s: float | None = Field(None, description="The early end of that estimate")
    eta_high_s: float | None = Field(None, description="The late end; absent when unbounded")
    next_level: Literal["waspada", "siaga", "awas"] | None = Field(
        None, description="The level the estimate is for")
    rain_mm_1h: float | None = Field(None, description="Rain in the last hour (mm), with a "
                                     "rain gauge configured (polder.rain)")


class PolderView(_Shape):
    """One polder as GET /api/v1/polder gives it (issue 16)."""

    _iso_twins = ("since", "level_time", "fault_since")
    id: str = Field(description="The polder's id (its sensor's device id)")
    name: str
    unit: str
    level: float | None = Field(description="The last trusted reading; none while the "
                                "sensor is not believed")
    level_time_ns: int | None
    level_time: str | None = Field(None, description="level_time_ns as ISO 8601 UTC")
    alert_level: Literal["normal", "waspada", "siaga", "awas", "unknown"]
    since_ns: int | None = Field(description="Since when at alert_level")
    since: str | None = Field(None, description="since_ns as ISO 8601 UTC")
    trend_per_h: float | None
    eta_next_s: float | None
    eta_low_s: float | None
    eta_high_s: float | None
    next_level: Literal["waspada", "siaga", "awas"] | None
    quality: str = Field(description="ok, or range, spike, flatline, stale, disagree")
    siren: str | None = Field(None, description="off, on, silenced, test; none without a "
                              "siren")
    rain_mm_1h: float | None = Field(None, description="Rain in the last hour (mm)")
    # The operator's part (left out of the public answer):
    device: str | None = None
    field: str | None = None
    sensor_fault: bool | None = None
    fault_since_ns: int | None = None
    fault_since: str | None = Field(None, description="fault_since_ns as ISO 8601 UTC")
    rising: bool | None = None
    thresholds: dict[str, float] | None = None
    siren_detail: dict[str, Any] | None = Field(
        None, description="The siren: state, wanted (the level asks), output (confirmed), "
        "until_ns (silence or test), last_error, kind, on_level, switches, failures")


class PolderList(_Shape):
    _iso_twins = ("time",)
    time_ns: int = Field(description="The gateway's clock")
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    polders: list[PolderView]


class ResidentGarden(_Shape):
    _iso_twins = ("time",)
    temperature_c: float | None
    humidity_pct: float | None
    time_ns: int | None
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    stale: bool
    state: str


class ChartRef(_Shape):
    device: str
    field: str


class ResidentView(_Shape):
    _iso_twins = ("time", "updated")
    site: str
    name: str
    time_ns: int = Field(description="The gateway's clock, for '... minutes ago'")
    time: str | None = Field(None, description="time_ns as ISO 8601 UTC")
    updated_ns: int | None = Field(description="When the park's devices were last heard")
    updated: str | None = Field(None, description="updated_ns as ISO 8601 UTC")
    fresh_s: float = Field(900.0, description="pages.fresh_s: older values are shown as old")
    unreachable_after_s: float = Field(
        30.0, description="The page says the gateway is unreachable once its live stream has "
        "been lost this long (2 x api.sse_keepalive_s)")
    wifi: ResidentWifi
    polder: ResidentPolder | None
    garden: ResidentGarden | None
    charts: dict[str, ChartRef] = Field(
        description="clients, polder, temperature, humidity: the history each chart reads")
