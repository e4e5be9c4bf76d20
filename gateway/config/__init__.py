"""Configuration: one YAML file, environment overrides, secrets from files, validated once.

The result is a frozen :class:`Config`; components take the typed pieces they need as keyword
arguments and never see the raw mapping. Every problem is reported at once, each naming the
key (``mqtt.port``), what is wrong, and where the value came from when it was an environment
variable, so a technician can fix a file in one pass (``garden-gateway check-config``).

Environment overrides: ``GARDEN_GATEWAY_<KEY>`` with ``__`` between levels, for example
``GARDEN_GATEWAY_MQTT__PORT=1884`` or ``GARDEN_GATEWAY_SUBSCRIPTIONS__0__TOPIC=garden/#``.
Values are read as YAML scalars (``1884`` is a number, ``true`` a boolean).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from devices import serial_lines
from devices.formats import FORMATS
from devices.modbus import Block
from gateway.config.alerts import AlertsConfig
from gateway.config.polder import PolderConfig, migrate_pages_polder
from gateway.config.polder import SecondSensor as SecondSensor
from gateway.config.polder import Thresholds as Thresholds
from gateway.core.errors import ConfigError

ENV_PREFIX = "GARDEN_GATEWAY_"
# Secrets that may come from the environment or from a `<key>_file` instead of the YAML file.
SECRETS = (("mqtt", "password"), ("influx", "password"), ("influx", "token"),
           ("api", "operator_token"))
# Identifiers end up in MQTT topics and InfluxDB tags: keep them to a safe alphabet.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# Where an installed gateway keeps its config (install.sh): every command's --config default.
DEFAULT_CONFIG_PATH = Path("/etc/garden-gateway/config.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewaySection(_Model):
    id: str = Field(pattern=_ID, description="This gateway's id, unique in the regency")
    site: str = Field(pattern=_ID, description="The park this gateway serves")


class TlsConfig(_Model):
    ca_file: Path | None = Field(
        None, description="CA certificate(s) that verify the broker's certificate; none: the "
        "system's CA store")
    cert_file: Path | None = Field(
        None, description="Client certificate, for a broker that asks for one")
    key_file: Path | None = Field(
        None, description="The client certificate's private key (when not in cert_file)")
    insecure: bool = Field(
        False, description="Accept any certificate: no chain or host name check (testing only)"
    )


class MqttConfig(_Model):
    host: str = Field("127.0.0.1", description="The MQTT broker's host name or address")
    port: int = Field(1883, ge=1, le=65535, description="The broker's port")
    username: str | None = Field(None, description="Broker account; none: connect anonymously")
    password: SecretStr | None = Field(
        None, description="The account's password; give it as GARDEN_GATEWAY_MQTT__PASSWORD "
        "or password_file, not in the YAML")
    password_file: Path | None = Field(
        None, description="File holding the broker password (read at start, stripped)")
    client_id: str | None = Field(
        None, pattern=_ID, description="MQTT client id; none: garden-gateway-<gateway.id>. "
        "Must stay the same: the broker keeps the persistent session under it")
    tls: TlsConfig | None = Field(None, description="TLS to the broker; none: plain TCP")
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description='MQTT version: "5" or "3.1.1"; both keep a persistent session')
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval")
    # MQTT 5: 0 would make the broker discard the session on disconnect (nothing queued).
    session_expiry_s: int = Field(
        7 * 24 * 3600, ge=60, description="MQTT 5: how long the broker keeps our session and "
        "queue while the gateway is away")
    # How many unacknowledged QoS 1 messages the broker may have in flight to us.
    receive_maximum: int = Field(
        4000, ge=1, le=65535, description="Unacknowledged QoS 1 messages in flight to the "
        "gateway (asked of the broker with MQTT 5); reading pauses while this many wait")
    reconnect_min_s: float = Field(0.5, gt=0, description="First wait before reconnecting")
    reconnect_max_s: float = Field(
        30.0, gt=0, description="Longest wait between reconnects (exponential, with jitter)")
    connect_timeout_s: float = Field(
        10.0, gt=0, description="How long one connection attempt may take")


class BrokerConfig(_Model):
    """The park's Mosquitto accounts and ACL, as ``garden-gateway devices`` manages them."""

    accounts_file: Path = Field(
        Path("/etc/garden-gateway/broker-accounts.yaml"), description="The broker accounts "
        "(one per device): the source of truth the ACL file is made from")
    password_file: Path = Field(
        Path("/etc/mosquitto/garden.passwd"), description="Mosquitto's password_file: the "
        "accounts' password hashes")
    acl_file: Path = Field(
        Path("/etc/mosquitto/garden.acl"), description="Mosquitto's acl_file, rewritten from "
        "accounts_file; never edit it by hand")
    enforce_file: Path = Field(
        Path("/etc/mosquitto/conf.d/garden-acl.conf"), description="The Mosquitto config "
        "snippet that names acl_file: while it exists the ACL is enforced "
        "(`garden-gateway devices enforce` writes it)")
    reload: Literal["systemctl", "pid_file", "none"] = Field(
        "systemctl", description="How Mosquitto is told to re-read the files: `systemctl "
        "reload <service>`, SIGHUP to the pid in pid_file, or not at all")
    service: str = Field("mosquitto", pattern=_ID,
                         description="The broker's systemd unit (reload: systemctl)")
    pid_file: Path = Field(
        Path("/run/mosquitto/mosquitto.pid"), description="The broker's pid file "
        "(reload: pid_file)")


