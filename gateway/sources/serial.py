"""Line-printing sensors on a serial port (an Arduino or ESP32 on USB, a sensor on RS485).

The port is opened with pyserial in non-blocking mode and read from the event loop
(``add_reader``): the loop never waits for the port. Bytes go through the pure
:class:`devices.lines.LineFramer`; each complete line is stamped with the time its last byte
arrived and decoded by :mod:`devices.serial_lines`; readings then take the same path as MQTT
(enrichment, line protocol, the spool), without an acknowledgement: a serial line cannot be
asked for again.

When the adapter disappears (USB pulled: the read fails with EIO or returns nothing), the
source says so in its statistics, closes the port, and tries to open it again with capped
exponential backoff, by the configured path. That is why technicians should configure
``/dev/serial/by-id/...`` (stable across replugging and reboots) rather than
``/dev/ttyUSB0``, which may come back as ``/dev/ttyUSB1``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from devices import serial_lines
from devices.lines import LineFramer
from devices.reading import DecodeError
from gateway.core.backoff import Backoff
from gateway.pipeline import Committer, Pipeline

log = logging.getLogger(__name__)


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
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.name = name
        self.port = port
        self._baudrate = baudrate
        self._options = options
        self._framer = LineFramer(max_line_bytes=max_line_bytes)
        self._pipeline = pipeline
        self._committer = committer
        self._clock_ns = clock_ns
        self._backoff = Backoff(reopen_min_s, reopen_max_s)
        self._serial: serial.Serial | None = None
        self._gone: asyncio.Event | None = None
        self._opens = 0
        self._bytes = 0
        self._lines = 0
        self._readings = 0
        self._errors: Counter[str] = Counter()
        self._last_error: str | None = None
        self._last_reading_ns: int | None = None
        self._last_stamp = 0

    def statistics(self) -> SerialStats:
        return SerialStats(
            name=self.name, port=self.port, open=self._serial is not None, opens=self._opens,
            bytes=self._bytes, lines=self._lines, readings=self._readings,
            errors=dict(self._errors), last_error=self._last_error,
            last_reading_ns=self._last_reading_ns,
        )

    async def run(self) -> None:
        """Open, read until the port goes away, back off, again; cancellation stops it."""
        while True:
            try:
                self._open()
            except (serial.SerialException, OSError) as exc:
                self._fail("open_failed", f"cannot open {self.port}: {exc}")
                await asyncio.sleep(self._backoff.next())
                continue
            assert self._gone is not None
            try:
                await self._gone.wait()
            finally:
                self._close()
            await asyncio.sleep(self._backoff.next())

    def _open(self) -> None:
        port = serial.Serial(self.port, baudrate=self._baudrate, timeout=0, exclusive=True)
        self._serial = port
        self._gone = asyncio.Event()
        self._framer.reset()
        self._opens += 1
        self._backoff.reset()
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)
        log.info("serial source=%s port=%s opened at %d baud", self.name, self.port,
                 self._baudrate)

    def _close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        asyncio.get_running_loop().remove_reader(port.fileno())
        try:
            port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("serial source=%s close: %s", self.name, exc)

    def _fail(self, kind: str, message: str) -> None:
        self._errors[kind] += 1
        if message != self._last_error:
            log.warning("serial source=%s: %s", self.name, message)
        self._last_error = message

    def _readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = os.read(port.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            reason = f"port {self.port} went away: {exc.strerror or exc}"
        else:
            reason = f"port {self.port} went away (end of file)"
        if not data:
            self._fail("port_gone", reason)
            if self._gone is not None:
                self._gone.set()
            return
        received_at = self._clock_ns()
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
            lambda clean: serial_lines.decode(self.port, clean, received_at, opts))
        if outcome.dead is not None:
            self._errors[outcome.dead.kind] += 1
            self._last_error = outcome.dead.error
        elif outcome.lines:
            self._readings += len(outcome.lines)
            self._last_reading_ns = received_at
        self._committer.add(outcome)

    def describe(self) -> dict[str, Any]:
        st = self.statistics()
        return {"port": st.port, "open": st.open, "opens": st.opens, "bytes": st.bytes,
                "lines": st.lines, "readings": st.readings, "errors": st.errors,
                "last_error": st.last_error, "last_reading_ns": st.last_reading_ns}
