"""Simulated devices, shared by the demo, the tests and a technician's bench.

Pure models, like the decoders beside them: the caller passes the time, and gets bytes (the
line a garden sensor prints, the frame a Modbus slave answers) and the values behind them.
``gateway/simulate.py`` runs them on a pseudo-terminal (``garden-gateway simulate ...``).

- :class:`~devices.simulators.garden.GardenSensor`: a board printing soil moisture,
  temperature, humidity and rain as kv, JSON or CSV lines, optionally with NMEA checksums;
- :class:`~devices.simulators.polder.PolderSlave`: a polder water-level station answering
  Modbus RTU reads, with its register map in :data:`~devices.simulators.polder.BLOCKS`.
"""

from devices.simulators.garden import GardenSensor, Weather
from devices.simulators.polder import BLOCKS, PolderSlave

__all__ = ["BLOCKS", "GardenSensor", "PolderSlave", "Weather"]
