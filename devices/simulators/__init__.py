"""Simulated devices, shared by the demo, the tests and a technician's bench.

Pure models, like the decoders beside them: the caller passes the time, and gets bytes (the
line a garden sensor prints, the frame a Modbus slave answers) and the values behind them.
``gateway/ops/simulate.py`` runs them on a pseudo-terminal (``garden-gateway simulate ...``).

- :class:`~devices.simulators.garden.GardenSensor`: a board printing soil moisture,
  temperature, humidity and rain as kv, JSON or CSV lines, optionally with NMEA checksums;
- :class:`~devices.simulators.polder.PolderSlave`: a polder water-level station answering
  Modbus RTU reads, with its register map in :data:`~devices.simulators.polder.BLOCKS`;
- :class:`~devices.simulators.ap.AccessPoint`: an OpenWrt AP publishing like collectd's MQTT
  plugin (byte counters and clients per radio, a day curve, a daily reboot);
- :class:`~devices.simulators.tasmota.TasmotaSensor`: a Tasmota AM2301 board (``SENSOR``
  JSON, ``LWT``) that can drop off the Wi-Fi;
- :mod:`devices.simulators.park`: the demo's park and its scripted day (``SCENARIO``), and
  :class:`~devices.simulators.park.DayClock`, which maps real time to simulated time.
"""

from devices.simulators.ap import AccessPoint
from devices.simulators.garden import GardenSensor, Weather
from devices.simulators.polder import BLOCKS, PolderSlave
from devices.simulators.tasmota import TasmotaSensor

__all__ = ["BLOCKS", "AccessPoint", "GardenSensor", "PolderSlave", "TasmotaSensor", "Weather"]