class InfluxConfig(_Model):
    enabled: bool = Field(True, description="False: readings stay in the spool (and the "
                          "local history) until it is enabled; nothing is sent")
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://[^\s/]+(/.*)?$",
                     description="InfluxDB's base URL")
    api: Literal["v1", "v2"] = Field(
        "v1", description="v1: /write (InfluxDB 1.x, the v1 API of 2.x/3.x); v2: /api/v2/write "
        "with org, bucket and token")
    database: str = Field("garden", description="v1: the database written to")
    retention_policy: str | None = Field(
        None, description="v1: the retention policy written to; none: the database's default")
    username: str | None = Field(None, description="v1: user for basic auth; none: no auth")
    password: SecretStr | None = Field(
        None, description="v1: the user's password; give it as GARDEN_GATEWAY_INFLUX__PASSWORD "
        "or password_file, not in the YAML")
    password_file: Path | None = Field(
        None, description="File holding the InfluxDB password (read at start, stripped)")
    org: str | None = Field(None, description="v2: the organisation (required with api v2)")
    bucket: str | None = Field(None, description="v2: the bucket (required with api v2)")
    token: SecretStr | None = Field(
        None, description="v2: the API token; give it as GARDEN_GATEWAY_INFLUX__TOKEN or "
        "token_file, not in the YAML")
    token_file: Path | None = Field(
        None, description="File holding the InfluxDB token (read at start, stripped)")
    batch_size: int = Field(5000, ge=1, le=100_000, description="Lines per write at most")
    flush_interval_s: float = Field(
        1.0, gt=0, le=3600, description="A partial batch is sent once its oldest line waited "
        "this long")
    # A burst's partial batch is sent once nothing new arrived for this long (the burst has
    # ended), instead of waiting out flush_interval_s; a trickle waits; null: always wait.
    quiet_flush_s: float | None = Field(
        0.2, gt=0, le=3600, description="A partial batch of 100 rows or more (a burst's tail) "
        "is also sent once nothing new came for this long; fewer wait for flush_interval_s; "
        "null: off")
    timeout_s: float = Field(15.0, gt=0, description="HTTP timeout of one request to InfluxDB")
    gzip: bool = Field(True, description="Compress the written batches with gzip")
    create_database: bool = Field(
        True, description="v1: create the database when InfluxDB says it is missing (needs "
        "an admin user); false: wait in state database_missing")
    backoff_min_s: float = Field(
        1.0, gt=0, description="First wait after a failed write (network, 429, 5xx)")
    backoff_max_s: float = Field(
        60.0, gt=0, description="Longest wait between retries (exponential, with jitter; "
        "never shorter than Retry-After)")
    # After 401/403 the forwarder waits this long before trying again, so a fixed credential
    # resumes delivery without a restart.
    auth_retry_s: float = Field(
        30.0, gt=0, description="After 401/403: wait this long, then try again")

    @model_validator(mode="after")
    def _v2_needs_bucket(self) -> InfluxConfig:
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("api v2 needs influx.org and influx.bucket")
        return self


class SpoolConfig(_Model):
    max_bytes: int = Field(
        512 * 1024 * 1024, ge=64 * 1024, description="Size bound of the spool on disk (the "
        "unsent lines, and the file with its WAL); beyond it the oldest are evicted and counted")
    min_free_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Free space the spool leaves on the card (the "
        "filesystem of data_dir): under it the spool stops growing and evicts its oldest rows, "
        "counted, before the card is full; 0: no reserve")
    commit_interval_s: float = Field(
        0.05, gt=0, le=5, description="Readings are committed in one transaction this often; "
        "QoS 1 messages are acknowledged after it")
    # Readings no one can be asked for again (serial, Modbus, MQTT QoS 0): a power cut loses at
    # most this much of them; longer means fewer fsyncs (CPU, SD card wear).
    unacked_commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="Commit interval for readings without an acknowledgement "
        "(serial, Modbus, MQTT QoS 0) when no QoS 1 message joins their batch")
    commit_max_readings: int = Field(
        5000, ge=1, description="A commit starts sooner once this many readings wait")
    dead_letter_max_rows: int = Field(
        10_000, ge=1, description="Rows kept in the dead_letter table (input the gateway could "
        "not read); the oldest go first")
    quarantine_max_rows: int = Field(
        10_000, ge=1, description="Rows kept in the quarantine table (lines InfluxDB or the "
        "time checks refused); the oldest go first")


