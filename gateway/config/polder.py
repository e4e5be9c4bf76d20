"""The ``polder:`` section: each flood-retention basin the gateway watches (issue 16).

One entry per polder: the sensor that measures its level (``device``, ``field``, ``unit``), the
warning levels (Waspada, Siaga, Awas) with their hysteresis and minimum hold, how fast it may
rise before someone is told, and what makes a reading untrustworthy. Amounts are in the field's
own unit; where a default is given it is written in centimetres and converted for ``m``, ``cm``
and ``mm`` (:data:`CM_IN`); another unit must give its amounts itself.

The older ``pages.polder`` (thresholds only, for the residents' page) still loads: it becomes the
one entry of ``polder:``, and ``check-config`` says so (:func:`migrate_pages_polder`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# One centimetre in each known unit: the defaults below are centimetres.
CM_IN = {"m": 0.01, "cm": 1.0, "mm": 10.0}
# The defaults, in centimetres (None: no default, the check is off unless configured).
DEFAULTS_CM: dict[str, float] = {
    "hysteresis": 3.0,          # a level wandering +-2 cm makes no second change
    "noise": 4.0,               # two readings of still water may differ this much
    "max_rate_per_h": 100.0,    # faster than this is a spike, not water
    "rise_alert_per_h": 20.0,   # "rising fast" even below Waspada
    "disagree_by": 10.0,        # two sensors of one polder further apart: neither is believed
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Thresholds(_Model):
    waspada: float = Field(description="Level from which the polder is Waspada (alert)")
    siaga: float = Field(description="Level from which it is Siaga (standby); above waspada")
    awas: float = Field(description="Level from which it is Awas (danger); above siaga")

    @model_validator(mode="after")
    def _rising(self) -> Thresholds:
        if not self.waspada < self.siaga < self.awas:
            raise ValueError("thresholds must rise: waspada < siaga < awas")
        return self

    def values(self) -> tuple[float, float, float]:
        return (self.waspada, self.siaga, self.awas)


class SecondSensor(_Model):
    device: str = Field(pattern=_ID, description="A second sensor in the same polder")
    field: str = Field("level_cm", description="Its level field, in the same unit")


class RainGauge(_Model):
    device: str = Field(pattern=_ID, description="The rain gauge near the polder")
    field: str = Field("rain_mm", description="Its rain field, in mm")
    counter: bool = Field(
        False, description="true: the field is a running total (a tipping bucket's count in "
        "mm); false: each reading is the rain since the one before")


class SirenConfig(_Model):
    """An output switched on at ``on_level`` and off on recovery: a Modbus coil (function 05,
    an RS485 relay board on one of the ``modbus:`` buses) or a GPIO line (libgpiod)."""

    kind: Literal["modbus_coil", "gpio"] = Field(
        description="modbus_coil: a relay on a modbus: bus; gpio: a line of a GPIO chip")
    on_level: Literal["waspada", "siaga", "awas"] = Field(
        "awas", description="Switched on from this level (trusted readings only)")
    bus: str | None = Field(None, description="modbus_coil: the name of the modbus: bus")
    unit: int | None = Field(None, ge=1, le=247, description="modbus_coil: the relay board's "
                             "unit address")
    coil: int = Field(0, ge=0, le=0xFFFF, description="modbus_coil: the coil (relay) address")
    chip: str = Field("/dev/gpiochip0", description="gpio: the GPIO chip")
    line: int | None = Field(None, ge=0, description="gpio: the line offset on the chip")
    active_low: bool = Field(False, description="gpio: the line is low when the siren sounds")
    test_s: float = Field(5.0, gt=0, le=60, description="How long a test switches it on")
    retry_s: float = Field(5.0, gt=0, description="How soon a failed switch is tried again")

    @model_validator(mode="after")
    def _complete(self) -> SirenConfig:
        if self.kind == "modbus_coil" and (self.bus is None or self.unit is None):
            raise ValueError("a modbus_coil siren needs bus and unit")
        if self.kind == "gpio" and self.line is None:
            raise ValueError("a gpio siren needs line")
        return self


class PolderConfig(_Model):
    """One polder: its sensor, its warning levels, and when its readings are believed."""

    device: str = Field(pattern=_ID, description="The device that measures the water level")
    field: str = Field("level_cm", description="Its numeric field: the level")
    unit: str = Field("cm", min_length=1, max_length=8,
                      description="The field's unit (m, cm, mm: defaults follow it)")
    name: str = Field("", max_length=80,
                      description="The polder's name in alerts and pages; empty: the device id")
    thresholds: Thresholds = Field(description="Warning levels, in the field's unit; they rise")
    hysteresis: float | None = Field(
        None, ge=0, description="How far below a threshold the level must fall before the "
        "warning level goes down; none: 3 cm in the unit")
    min_hold_s: float = Field(
        1800.0, ge=0, description="A lower warning level only after this long below; a level "
        "just left is not re-entered within it unless clearly past (a rise is never delayed)")
    window_s: float = Field(
        1800.0, ge=120, description="The rise is measured over this window (Theil-Sen)")
    rise_alert_per_h: float | None = Field(
        None, gt=0, description="Alert when the level rises faster than this, in the unit per "
        "hour, even below Waspada; none: 20 cm/h in the unit")
    interval_s: float = Field(
        60.0, gt=0, description="How often the sensor reports: stale after three intervals "
        "without a reading")
    sensor_min: float | None = Field(None, description="Below this the reading is out of the "
                                     "sensor's range; none: no lower bound")
    sensor_max: float | None = Field(None, description="Above this the reading is out of the "
                                     "sensor's range; none: no upper bound")
    max_rate_per_h: float | None = Field(
        None, gt=0, description="Faster than this (beyond the noise) is a spike, not water; "
        "none: 100 cm/h in the unit")
    noise: float | None = Field(
        None, ge=0, description="The sensor's own noise: how much two readings of still water "
        "may differ; none: 4 cm in the unit")
    flatline_s: float = Field(
        1800.0, gt=0, description="The very same value for this long while readings arrive: "
        "the sensor is stuck")
    second: SecondSensor | None = Field(
        None, description="A second sensor of the same polder: when they disagree neither is "
        "believed")
    siren: SirenConfig | None = Field(
        None, description="An output switched on at a level (default Awas) and off on "
        "recovery; operators can silence it and test it")
    rain: RainGauge | None = Field(
        None, description="A rain gauge: the last hour's rain is shown beside the level")
    disagree_by: float | None = Field(
        None, gt=0, description="How far apart the two sensors may be; none: 10 cm in the unit")
    siaga_guidance: str = Field(
        "Bersiap. Jauhi tepi polder, amankan barang berharga dan dokumen, ikuti informasi "
        "dari petugas.", description="What to do at Siaga, shown on the residents' page")
    awas_guidance: str = Field(
        "Bahaya banjir. Jauhi polder dan saluran air, pindah ke tempat yang lebih tinggi, "
        "ikuti arahan petugas.", description="What to do at Awas, shown on the residents' page")
    emergency_number: str = Field(
        "112", pattern=r"^[0-9+][0-9 ()-]{1,19}$",
        description="The number to call shown at Siaga and Awas (112, or the regency's BPBD)")

    @model_validator(mode="after")
    def _amounts(self) -> PolderConfig:
        scale = CM_IN.get(self.unit)
        if scale is None:
            missing = [k for k in DEFAULTS_CM if getattr(self, k) is None
                       and (k != "disagree_by" or self.second is not None)]
            if missing:
                raise ValueError(f"unit {self.unit!r} has no defaults (only m, cm, mm do): "
                                 f"give {', '.join(missing)}")
        if (self.sensor_min is not None and self.sensor_max is not None
                and not self.sensor_min < self.sensor_max):
            raise ValueError("sensor_min must be below sensor_max")
        if self.second is not None and (self.second.device, self.second.field) == (
                self.device, self.field):
            raise ValueError("second must be another sensor (device, field) than the first")
        return self

    def amount(self, key: str) -> float:
        """``key``'s value in the field's unit: as configured, or the default converted."""
        value = getattr(self, key)
        if value is not None:
            return float(value)
        return DEFAULTS_CM[key] * CM_IN[self.unit]

    @property
    def title(self) -> str:
        return self.name or self.device


def migrate_pages_polder(raw: dict[str, Any]) -> str | None:
    """``pages.polder`` (before issue 16) becomes ``polder: [that]`` in ``raw``; the warning
    to show, or None when there was nothing to move. With both given, ``polder:`` wins."""
    pages = raw.get("pages")
    if not isinstance(pages, dict) or "polder" not in pages:
        return None
    old = pages.pop("polder")
    if old is None:
        return None
    if raw.get("polder"):
        return ("pages.polder is deprecated and ignored: polder: is set; remove pages.polder")
    raw["polder"] = [old]
    return ("pages.polder is deprecated: it is read as the one entry of polder: (a list, with "
            "hysteresis, min_hold_s, rise_alert_per_h and the sensor checks); move it there")
