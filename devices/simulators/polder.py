"""A polder water-level station as a Modbus RTU slave: its register map and its answers.

The station is the common RS485 level transmitter (see :mod:`devices.modbus`) with a small
controller beside it: the level in holding registers, as the transmitter gives it (float32
metres at 0..1 with the low word first, CDAB; unsigned millimetres at 4), then the water
temperature, the supply voltage, the pump's flow and the controller's uptime in input
registers, the pump in a coil and the float switches in discrete inputs. :data:`BLOCKS` is the
map, the one the gateway's config, the docs and the tests use::

    function  address  field              type     order   scale  unit
    holding   0..1     level_m            float32  CDAB           m
    holding   4        level_mm           uint16                  mm
    input     0        water_temp_c       int16            0.1    °C
    input     1        supply_v           uint16           0.01   V
    input     10..11   flow_m3h           float32  ABCD           m3/h
    input     12..13   uptime_s           uint32   ABCD           s
    coils     0        pump_on            bool
    discrete  0        high_water_switch  bool
    discrete  1        low_water_switch   bool

Addresses inside a block that hold no field (holding 2..3, input 2..9) read 0. A read that
reaches outside the blocks is refused with exception 2 (illegal data address), a count of 0 or
beyond the protocol's limit with exception 3 (illegal data value); a request for another unit
gets no answer at all, as on a real bus.

The water follows the park's rain (:class:`devices.simulators.garden.Weather`, the same seed
gives the garden sensor's rain): about 60 mm of level per mm of rain on the catchment, peaking
an hour and a half after a shower and drained by the pump over the following hours. The pump
starts at 1200 mm and runs until the level falls below 800 mm; the high-water switch closes
at 1500 mm, the low-water switch at 500 mm.

A synthetic storm (:mod:`devices.simulators.storm`: noise, spikes, a stuck float) can replace
the modelled level while it lasts (:meth:`PolderSlave.play`), once or at the same time every
day (the demo's).

A test or a demo can fix any field with :meth:`PolderSlave.set`; fixing the level (``level_mm``
or ``level_m``) moves everything that follows from it (the other level register, the pump, the
switches, the flow) unless those are fixed too. A fixed level has no history: between the stop
and the start level the pump is off.

Nothing here reads a clock: the caller passes the time, in seconds since the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from devices.modbus import Block, Function, Register, decode_block, encode_value
from devices.modbus_rtu import ReadRequest, exception_response, read_response
from devices.simulators.garden import HOUR_S, Weather, smooth_noise
from devices.simulators.storm import Storm

Value = float | int | bool

DEVICE = "polder-1"
MEASUREMENT = "polder"

BLOCKS: tuple[Block, ...] = (
    Block(function="holding", address=0, count=5, registers=(
        Register("level_m", 0, "float32", word_order="little", unit="m"),
        Register("level_mm", 4, "uint16", unit="mm"),
    )),
    Block(function="input", address=0, count=14, registers=(
        Register("water_temp_c", 0, "int16", scale=0.1, unit="°C"),
        Register("supply_v", 1, "uint16", scale=0.01, unit="V"),
        Register("flow_m3h", 10, "float32", unit="m3/h"),
        Register("uptime_s", 12, "uint32", unit="s"),
    )),
    Block(function="coils", address=0, count=1, registers=(
        Register("pump_on", 0, "bool"),
    )),
    Block(function="discrete", address=0, count=2, registers=(
        Register("high_water_switch", 0, "bool"),
        Register("low_water_switch", 1, "bool"),
    )),
)

# Every field of the map: its block's function and its register.
REGISTERS: Mapping[str, tuple[Function, Register]] = MappingProxyType({
    reg.field: (block.function, reg) for block in BLOCKS for reg in block.registers
})

PUMP_START_MM = 1200.0
PUMP_STOP_MM = 800.0
HIGH_WATER_MM = 1500.0
LOW_WATER_MM = 500.0
OVERFLOW_MM = 3000.0  # the basin spills over its bank
CATCHMENT = 60.0  # mm of level per mm of rain
PEAK_S = 1.5 * HOUR_S  # from a shower to the highest water
PUMP_FLOW_M3H = 180.0

_LIMITS: dict[Function, int] = {"holding": 125, "input": 125, "coils": 2000, "discrete": 2000}
_ADDRESSES: dict[Function, frozenset[int]] = {
    function: frozenset(
        address
        for block in BLOCKS if block.function == function
        for address in range(block.address, block.address + block.count)
    )
    for function in _LIMITS
}
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
# Noise streams, apart from the weather's.
_BASE_NOISE, _WAVE_NOISE, _WATER_NOISE, _SUPPLY_NOISE, _FLOW_NOISE = range(100, 105)


class PolderSlave:
    """The station at unit address ``unit`` (see the module docstring).

    ``boot_s`` is when the controller was switched on (its ``uptime_s`` counts from there);
    ``None``: the first call to :meth:`values` or :meth:`answer` switches it on.
    """

    __slots__ = ("_overrides", "_storm", "_unit", "boot_s", "weather")

    def __init__(self, unit: int = 1, *, seed: int = 0, boot_s: float | None = None) -> None:
        if not 1 <= unit <= 247:
            raise ValueError(f"unit address {unit} is outside 1..247")
        self._unit = unit
        self.weather = Weather(seed)
        self.boot_s = boot_s
        self._storm: tuple[float, Storm, float, bool] | None = None
        self._overrides: dict[str, Value] = {}

    @property
    def unit(self) -> int:
        return self._unit

    @property
    def overrides(self) -> Mapping[str, Value]:
        return MappingProxyType(self._overrides)

    def set(self, field: str, value: Value) -> None:
        """Fix ``field`` at ``value`` (as the sensor would report it) until :meth:`clear`."""
        found = REGISTERS.get(field)
        if found is None:
            raise ValueError(
                f"{field!r} is not in the register map; fields: {', '.join(REGISTERS)}"
            )
        register = found[1]
        if (register.type == "bool") != isinstance(value, bool):
            kind = "true or false" if register.type == "bool" else "a number"
            raise ValueError(f"{field}: {value!r} is not {kind}")
        if not isinstance(value, bool) and not math.isfinite(value):
            raise ValueError(f"{field}: {value!r} is not a finite number")
        encode_value(register, value)  # raises ValueError when the register cannot hold it
        if field in ("level_mm", "level_m"):
            # The other level register follows: it must be able to hold the level too.
            mm = value if field == "level_mm" else value * 1000
            encode_value(REGISTERS["level_mm"][1], mm)
        self._overrides[field] = value

    def clear(self, field: str | None = None) -> None:
        """Let ``field`` (or, without one, every field) follow the model again."""
        if field is None:
            self._overrides.clear()
        else:
            self._overrides.pop(field, None)

    def play(self, storm: Storm, *, start_s: float, daily: bool = False) -> None:
        """From ``start_s`` (Unix seconds) the level is ``storm``'s readings (cm), its noise,
        spikes and stuck spell included; again every 24 hours when ``daily``."""
        readings = storm.readings
        step = ((readings[1].time_ns - readings[0].time_ns) / 1e9 if len(readings) > 1
                else 60.0)
        self._storm = (start_s, storm, step, daily)

    def storm_level_mm(self, t_s: float) -> float | None:
        """The storm's reading at ``t_s`` in mm, or None outside it."""
        if self._storm is None:
            return None
        start, storm, step, daily = self._storm
        offset = t_s - start
        if daily:
            offset %= 86400.0
        index = math.floor(offset / step)
        if 0 <= index < len(storm.readings):
            return storm.readings[index].value * 10.0
        return None

    # -- the model --------------------------------------------------------------------------

    def level_mm(self, t_s: float) -> float:
        """The water level the model gives at ``t_s`` (overrides aside), without waves."""
        w = self.weather
        # The basin's own level wanders slowly with seepage and evaporation.
        level = 560.0 + 90.0 * smooth_noise(w.seed, _BASE_NOISE, t_s, 2 * 86400.0)
        now_hour = math.floor(t_s / HOUR_S)
        for hour in range(now_hour - 36, now_hour + 1):
            rain = w.rain_in_hour(hour)
            if rain:
                age = (t_s - (hour + 0.5) * HOUR_S) / PEAK_S
                if age > 0:
                    level += CATCHMENT * rain * age * math.exp(1 - age)
        return min(OVERFLOW_MM, level)

    def _pump_runs(self, t_s: float, level: float) -> bool:
        """The controller's hysteresis: on at the start level, off again below the stop level."""
        if level >= PUMP_START_MM:
            return True
        if level <= PUMP_STOP_MM or self._overrides.keys() & {"level_mm", "level_m"}:
            return False
        # In between, it runs if the water reached the start level since it was last low.
        for minutes in range(5, 36 * 60, 5):
            before = self.level_mm(t_s - 60.0 * minutes)
            if before >= PUMP_START_MM:
                return True
            if before <= PUMP_STOP_MM:
                return False
        return False

    def _model(self, t_s: float) -> dict[str, Value]:
        if self.boot_s is None:
            self.boot_s = t_s
        w, fixed, seed = self.weather, self._overrides, self.weather.seed
        if "level_mm" in fixed:
            level = float(fixed["level_mm"])
        elif "level_m" in fixed:
            level = float(fixed["level_m"]) * 1000
        elif (stormy := self.storm_level_mm(t_s)) is not None:
            level = round(min(OVERFLOW_MM, max(0.0, stormy)))
        else:
            level = self.level_mm(t_s) + 3.0 * smooth_noise(seed, _WAVE_NOISE, t_s, 45.0)
            level = round(min(OVERFLOW_MM, max(0.0, level)))
        pump_on = bool(fixed["pump_on"]) if "pump_on" in fixed else self._pump_runs(t_s, level)
        # The solar panel charges the battery from 06:00 to 18:00, most at noon.
        sun = max(0.0, w.daily(t_s, 12))
        model: dict[str, Value] = {
            "level_m": level / 1000,
            "level_mm": level,
            "water_temp_c": (
                # The water lags the air: warmest at 16:00.
                28.5 + 1.2 * w.daily(t_s, 16) - 0.8 * w.raining(t_s)
                + 0.2 * smooth_noise(seed, _WATER_NOISE, t_s, 1200.0)
            ),
            "supply_v": 12.4 + 1.2 * sun + 0.05 * smooth_noise(seed, _SUPPLY_NOISE, t_s, 300.0),
            "flow_m3h": (
                PUMP_FLOW_M3H + 6.0 * smooth_noise(seed, _FLOW_NOISE, t_s, 30.0) if pump_on
                else 0.0
            ),
            "uptime_s": max(0, math.floor(t_s - self.boot_s)) % 2**32,
            "pump_on": pump_on,
            "high_water_switch": level >= HIGH_WATER_MM,
            "low_water_switch": level <= LOW_WATER_MM,
        }
        model.update(fixed)
        return model

    def memory(self, t_s: float) -> dict[Function, dict[int, int]]:
        """The registers (or bits, as 0 and 1) by function and address, at ``t_s``."""
        model = self._model(t_s)
        memory: dict[Function, dict[int, int]] = {function: {} for function in _LIMITS}
        for block in BLOCKS:
            table = memory[block.function]
            for reg in block.registers:
                for i, word in enumerate(encode_value(reg, model[reg.field])):
                    table[reg.address + i] = word
        return memory

    def values(self, t_s: float) -> dict[str, Value]:
        """Every field at ``t_s`` as a Modbus master decodes it (float32 precision, 0.1 steps)."""
        memory = self.memory(t_s)
        values: dict[str, Value] = {}
        for block in BLOCKS:
            table = memory[block.function]
            words = [table.get(a, 0) for a in range(block.address, block.address + block.count)]
            reading = decode_block(block, words, device=DEVICE, measurement=MEASUREMENT,
                                   received_at_ns=0)
            for name, value in reading.fields:
                assert not isinstance(value, str)  # registers never decode to text
                values[name] = value
        return values

    # -- the bus ----------------------------------------------------------------------------

    def answer(self, request: ReadRequest, t_s: float) -> bytes | None:
        """The frame the station sends back, or None: a request for another unit is not heard."""
        if request.unit != self._unit:
            return None
        function, address, count = request.function, request.address, request.count
        if not 1 <= count <= _LIMITS[function]:
            return exception_response(self._unit, function, ILLEGAL_DATA_VALUE)
        known = _ADDRESSES[function]
        if any(a not in known for a in range(address, address + count)):
            return exception_response(self._unit, function, ILLEGAL_DATA_ADDRESS)
        table = self.memory(t_s)[function]
        words = [table.get(a, 0) for a in range(address, address + count)]
        if function in ("coils", "discrete"):
            return read_response(self._unit, function, [bool(w) for w in words])
        return read_response(self._unit, function, words)