class ClockConfig(_Model):
    """Clock without RTC (gateway/pipeline/timesync.py): when the gateway's own stamps are held."""

    # auto: hold while the kernel says the clock is unsynchronised (adjtimex), or while it is
    # before min_valid_time; yes: also while the kernel cannot say; no: min_valid_time only.
    require_sync: Literal["auto", "yes", "no"] = Field(
        "auto", description="When the wall clock is believed. auto: after min_valid_time and "
        "the kernel does not say unsynchronised; yes: the kernel says synchronised; no: "
        "min_valid_time only")
    # No point is ever sent before this (a clock never set); the build's floor by default.
    min_valid_time: datetime = Field(
        datetime(2026, 1, 1, tzinfo=UTC), description="No point before this is ever sent (a "
        "date or ISO 8601 time; UTC when no zone)")
    # A device's time further ahead than this of a synchronised clock is refused.
    max_future_s: float = Field(
        86_400.0, gt=0, description="A device time further ahead of a synchronised clock is "
        "refused (quarantined)")
    check_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the clock is asked while it is not believed")
    synced_check_interval_s: float = Field(
        60.0, gt=0, le=3600, description="How often the clock is asked once it is believed")
    held_max_rows: int = Field(
        100_000, ge=1, description="Lines held for the clock at most; the oldest are dropped "
        "and counted (held_evicted)")
    unsynced_max_rows: int = Field(
        100_000, ge=1, description="Lines kept apart (held in an earlier boot, never sent) at "
        "most; the oldest are dropped and counted")

    @field_validator("require_sync", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare yes/no as a boolean.
        if isinstance(value, bool):
            return "yes" if value else "no"
        return value

    @field_validator("min_valid_time", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @property
    def min_valid_ns(self) -> int:
        t = self.min_valid_time
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return int(t.timestamp()) * 10**9 + t.microsecond * 1000

    @property
    def max_future_ns(self) -> int:
        return round(self.max_future_s * 1e9)


class LivenessConfig(_Model):
    # Offline after this many expected reports (a device's interval_s) did not come.
    missed_intervals: float = Field(
        3.0, ge=1, le=1000, description="A device is offline once this many of its expected "
        "reports (every interval_s) did not come")
    # A device that says itself "offline" (its last will) must stay so this long before an
    # outage is recorded: a quick reconnect is not an outage (flapping damped).
    hold_s: float = Field(
        60.0, ge=0, le=86400, description="A device that says it is offline (its last will) is "
        "marked offline only after staying so this long")
    # The expected interval of a discovered device (not in the device list).
    default_interval_s: float = Field(
        60.0, gt=0, description="Expected report interval of a discovered device")
    # device_status points for every device, besides one on every transition.
    report_interval_s: float = Field(
        60.0, ge=1, le=86400, description="A device_status point for every device this often "
        "(and one on every transition)")
    # The gateway notes it is alive this often; after a power cut its outage is counted
    # from the last note.
    heartbeat_s: float = Field(
        30.0, ge=1, le=3600, description="The gateway notes it is alive this often; after a "
        "power cut its own outage starts at the last note")
    # Publish each device's state (retained) on garden/<site>/<device>/state, and the
    # gateway's birth and last will on garden/<site>/gateway/<id>/status.
    publish_mqtt: bool = Field(
        True, description="Publish device states, the park's summary and the gateway's birth "
        "and last will on MQTT (retained)")
    summary_min_interval_s: float = Field(
        5.0, ge=1, le=3600, description="The park's summary (garden/<site>/summary) goes out "
        "when it changes, at most this often, and at least every report_interval_s")


class WifiConfig(_Model):
    # Readings of devices of this kind (or, for unlisted devices, this measurement) are APs'.
    kind: str = Field(
        "wifi_ap", description="Devices of this kind (unlisted devices: readings of this "
        "measurement) are access points")
    # The radios: what residents use. lo, eth0, br-lan are not counted.
    interfaces: tuple[str, ...] = Field(
        ("wlan*", "phy*", "ath*", "wifi*"), description="Interfaces counted (shell patterns): "
        "the radios; lo, eth0, br-lan are not")
    # Local days for the daily totals and distinct clients: WITA.
    utc_offset_minutes: int = Field(
        480, ge=-720, le=840, description="Local time for the daily totals and distinct "
        "clients (480: WITA)")
    # What an AP can really carry: a counter going down is a 32-bit wrap only if the implied
    # traffic fits under this, else the AP rebooted.
    max_rate_bps: float = Field(
        1e9, gt=0, description="What an AP can carry, bits/s: tells a counter wrap from a "
        "reboot; a faster rise is a gap")
    max_gap_s: float = Field(
        3600.0, gt=0, description="A silence longer than this between samples is a gap: "
        "nothing counted")
    # A rate or client count older than this is not "now".
    fresh_s: float = Field(180.0, gt=0, description='Rates and client counts older than this '
                           'are not "now"')
    report_interval_s: float = Field(
        60.0, ge=1, le=86400, description="A wifi_usage point per AP and a wifi_site_usage "
        "point this often")


class IngestConfig(_Model):
    max_payload_bytes: int = Field(
        64 * 1024, ge=16, description="Larger payloads are dead-lettered as oversized")
    allow_discovery: bool = Field(
        True, description="Accept devices that are not in the device list, as discovered"
    )
    max_discovered: int = Field(
        300, ge=1, le=100_000, description="Discovered devices kept at most; at the cap a new "
        "one takes the place of the one heard least recently (listed devices never count)")
    discovery_per_minute: float = Field(
        60.0, gt=0, description="New ids taken on at most this many a minute (a bucket that "
        "refills evenly); beyond it they are refused, counted, and tried again next message")
    forget_discovered_after_s: float = Field(
        7 * 86400.0, gt=0, description="A discovered device not heard this long is forgotten "
        "(listed devices never are)")
    log_interval_s: float = Field(60.0, gt=0, description="At most one log line per kind")


class ApiTlsConfig(_Model):
    """HTTPS on the gateway itself: the operator side is served only here."""

    enabled: bool = Field(True, description="Serve HTTPS; plain HTTP then keeps only the "
                          "public pages and API, operator paths redirect here")
    port: int = Field(8443, ge=0, le=65535, description="The HTTPS port")
    cert_file: Path | None = Field(None, description="PEM certificate (chain) to serve")
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    self_signed: bool = Field(
        False, description="Make an ECDSA key and certificate under data_dir/tls on first start "
        "(names and addresses of this host); its SHA-256 fingerprint is logged and shown by "
        "doctor")
    hsts_max_age_s: int = Field(31536000, ge=0, description="Strict-Transport-Security max-age "
                                "sent on HTTPS answers (0: none)")

    @model_validator(mode="after")
    def _one_source(self) -> ApiTlsConfig:
        if self.enabled:
            if self.self_signed and (self.cert_file or self.key_file):
                raise ValueError("give cert_file and key_file, or self_signed: true, not both")
            if not self.self_signed and (self.cert_file is None or self.key_file is None):
                raise ValueError("give cert_file and key_file, or self_signed: true")
        return self


class ApiConfig(_Model):
    enabled: bool = Field(True, description="Serve the status API and the pages")
    host: str = Field(
        "127.0.0.1", description="Address the API listens on; 0.0.0.0: every interface (the "
        "park's LAN)")
    port: int = Field(8080, ge=0, le=65535, description="The API's TCP port")
    operator_token: SecretStr | None = Field(
        None, description="Opens /operator and the operator endpoints; without one they stay "
        "closed (401). Prefer GARDEN_GATEWAY_API__OPERATOR_TOKEN or operator_token_file")
    operator_token_file: Path | None = Field(
        None, description="File holding the operator token (read at start, stripped)")
    session_max_age_s: int = Field(12 * 3600, ge=60, le=30 * 86400,
                                   description="How long a browser stays signed in")
    token_attempts: int = Field(
        5, ge=1, le=1000, description="Wrong operator tokens one client address may give "
        "within token_window_s; further attempts from it get 429 with Retry-After")
    token_window_s: float = Field(
        300.0, gt=0, le=86400, description="The window (seconds) of token_attempts; an "
        "address stays throttled until the window that began with its first wrong token ends")
    cors_origins: tuple[str, ...] = Field(
        (), description="Origins allowed to call the API from a browser; none by default")
    metrics_public: bool = Field(False, description="Serve /metrics without the token")
    pages: bool = Field(True, description="Serve the pages (/ and /operator)")
    sse_keepalive_s: float = Field(
        15.0, gt=0, le=300, description="A comment line on an idle event stream this often, so "
        "phones and proxies keep it open")
    sse_max_clients: int = Field(
        50, ge=1, le=10_000, description="Event streams open at once at most; the next gets "
        "503 with Retry-After")
    tls: ApiTlsConfig | None = Field(
        None, description="HTTPS (see api.tls.*); none: plain HTTP only, as before")
    operator_over_http: bool = Field(
        False, description="With TLS on, still serve operator paths on plain HTTP (a management "
        "network only: the token then travels in clear)")
    max_connections: int | None = Field(
        None, ge=8, description="Connections open at once at most; none: the open-file limit "
        "minus a reserve for the gateway's own files")
    max_connections_per_client: int = Field(
        64, ge=1, description="Connections one client address may hold at once")
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A connection that has not sent a complete request "
        "head this long after connecting (or after its last answer) is closed")
    body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A request body must arrive within this long")
    keep_alive_s: float = Field(5.0, gt=0, le=300,
                                description="Idle keep-alive connections close after this")
    max_header_bytes: int = Field(16384, ge=1024, le=1048576,
                                  description="A request head larger than this is refused (431)")
    max_body_bytes: int = Field(4096, ge=256, le=1048576,
                                description="The largest request body (POST /api/v1/session); "
                                "larger ones get 413 before they are read")

    @field_validator("operator_token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("the operator token must be at least 16 characters (try: "
                             "openssl rand -hex 16)")
        return v


class HistoryTier(_Model):
    step_s: int = Field(ge=1, le=86400, description="Bucket width")
    keep_s: int = Field(ge=60, description="How long buckets are kept")


class HistoryConfig(_Model):
    """The gateway's own rollups for the pages' charts (works with InfluxDB down or remote)."""

    enabled: bool = Field(True, description="Keep the rollups in data_dir/history.sqlite3")
    tiers: tuple[HistoryTier, ...] = Field(
        (HistoryTier(step_s=60, keep_s=48 * 3600), HistoryTier(step_s=900, keep_s=30 * 86400)),
        min_length=1, description="Bucket sizes, finer and shorter first; a range is answered "
        "from the finest tier that keeps it")
    flush_interval_s: float = Field(60.0, gt=0, le=3600,
                                    description="Seconds between writes to history.sqlite3")
    max_series: int = Field(
        5000, ge=1, description="Device and field pairs kept at most; more are refused and "
        "counted")

    @model_validator(mode="after")
    def _finer_first(self) -> HistoryConfig:
        for a, b in zip(self.tiers, self.tiers[1:], strict=False):
            if not (a.step_s < b.step_s and a.keep_s <= b.keep_s):
                raise ValueError("tiers go from finer and shorter to coarser and longer")
        return self


class GardenPage(_Model):
    device: str = Field(pattern=_ID, description="The garden sensor shown")
    temperature_field: str = Field("temperature_c", description="Its temperature field (°C)")
    humidity_field: str = Field("humidity_pct", description="Its humidity field (%)")


class PagesConfig(_Model):
    """What the residents' page shows for this park."""

    name: str = Field("", description="The park's name; the site id when empty")
    garden: GardenPage | None = Field(
        None, description="Garden temperature and humidity; none: not shown")
    # Older than this, a value is shown as stale (no level, no Wi-Fi verdict).
    fresh_s: float = Field(
        900.0, gt=0, description="Older values are shown as stale (no level, no Wi-Fi verdict)")


class SubscriptionConfig(_Model):
    topic: str = Field(min_length=1, description="MQTT topic filter (+ and # allowed)")
    format: str = Field(
        description="How payloads are read: native, collectd, tasmota, esphome, influx, json")
    name: str | None = Field(
        None, description="The source's name in the status and errors; none: the topic")
    options: dict[str, Any] = Field(
        default_factory=dict, description="The format's options; each format has its own")

    @property
    def source(self) -> str:
        return self.name or self.topic

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; known: {', '.join(sorted(FORMATS))}")
        return value


class SerialSourceConfig(_Model):
    """A line-printing sensor on a serial port (see devices/serial_lines.py for options)."""

    name: str = Field(pattern=_ID, description="The source's name in the status and errors")
    port: str = Field(min_length=1, description="Prefer /dev/serial/by-id/... (stable)")
    baudrate: int = Field(9600, gt=0, description="The sensor's baud rate (8N1)")
    max_line_bytes: int = Field(
        512, ge=16, le=65536, description="Longer lines are dropped and counted (overlong)")
    reopen_min_s: float = Field(
        0.5, gt=0, description="First wait before reopening a port that failed or vanished")
    reopen_max_s: float = Field(
        30.0, gt=0, description="Longest wait between reopen attempts (exponential)")
    interval_s: float | None = Field(
        None, gt=0, description="How often the sensor prints a line: liveness expects one "
        "this often from the source's fixed device (options.device) unless the device list "
        "sets its interval_s; none: the device list's, else 60")
    options: dict[str, Any] = Field(
        default_factory=dict, description="How the lines are read: format, device, checksum, "
        "...")


class ModbusSlaveConfig(_Model):
    """A slave on a Modbus RTU bus and its register map (see devices/modbus.py)."""

    device: str = Field(pattern=_ID, description="Device id: the 'device' tag in InfluxDB")
    unit: int = Field(ge=1, le=247, description="The slave's unit address on the bus")
    interval_s: float = Field(10.0, gt=0, description="Seconds between polls of this slave")
    measurement: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                             description="InfluxDB measurement (a block may set its own)")
    blocks: tuple[Block, ...] = Field(min_length=1, description="Read requests, in order")


class ModbusBusConfig(_Model):
    """One RS485 bus (one USB-RS485 adapter) and the slaves polled on it in turn."""

    name: str = Field(pattern=_ID, description="The bus's name in the status and errors")
    port: str = Field(min_length=1, description="Prefer /dev/serial/by-id/... (stable)")
    baudrate: int = Field(9600, gt=0, description="The bus's baud rate")
    bytesize: Literal[7, 8] = Field(8, description="Data bits")
    parity: Literal["N", "E", "O"] = Field("N", description="Parity: none, even or odd")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits")
    timeout_s: float = Field(1.0, gt=0, le=30,
                             description="How long to wait for a complete answer")
    turnaround_s: float = Field(0.02, ge=0, le=5,
                                description="Quiet time on the bus before each request")
    echo: bool = Field(False, description="The adapter echoes what it sends (some do)")
    offline_after: int = Field(3, ge=1, description="Polls without an answer until offline")
    offline_retry_s: float = Field(30.0, gt=0, description="Poll interval while offline")
    reopen_min_s: float = Field(
        0.5, gt=0, description="First wait before reopening a port that failed or vanished")
    reopen_max_s: float = Field(
        30.0, gt=0, description="Longest wait between reopen attempts (exponential)")
    slaves: tuple[ModbusSlaveConfig, ...] = Field(
        description="The slaves polled on this bus, in turn (none: a bus that only carries an "
        "output, such as a siren's relay board, polder.siren)")

    @model_validator(mode="after")
    def _unique_slaves(self) -> ModbusBusConfig:
        units: set[int] = set()
        devices: set[str] = set()
        for slave in self.slaves:
            if slave.unit in units:
                raise ValueError(f"unit {slave.unit} appears twice on bus {self.name!r}")
            if slave.device in devices:
                raise ValueError(f"device {slave.device!r} appears twice on bus {self.name!r}")
            units.add(slave.unit)
            devices.add(slave.device)
        return self


class DeviceConfig(_Model):
    id: str = Field(pattern=_ID, description="The device id: the 'device' tag in InfluxDB")
    name: str = Field("", description="A name people read (pages, alerts); empty: the id")
    kind: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                             description="InfluxDB measurement, e.g. wifi_ap, polder")
    site: str | None = Field(None, pattern=_ID,
                             description="The device's park; none: gateway.site")
    zone: str | None = Field(
        None, description="Where in the park (free text, shown in states and alerts)")
    interval_s: float | None = Field(
        None, gt=0, description="How often the device reports: liveness expects a report "
        "this often; none: its poll interval when a Modbus bus or serial source reads it "
        "(the slave's interval_s, the source's interval_s), else 60")
    source: str = Field(
        "", description="Where its readings come from, for people (shown in /api/v1/devices)")


