"""The regency service's config: a small YAML of its own, with ``GARDEN_REGENCY_*`` overrides.

    mqtt:            the central broker, as the gateway's mqtt: section
    data_dir:        where regency.sqlite3 lives
    api:             host, port, operator_token
    name, alerts:    the regency's name in the alerts, and where they go (as the gateway's)
    stale_after_s:   a park with no summary this long is stale
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from gateway.config import ApiTlsConfig, MqttConfig, apply_env
from gateway.config.alerts import AlertsConfig
from gateway.core.errors import ConfigError

ENV_PREFIX = "GARDEN_REGENCY_"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegencyApi(_Model):
    host: str = Field("127.0.0.1", description="Address the API listens on")
    port: int = Field(8090, ge=0, le=65535, description="The API's TCP port")
    operator_token: SecretStr | None = Field(
        None, description="Opens the operator endpoints (a park's whole summary, outages, "
        "/metrics); prefer GARDEN_REGENCY_API__OPERATOR_TOKEN")
    tls: ApiTlsConfig | None = Field(
        None, description="HTTPS, as the gateway's api.tls; then the operator page and "
        "endpoints are served only there")
    park_url: str = Field(
        "", description="Each park's own page, {site} replaced: e.g. "
        "https://{site}.taman.example.go.id/ (empty: no links)")


class AlertmanagerConfig(_Model):
    urls: tuple[str, ...] = Field(
        min_length=1, description="Alertmanager base URLs (every one gets every post, e.g. "
        "the members of its cluster)")
    resend_s: float = Field(60.0, gt=0, le=3600, description="Firing alerts are posted again "
                            "this often (below Alertmanager's resolve_timeout)")


class RegencyConfig(_Model):
    data_dir: Path = Field(description="Where regency.sqlite3 lives")
    mqtt: MqttConfig = Field(MqttConfig(), description="The central broker")
    api: RegencyApi = Field(RegencyApi(), description="The regency's API")
    topic_prefix: str = Field("garden", description="The parks' topics start with this")
    name: str = Field("kabupaten", min_length=1, max_length=80,
                      description="The regency's name in the alerts (e.g. Kutai Timur)")
    alerts: AlertsConfig = Field(
        AlertsConfig(), description="A park down or its link down past alerts.down_after_s, "
        "a polder reaching Siaga or Awas anywhere, and their recoveries; the gateway's alert "
        "targets and outbox")
    alertmanager: AlertmanagerConfig | None = Field(
        None, description="Post the alerts to Prometheus Alertmanager as well: several "
        "instances' alerts become one notification there")
    stale_after_s: float = Field(
        300.0, gt=0, description="A park whose summary is older than this is stale (its "
        "gateways publish one at least every liveness.report_interval_s)")

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or "garden-regency"


def load_regency_config(path: Path, env: Mapping[str, str]) -> RegencyConfig:
    """Read, override (``GARDEN_REGENCY_*``), validate; every problem at once."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys"])
    apply_env(raw, env, prefix=ENV_PREFIX)
    if isinstance(raw.get("data_dir"), str) and not Path(raw["data_dir"]).is_absolute():
        raw["data_dir"] = str(path.parent / raw["data_dir"])
    try:
        return RegencyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                           f"{e['msg']}" for e in exc.errors()]) from exc
