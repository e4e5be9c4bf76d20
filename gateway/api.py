"""The status API (FastAPI), served by the gateway process itself.

Routes read the gateway's ``status()`` snapshot, built from each component's
``statistics()``; they never reach into internals and never change anything.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import FastAPI
from pydantic import BaseModel, Field


class StatusProvider(Protocol):
    stopping: bool

    def status(self) -> dict[str, Any]: ...


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
    spooled: int
    acknowledged: int
    written: int
    quarantined: int
    dead_lettered: int
    evicted: int
    dropped_uncommitted: int


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


class Status(BaseModel):
    gateway: GatewayInfo
    mqtt: MqttStatus
    influx: InfluxStatus
    spool: SpoolStatus
    counts: Counts
    totals: dict[str, int]
    sources: dict[str, SourceStatus]
    discovered_devices: list[str]
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

    return app