class Config(_Model):
    data_dir: Path = Field(
        description="Where spool.sqlite3, state.sqlite3 and history.sqlite3 live; a relative "
        "path is taken from the config file's folder")
    gateway: GatewaySection = Field(description="This gateway and its park")
    mqtt: MqttConfig = Field(MqttConfig(), description="The MQTT broker the gateway reads")
    broker: BrokerConfig = Field(
        BrokerConfig(), description="The park broker's accounts and ACL (`garden-gateway "
        "devices`)")
    influx: InfluxConfig = Field(InfluxConfig(), description="Where readings are delivered")
    spool: SpoolConfig = Field(
        SpoolConfig(), description="The durable queue on disk (data_dir/spool.sqlite3)")
    clock: ClockConfig = Field(
        ClockConfig(), description="Clock without RTC: when the gateway's own times are "
        "believed")
    ingest: IngestConfig = Field(IngestConfig(), description="What input is accepted")
    liveness: LivenessConfig = Field(
        LivenessConfig(), description="When devices count as online or offline")
    alerts: AlertsConfig = Field(
        AlertsConfig(), description="Notifications when devices go down and recover")
    wifi: WifiConfig = Field(WifiConfig(), description="The access points' usage figures")
    api: ApiConfig = Field(ApiConfig(), description="The status API and the pages")
    history: HistoryConfig = Field(HistoryConfig(), description="The charts' own rollups")
    pages: PagesConfig = Field(PagesConfig(), description="What the residents' page shows")
    polder: tuple[PolderConfig, ...] = Field(
        (), description="The polders watched for flood warnings (the first is on the "
        "residents' page); pages.polder of older configs is read as the one entry")
    subscriptions: tuple[SubscriptionConfig, ...] = Field(
        (), description="MQTT topics read, each with its format")
    devices: tuple[DeviceConfig, ...] = Field(
        (), description="The park's known devices (others are discovered)")
    serial: tuple[SerialSourceConfig, ...] = Field(
        (), description="Line-printing sensors on serial ports")
    modbus: tuple[ModbusBusConfig, ...] = Field(
        (), description="Modbus RTU buses (USB-RS485 adapters) and their slaves")
    shutdown_grace_s: float = Field(
        10.0, gt=0, le=300, description="On SIGTERM, how long the gateway may spend delivering "
        "the spool")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The lowest level logged to stdout (the journal)")

    @model_validator(mode="after")
    def _unique_devices(self) -> Config:
        seen: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device id {d.id!r} appears twice in devices")
            seen.add(d.id)
        return self

    @model_validator(mode="before")
    @classmethod
    def _old_pages_polder(cls, data: Any) -> Any:
        """``pages.polder`` of older configs, also when validated without load_config (which
        moves it first, with the warning)."""
        if isinstance(data, dict) and isinstance(data.get("pages"), dict) and (
                "polder" in data["pages"]):
            data = {**data, "pages": dict(data["pages"])}
            migrate_pages_polder(data)
        return data

    @model_validator(mode="after")
    def _polders_apart(self) -> Config:
        seen: set[tuple[str, str]] = set()
        buses = {b.name for b in self.modbus}
        for i, p in enumerate(self.polder):
            if p.siren is not None and p.siren.kind == "modbus_coil" and (
                    p.siren.bus not in buses):
                raise ValueError(f"polder.{i}.siren.bus: no modbus bus named {p.siren.bus!r} "
                                 f"(buses: {', '.join(sorted(buses)) or 'none'})")
            sensors = [(p.device, p.field)] + ([(p.second.device, p.second.field)]
                                               if p.second else [])
            for sensor in sensors:
                if sensor in seen:
                    raise ValueError(f"polder.{i}: {sensor[0]}.{sensor[1]} already measures "
                                     "another polder")
                seen.add(sensor)
        return self

    @model_validator(mode="after")
    def _one_source_per_port(self) -> Config:
        names: dict[str, str] = {}
        ports: dict[str, str] = {}
        for kind, items in (("serial", self.serial), ("modbus", self.modbus)):
            for item in items:
                here = f"{kind} {item.name!r}"
                if item.name in names:
                    raise ValueError(f"{here}: the name is already used by {names[item.name]}")
                if item.port in ports:
                    raise ValueError(f"{here}: port {item.port} is already read by "
                                     f"{ports[item.port]}; one source per port")
                names[item.name] = ports[item.port] = here
        return self

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"garden-gateway-{self.gateway.id}"

    def serial_options(self, index: int) -> serial_lines.Options:
        """The typed options of serial source ``index`` (validated at load)."""
        return TypeAdapter(serial_lines.Options).validate_python(self.serial[index].options)

    def decoder_options(self, index: int) -> Any:
        """The typed options object of subscription ``index`` (validated at load)."""
        sub = self.subscriptions[index]
        return TypeAdapter(FORMATS[sub.format].options).validate_python(sub.options)


