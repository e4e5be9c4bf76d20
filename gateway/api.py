"""The status API (FastAPI), served by the gateway process itself.

Routes read the gateway's ``status()`` snapshot, built from each component's
``statistics()``; they never reach into internals and never change anything.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field


class StatusProvider(Protocol):
    stopping: bool

    def status(self) -> dict[str, Any]: ...

    def devices_view(self, *, site: str | None = None, kind: str | None = None,
                     state: str | None = None, include_removed: bool = False
                     ) -> list[dict[str, Any]]: ...

    def outages_view(self, *, device: str | None = None, site: str | None = None,
                     since_ns: int | None = None, ongoing: bool | None = None,
                     limit: int = 100) -> list[dict[str, Any]]: ...

    def sites(self) -> list[str]: ...

    def site_view(self, site: str) -> dict[str, Any] | None: ...


class Health(BaseModel):
    status: str
    uptime_s: float


class GatewayInfo(BaseModel):
    id: str
    site: str
    version: str
    uptime_s: float
    stopping: bool


class MqttStatus(BaseModel):
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


class InfluxStatus(BaseModel):
    url: str
    api: str
    state: str
    connected: bool | None
    last_error: str | None
    last_success_ns: int | None
    batches: int
    retries: int
    next_attempt_in_s: float | None


class SpoolStatus(BaseModel):
    rows: int
    bytes: int
    max_bytes: int
    file_bytes: int
    oldest_unsent_age_s: float | None
    pending_commit: int
    commit_failures: int
    quarantine_rows: int
    dead_letter_rows: int


class Counts(BaseModel):
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


class SourceStatus(BaseModel):
    messages: int
    readings: int
    errors: dict[str, int]
    last_message_ns: int | None
    last_error: str | None


class SerialStatus(BaseModel):
    port: str
    open: bool
    opens: int
    bytes: int
    lines: int
    readings: int
    errors: dict[str, int]
    last_error: str | None
    last_reading_ns: int | None


class ModbusBlockStatus(BaseModel):
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


class ModbusSlaveStatus(BaseModel):
    unit: int
    state: Literal["unknown", "online", "offline"] = Field(
        description="unknown: not asked yet; offline: no answer to offline_after polls in a row")
    interval_s: float
    polls: int
    answered: int
    failures_in_row: int
    went_offline: int
    next_poll_in_s: float | None
    last_error: str | None
    last_reading_ns: int | None
    errors: dict[str, int]
    blocks: dict[str, ModbusBlockStatus] = Field(description="Keyed function@address")


class ModbusStatus(BaseModel):
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
    slaves: dict[str, ModbusSlaveStatus] = Field(description="Keyed by device id")


class Latest(BaseModel):
    time_ns: int | None
    fields: dict[str, float | int | bool | str]


class UptimePct(BaseModel):
    h24: float | None = Field(alias="24h", description="% of the observed time online")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class ApWifi(BaseModel):
    rx_bps: float | None
    tx_bps: float | None
    rx_bytes_today: int
    tx_bytes_today: int
    clients: int | None
    distinct_clients_today: int
    day: str
    counter_events: dict[str, int] = Field(description="wrap32, wrap64, reset, gap")


class DeviceView(BaseModel):
    id: str
    name: str
    kind: str | None
    site: str
    zone: str | None
    source: str | None
    origin: Literal["config", "discovered", "gateway", "removed"]
    interval_s: float
    state: Literal["unknown", "online", "offline"]
    since_ns: int | None = Field(description="When the current state began")
    cause: str | None = Field(description="Why it is offline, when it is")
    last_seen_ns: int | None
    presence: Literal["online", "offline"] | None = Field(
        description="What the device last said itself (its last will), if it does")
    latest: Latest | None = Field(description="The latest value of each field")
    uptime_pct: UptimePct
    wifi: ApWifi | None = Field(description="For access points: traffic and clients")


class OutageView(BaseModel):
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


class Tally(BaseModel):
    up: int
    down: int
    unknown: int
    total: int


class SiteGateway(BaseModel):
    id: str
    state: str
    since_ns: int | None


class SiteWifi(BaseModel):
    rx_bps: float
    tx_bps: float
    rx_bytes_today: int
    tx_bytes_today: int
    clients: int
    distinct_clients_today: int | None
    aps_reporting: int
    day: str


class SiteView(BaseModel):
    site: str
    time_ns: int
    gateways: list[SiteGateway]
    aps: Tally
    sensors: Tally
    clients_now: int | None = Field(description="Connected clients summed over online APs")
    wifi: SiteWifi | None
    uptime_pct: UptimePct = Field(description="All devices' online time over observed time")
    open_outages: int


class Status(BaseModel):
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
    alerts: dict[str, Any] = Field(description="Per target: sent, failed, dropped, pending")
    serial: dict[str, SerialStatus]
    modbus: dict[str, ModbusStatus]


def create_app(gateway: StatusProvider) -> FastAPI:
    app = FastAPI(
        title="Garden Gateway",
        summary="Status of one park's gateway: broker, InfluxDB, spool and counts.",
        version="1",
    )

    @app.get("/health", response_model=Health, tags=["public"])
    def health() -> Health:
        """Liveness: the process answers and its loop is running."""
        status = gateway.status()
        return Health(status="stopping" if gateway.stopping else "ok",
                      uptime_s=status["gateway"]["uptime_s"])

    @app.get("/api/v1/status", response_model=Status, tags=["public"])
    def status() -> Status:
        """Connections, spool, and counts of readings since the gateway started."""
        return Status.model_validate(gateway.status())

    # async: the registry's SQLite connection belongs to the event loop's thread.
    @app.get("/api/v1/devices", response_model=list[DeviceView], tags=["operator"])
    async def devices(site: str | None = None, kind: str | None = None,
                      state: Literal["unknown", "online", "offline"] | None = None,
                      include_removed: bool = False) -> list[dict[str, Any]]:
        """Every device with its state, since when, last seen, latest values, uptime %."""
        return gateway.devices_view(site=site, kind=kind, state=state,
                                    include_removed=include_removed)

    @app.get("/api/v1/outages", response_model=list[OutageView], tags=["operator"])
    async def outages(device: str | None = None, site: str | None = None,
                      since_ns: int | None = Query(None, description="Still going on then"),
                      ongoing: bool | None = None,
                      limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
        """Outages, newest first."""
        return gateway.outages_view(device=device, site=site, since_ns=since_ns,
                                    ongoing=ongoing, limit=limit)

    @app.get("/api/v1/sites", response_model=list[str], tags=["public"])
    async def sites() -> list[str]:
        return gateway.sites()

    @app.get("/api/v1/sites/{site}", response_model=SiteView, tags=["public"])
    async def site(site: str) -> dict[str, Any]:
        """A park at a glance: APs up/total, clients now, sensors up/total, uptime."""
        view = gateway.site_view(site)
        if view is None:
            raise HTTPException(status_code=404, detail=f"no device at site {site!r}")
        return view

    return app
