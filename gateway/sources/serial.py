"""Line-printing sensors on a serial port (an Arduino or ESP32 on USB, a sensor on RS485).

The port is opened with pyserial in non-blocking mode and read from the event loop
(``add_reader``): the loop never waits for the port. Bytes go through the pure
:class:`devices.lines.LineFramer`; each complete line is stamped with the time its last byte
arrived and decoded by :mod:`devices.serial_lines`; readings then take the same path as MQTT
(enrichment, line protocol, the spool), without an acknowledgement: a serial line cannot be
asked for again.

The port's life (open exclusive and non-blocking, notice the adapter is gone, open it again
with capped backoff by its configured path) is :class:`gateway.sources.port.SerialPort`, shared
with the Modbus buses; this module only frames and decodes what it reads. Lines are stamped by
the injected :class:`gateway.core.clock.Clock`. ``on_port_state`` (given by the application)
hears every change of the port's state; :attr:`SerialLineSource.devices` are the devices this
source has read (at most ``MAX_DEVICES``), so the application knows whom a lost port blinds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devices import serial_lines
from devices.lines import LineFramer
from devices.reading import DecodeError, Reading
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.pipeline import Committer, Pipeline
from gateway.sources.port import PortState, PortStats, SerialPort, SerialSettings

# Devices one line source remembers having read (a line may name its device).
MAX_DEVICES = 64


@dataclass(frozen=True, slots=True)
class SerialStats:
    name: str
    port: str
    open: bool
    opens: int
    bytes: int
    lines: int
    readings: int
    errors: dict[str, int]
    last_error: str | None
    last_reading_ns: int | None


class SerialLineSource:
    def __init__(
        self,
        *,
        name: str,
        port: str,
        baudrate: int,
        options: serial_lines.Options,
        max_line_bytes: int,
        pipeline: Pipeline,
        committer: Committer,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        on_port_state: Callable[[PortState, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self._options = options
        self._framer = LineFramer(max_line_bytes=max_line_bytes)
        self._pipeline = pipeline
        self._committer = committer
        self._clock = clock
        self._port = SerialPort(
            port, label=f"serial source={name}", settings=SerialSettings(baudrate=baudrate),
            on_data=self._data, on_open=self._framer.reset, on_error=self._port_error,
            on_state=on_port_state, reopen_min_s=reopen_min_s, reopen_max_s=reopen_max_s)
        self._bytes = 0
        self._lines = 0
        self._readings = 0
        self._errors: Counter[str] = Counter()
        self._last_error: str | None = None
        self._last_reading_ns: int | None = None
        self._last_stamp = 0
        self.devices: set[str] = {options.device} if options.device else set()

    def statistics(self) -> SerialStats:
        link = self._port.statistics()
        return SerialStats(
            name=self.name, port=self.port, open=link.open, opens=link.opens,
            bytes=self._bytes, lines=self._lines, readings=self._readings,
            errors=dict(self._errors), last_error=self._last_error,
            last_reading_ns=self._last_reading_ns,
        )

    def port_statistics(self) -> PortStats:
        """The port's own life: open, gone, reopening, how often."""
        return self._port.statistics()

    async def run(self) -> None:
        """Read the port, and open it again whenever it goes away; cancellation stops it."""
        await self._port.run()

    def _port_error(self, kind: str, message: str) -> None:
        self._errors[kind] += 1
        self._last_error = message

    def _data(self, data: bytes) -> None:
        received_at = self._clock.now_ns()
        self._bytes += len(data)
        for event in self._framer.feed(data):
            if event.kind == "line":
                # Lines that complete in the same read share one clock reading; a nanosecond
                # apart, they stay two points instead of one overwriting the other.
                stamp = max(received_at, self._last_stamp + 1)
                self._last_stamp = stamp
                self._line(event.data, stamp)
            else:
                self._errors[event.kind] += 1
                self._pipeline.reject(self.name, self.port, event.data, received_at, DecodeError(
                    f"{event.kind} on the line: {event.size} bytes dropped", kind=event.kind))

    def _line(self, line: bytes, received_at: int) -> None:
        self._lines += 1
        opts = self._options
        outcome = self._pipeline.accept(
            self.name, self.port, line, received_at,
            lambda clean: self._seen(serial_lines.decode(self.port, clean, received_at, opts)))
        if outcome.dead is not None:
            self._errors[outcome.dead.kind] += 1
            self._last_error = outcome.dead.error
        elif outcome.lines:
            self._readings += len(outcome.lines)
            self._last_reading_ns = received_at
        self._committer.add(outcome)

    def _seen(self, readings: list[Reading]) -> list[Reading]:
        if len(self.devices) < MAX_DEVICES:
            for r in readings:
                device = r.tag("device")
                if device is not None:
                    self.devices.add(device)
        return readings

    def describe(self) -> dict[str, Any]:
        st = self.statistics()
        return {"port": st.port, "open": st.open, "opens": st.opens, "bytes": st.bytes,
                "lines": st.lines, "readings": st.readings, "errors": st.errors,
                "last_error": st.last_error, "last_reading_ns": st.last_reading_ns}