class LoadedConfig:
    """A validated config plus the warnings worth showing a technician."""

    def __init__(self, config: Config, warnings: list[str]) -> None:
        self.config = config
        self.warnings = warnings


def _parse_env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def apply_env(raw: dict[str, Any], env: Mapping[str, str], prefix: str = ENV_PREFIX
              ) -> dict[str, tuple[str, ...]]:
    """Apply ``GARDEN_GATEWAY_*`` (``prefix``) overrides to ``raw`` in place; return var name
    → key path."""
    applied: dict[str, tuple[str, ...]] = {}
    for var in sorted(env):
        if not var.startswith(prefix):
            continue
        path = tuple(p.lower() for p in var[len(prefix):].split("__"))
        if not all(path):
            continue
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError([f"{var}: {'.'.join(path[:i])} is not a mapping"])
            node = node.setdefault(part, {})
        last = path[-1]
        value = _parse_env_value(env[var])
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError([f"{var}: {'.'.join(path[:-1])} is not a mapping"])
        applied[var] = path
    return applied


def _alert_targets(raw: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    alerts = raw.get("alerts")
    targets = alerts.get("targets") if isinstance(alerts, dict) else None
    if not isinstance(targets, list):
        return []
    return [(i, t) for i, t in enumerate(targets) if isinstance(t, dict)]


def _read_secret_files(raw: dict[str, Any], base: Path, problems: list[str]) -> None:
    # A Telegram bot token from a file: alerts.targets[i].bot_token_file (read, then dropped).
    for i, target in _alert_targets(raw):
        if target.get("bot_token_file") is None:
            continue
        where = f"alerts.targets.{i}"
        file_value = target.pop("bot_token_file")
        if target.get("bot_token") is not None:
            problems.append(f"{where}.bot_token: set both directly and through bot_token_file; "
                            "keep one")
            continue
        path = Path(str(file_value))
        if not path.is_absolute():
            path = base / path
        try:
            target["bot_token"] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}.bot_token_file: cannot read {path}: {exc.strerror}")
    for section, key in SECRETS:
        sec = raw.get(section)
        if not isinstance(sec, dict):
            continue
        file_key = f"{key}_file"
        if sec.get(file_key) is None:
            continue
        if sec.get(key) is not None:
            problems.append(f"{section}.{key}: set both directly and through {file_key}; keep one")
            continue
        path = Path(str(sec[file_key]))
        if not path.is_absolute():
            path = base / path
        try:
            sec[key] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{section}.{file_key}: cannot read {path}: {exc.strerror}")


