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
from gateway.core.errors import ConfigError

ENV_PREFIX = "GARDEN_GATEWAY_"
# Secrets that may come from the environment or from a `<key>_file` instead of the YAML file.
SECRETS = (("mqtt", "password"), ("influx", "password"), ("influx", "token"),
           ("api", "operator_token"))
# Identifiers end up in MQTT topics and InfluxDB tags: keep them to a safe alphabet.
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewaySection(_Model):
    id: str = Field(pattern=_ID, description="This gateway's id, unique in the regency")
    site: str = Field(pattern=_ID, description="The park this gateway serves")


class TlsConfig(_Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(
        False, description="Accept any certificate: no chain or host name check (testing only)"
    )


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str | None = Field(None, pattern=_ID)
    tls: TlsConfig | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=3600)
    # MQTT 5: 0 would make the broker discard the session on disconnect (nothing queued).
    session_expiry_s: int = Field(7 * 24 * 3600, ge=60)
    # How many unacknowledged QoS 1 messages the broker may have in flight to us.
    receive_maximum: int = Field(4000, ge=1, le=65535)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)


class InfluxConfig(_Model):
    enabled: bool = Field(True, description="False: readings stay in the spool (and the "
                          "local history) until it is enabled; nothing is sent")
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://[^\s/]+(/.*)?$")
    api: Literal["v1", "v2"] = "v1"
    database: str = "garden"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(1.0, gt=0, le=3600)
    # A partial batch is sent once nothing new arrived for this long (a burst has ended),
    # instead of waiting out flush_interval_s; null: always wait.
    quiet_flush_s: float | None = Field(0.2, gt=0, le=3600)
    timeout_s: float = Field(15.0, gt=0)
    gzip: bool = True
    create_database: bool = True
    backoff_min_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    # After 401/403 the forwarder waits this long before trying again, so a fixed credential
    # resumes delivery without a restart.
    auth_retry_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _v2_needs_bucket(self) -> InfluxConfig:
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("api v2 needs influx.org and influx.bucket")
        return self


class SpoolConfig(_Model):
    max_bytes: int = Field(512 * 1024 * 1024, ge=64 * 1024)
    commit_interval_s: float = Field(0.05, gt=0, le=5)
    # Readings no one can be asked for again (serial, Modbus, MQTT QoS 0): a power cut loses at
    # most this much of them; longer means fewer fsyncs (CPU, SD card wear).
    unacked_commit_interval_s: float = Field(1.0, gt=0, le=60)
    commit_max_readings: int = Field(5000, ge=1)
    dead_letter_max_rows: int = Field(10_000, ge=1)
    quarantine_max_rows: int = Field(10_000, ge=1)


class ClockConfig(_Model):
    """Clock without RTC (gateway/pipeline/timesync.py): when the gateway's own stamps are held."""

    # auto: hold while the kernel says the clock is unsynchronised (adjtimex), or while it is
    # before min_valid_time; yes: also while the kernel cannot say; no: min_valid_time only.
    require_sync: Literal["auto", "yes", "no"] = "auto"
    # No point is ever sent before this (a clock never set); the build's floor by default.
    min_valid_time: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    # A device's time further ahead than this of a synchronised clock is refused.
    max_future_s: float = Field(86_400.0, gt=0)
    check_interval_s: float = Field(1.0, gt=0, le=60)
    synced_check_interval_s: float = Field(60.0, gt=0, le=3600)
    held_max_rows: int = Field(100_000, ge=1)
    unsynced_max_rows: int = Field(100_000, ge=1)

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
    missed_intervals: float = Field(3.0, ge=1, le=1000)
    # A device that says itself "offline" (its last will) must stay so this long before an
    # outage is recorded: a quick reconnect is not an outage (flapping damped).
    hold_s: float = Field(60.0, ge=0, le=86400)
    # The expected interval of a discovered device (not in the device list).
    default_interval_s: float = Field(60.0, gt=0)
    # device_status points for every device, besides one on every transition.
    report_interval_s: float = Field(60.0, ge=1, le=86400)
    # The gateway notes it is alive this often; after a power cut its outage is counted
    # from the last note.
    heartbeat_s: float = Field(30.0, ge=1, le=3600)
    # Publish each device's state (retained) on garden/<site>/<device>/state, and the
    # gateway's birth and last will on garden/<site>/gateway/<id>/status.
    publish_mqtt: bool = True


class WifiConfig(_Model):
    # Readings of devices of this kind (or, for unlisted devices, this measurement) are APs'.
    kind: str = "wifi_ap"
    # The radios: what residents use. lo, eth0, br-lan are not counted.
    interfaces: tuple[str, ...] = ("wlan*", "phy*", "ath*", "wifi*")
    # Local days for the daily totals and distinct clients: WITA.
    utc_offset_minutes: int = Field(480, ge=-720, le=840)
    # What an AP can really carry: a counter going down is a 32-bit wrap only if the implied
    # traffic fits under this, else the AP rebooted.
    max_rate_bps: float = Field(1e9, gt=0)
    max_gap_s: float = Field(3600.0, gt=0)
    # A rate or client count older than this is not "now".
    fresh_s: float = Field(180.0, gt=0)
    report_interval_s: float = Field(60.0, ge=1, le=86400)


class IngestConfig(_Model):
    max_payload_bytes: int = Field(64 * 1024, ge=16)
    allow_discovery: bool = Field(
        True, description="Accept devices that are not in the device list, as discovered"
    )
    log_interval_s: float = Field(60.0, gt=0, description="At most one log line per kind")


class ApiConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    operator_token: SecretStr | None = Field(
        None, description="Opens /operator and the operator endpoints; without one they stay "
        "closed (401). Prefer GARDEN_GATEWAY_API__OPERATOR_TOKEN or operator_token_file")
    operator_token_file: Path | None = None
    session_max_age_s: int = Field(12 * 3600, ge=60, le=30 * 86400,
                                   description="How long a browser stays signed in")
    cors_origins: tuple[str, ...] = Field(
        (), description="Origins allowed to call the API from a browser; none by default")
    metrics_public: bool = Field(False, description="Serve /metrics without the token")
    pages: bool = Field(True, description="Serve the pages (/ and /operator)")
    sse_keepalive_s: float = Field(15.0, gt=0, le=300)
    sse_max_clients: int = Field(50, ge=1, le=10_000)

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

    enabled: bool = True
    tiers: tuple[HistoryTier, ...] = Field(
        (HistoryTier(step_s=60, keep_s=48 * 3600), HistoryTier(step_s=900, keep_s=30 * 86400)),
        min_length=1)
    flush_interval_s: float = Field(60.0, gt=0, le=3600,
                                    description="Seconds between writes to history.sqlite3")
    max_series: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _finer_first(self) -> HistoryConfig:
        for a, b in zip(self.tiers, self.tiers[1:], strict=False):
            if not (a.step_s < b.step_s and a.keep_s <= b.keep_s):
                raise ValueError("tiers go from finer and shorter to coarser and longer")
        return self


class Thresholds(_Model):
    waspada: float
    siaga: float
    awas: float

    @model_validator(mode="after")
    def _rising(self) -> Thresholds:
        if not self.waspada < self.siaga < self.awas:
            raise ValueError("thresholds must rise: waspada < siaga < awas")
        return self


class PolderPage(_Model):
    device: str = Field(pattern=_ID)
    field: str = "level_cm"
    unit: str = "cm"
    thresholds: Thresholds


class GardenPage(_Model):
    device: str = Field(pattern=_ID)
    temperature_field: str = "temperature_c"
    humidity_field: str = "humidity_pct"


class PagesConfig(_Model):
    """What the residents' page shows for this park."""

    name: str = Field("", description="The park's name; the site id when empty")
    polder: PolderPage | None = None
    garden: GardenPage | None = None
    # Older than this, a value is shown as stale (no level, no Wi-Fi verdict).
    fresh_s: float = Field(900.0, gt=0)


class SubscriptionConfig(_Model):
    topic: str = Field(min_length=1)
    format: str
    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

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

    name: str = Field(pattern=_ID)
    port: str = Field(min_length=1, description="Prefer /dev/serial/by-id/... (stable)")
    baudrate: int = Field(9600, gt=0)
    max_line_bytes: int = Field(512, ge=16, le=65536)
    reopen_min_s: float = Field(0.5, gt=0)
    reopen_max_s: float = Field(30.0, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)


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

    name: str = Field(pattern=_ID)
    port: str = Field(min_length=1, description="Prefer /dev/serial/by-id/... (stable)")
    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(1.0, gt=0, le=30,
                             description="How long to wait for a complete answer")
    turnaround_s: float = Field(0.02, ge=0, le=5,
                                description="Quiet time on the bus before each request")
    echo: bool = Field(False, description="The adapter echoes what it sends (some do)")
    offline_after: int = Field(3, ge=1, description="Polls without an answer until offline")
    offline_retry_s: float = Field(30.0, gt=0, description="Poll interval while offline")
    reopen_min_s: float = Field(0.5, gt=0)
    reopen_max_s: float = Field(30.0, gt=0)
    slaves: tuple[ModbusSlaveConfig, ...] = Field(min_length=1)

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
    id: str = Field(pattern=_ID)
    name: str = ""
    kind: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                             description="InfluxDB measurement, e.g. wifi_ap, polder")
    site: str | None = Field(None, pattern=_ID)
    zone: str | None = None
    interval_s: float = Field(60.0, gt=0)
    source: str = ""


class Config(_Model):
    data_dir: Path
    gateway: GatewaySection
    mqtt: MqttConfig = MqttConfig()
    influx: InfluxConfig = InfluxConfig()
    spool: SpoolConfig = SpoolConfig()
    clock: ClockConfig = ClockConfig()
    ingest: IngestConfig = IngestConfig()
    liveness: LivenessConfig = LivenessConfig()
    alerts: AlertsConfig = AlertsConfig()
    wifi: WifiConfig = WifiConfig()
    api: ApiConfig = ApiConfig()
    history: HistoryConfig = HistoryConfig()
    pages: PagesConfig = PagesConfig()
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    serial: tuple[SerialSourceConfig, ...] = ()
    modbus: tuple[ModbusBusConfig, ...] = ()
    shutdown_grace_s: float = Field(10.0, gt=0, le=300)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique_devices(self) -> Config:
        seen: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device id {d.id!r} appears twice in devices")
            seen.add(d.id)
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


def apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Apply ``GARDEN_GATEWAY_*`` overrides to ``raw`` in place; return var name → key path."""
    applied: dict[str, tuple[str, ...]] = {}
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        path = tuple(p.lower() for p in var[len(ENV_PREFIX):].split("__"))
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
    if problems or config is None:
        raise ConfigError(problems)
    if config.mqtt.password is not None and not config.mqtt.username:
        warnings.append("mqtt.password is set but mqtt.username is not; it will not be used")
    return LoadedConfig(config, warnings)