def _describe(err: Mapping[str, Any], env_paths: dict[tuple[str, ...], str],
              known: list[str] | None = None) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key"
        if known is None:
            known = _keys_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if "input" in err and not isinstance(err["input"], dict | list):
            shown = "***" if any(s in key for s in ("password", "token")) else repr(err["input"])
            msg += f" (got {shown})"
    origin = env_paths.get(tuple(p.lower() for p in loc))
    if origin:
        msg += f" [from environment variable {origin}]"
    return f"{key}: {msg}"


def _fields_of(kind: Any) -> dict[str, Any] | None:
    """Field name → annotation of a pydantic model or a dataclass (Block, Register)."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {name: f.annotation for name, f in kind.model_fields.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return {f.name: hints[f.name] for f in dataclasses.fields(kind)}
    return None


def _keys_at(loc: tuple[str, ...]) -> list[str]:
    """The keys allowed at ``loc`` in the config (for "did you mean")."""
    fields = _fields_of(Config)
    for part in loc:
        if part.isdigit():
            continue
        ann = fields.get(part) if fields is not None else None
        if ann is None:
            return []
        candidates = [ann, *typing.get_args(ann)]
        candidates += [inner for c in candidates for inner in typing.get_args(c)]
        fields = next((f for c in candidates if (f := _fields_of(c)) is not None), None)
    return list(fields or ())


def load_config(path: Path, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read, override, validate. Raises :class:`ConfigError` listing every problem."""
    env = os.environ if env is None else env
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys"])
    return validate_raw(raw, env=env, base=path.parent)


def validate_raw(
    raw: dict[str, Any], *, env: Mapping[str, str], base: Path
) -> LoadedConfig:
    warnings: list[str] = []
    for section, key in SECRETS:
        sec = raw.get(section)
        if isinstance(sec, dict) and sec.get(key) is not None:
            warnings.append(
                f"{section}.{key} is written in the YAML file; prefer "
                f"{ENV_PREFIX}{section.upper()}__{key.upper()} or {section}.{key}_file"
            )
    for i, target in _alert_targets(raw):
        if target.get("bot_token") is not None:
            warnings.append(
                f"alerts.targets.{i}.bot_token is written in the YAML file; prefer "
                f"{ENV_PREFIX}ALERTS__TARGETS__{i}__BOT_TOKEN or alerts.targets.{i}.bot_token_file"
            )
    applied = apply_env(raw, env)
    env_paths = {p: v for v, p in applied.items()}
    moved = migrate_pages_polder(raw)
    if moved is not None:
        warnings.append(moved)
    problems: list[str] = []
    _read_secret_files(raw, base, problems)
    if isinstance(raw.get("data_dir"), str) and not Path(raw["data_dir"]).is_absolute():
        raw["data_dir"] = str(base / raw["data_dir"])
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose only item is invalid is also "too short": say only the first thing.
        locs = [tuple(e["loc"]) for e in errors]
        problems.extend(
            _describe(e, env_paths) for e in errors
            if not (e["type"] == "too_short"
                    and any(len(o) > len(e["loc"]) and o[:len(e["loc"])] == tuple(e["loc"])
                            for o in locs)))
    for section, options_of in (
        ("subscriptions", lambda item: FORMATS[item["format"]].options
         if item.get("format") in FORMATS else None),
        ("serial", lambda item: serial_lines.Options),
    ):
        items = raw.get(section)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            options_type = options_of(item) if isinstance(item, dict) else None
            if options_type is None:
                continue
            try:
                TypeAdapter(options_type).validate_python(item.get("options") or {})
            except ValidationError as exc:
                known = [f.name for f in dataclasses.fields(options_type)]
                for e in exc.errors():
                    e2 = dict(e)
                    e2["loc"] = (section, i, "options", *e["loc"])
                    problems.append(_describe(e2, env_paths, known if len(e["loc"]) == 1
                                              else None))
    if moved is not None and raw.get("polder") and "pages.polder" in moved.split(":")[0]:
        # Name the key the technician wrote, not the one it was moved to.
        problems = [f"pages.polder{p[len('polder.0'):]}" if p.startswith("polder.0") else p
                    for p in problems]
    if problems or config is None:
        raise ConfigError(problems)
    if config.mqtt.password is not None and not config.mqtt.username:
        warnings.append("mqtt.password is set but mqtt.username is not; it will not be used")
    if config.api.enabled and config.api.operator_over_http:
        warnings.append("api.operator_over_http is true: the operator token and session travel "
                        "in clear on plain HTTP; only on a management network")
    return LoadedConfig(config, warnings)
