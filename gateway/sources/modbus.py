"""Modbus RTU slaves on one RS485 bus (a USB-RS485 adapter), polled in turn.

One :class:`ModbusBus` owns one serial port. Its slaves are polled one at a time (RS485 is
half duplex: one question on the wire, one answer), each at its own interval; a slave's
blocks (one read request each) are read back to back. The port is read from the event loop
(``add_reader``, non-blocking), so the loop never waits for it, and the frames are the pure
:mod:`devices.modbus_rtu`: the answer's length is known from the request, so its end needs no
timing, and the time of its last byte is the reading's timestamp, once.

Every exchange ends in one of: values (decoded by :func:`devices.modbus.decode_block` and
spooled as one reading per block), an exception response (the slave refused: wrong address
in the register map), a CRC error, a mismatch (an answer that is not ours), or a timeout (no
complete answer within ``timeout_s``). Each is counted per slave and block, the poll loop goes
on, and the next request waits ``turnaround_s`` of quiet first so a late answer falls into no
one's frame. A slave that answered nothing for ``offline_after`` polls in a row is ``offline``
in the status API; it is then asked only every ``offline_retry_s`` so that it does not hold up
its neighbours, and is ``online`` again at its first answer.

A vanished port (USB pulled: reads fail with EIO or end, the device node goes) is reported,
closed, and reopened by its configured path with capped exponential backoff; polling resumes
at once. That port lifecycle is :class:`gateway.sources.port.SerialPort`, shared with the line
sources; this module is the polling. While the port is not open, every slave that was asked
before is ``unmonitored`` here (nobody can tell whether it would answer), and
``on_port_state`` (given by the application) hears every change of the port's state, so that
liveness makes the bus's devices unmonitored at once. Readings are stamped by the injected
:class:`gateway.core.clock.Clock`, and poll intervals are measured on its monotonic clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from devices.modbus import Block, decode_block
from devices.modbus_rtu import CoilWrite, ReadExchange, RtuError
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.pipeline import Committer, Pipeline
from gateway.sources.port import PortGone, PortState, PortStats, SerialPort, SerialSettings

log = logging.getLogger(__name__)

# The port's states in which nobody can tell whether a slave would answer.
_GONE = frozenset({"port_gone", "reopening"})


@dataclass(frozen=True, slots=True)
class SlaveSpec:
    """One slave on the bus: its unit address, device id, poll interval and register map."""

    device: str
    unit: int
    interval_s: float
    measurement: str
    blocks: tuple[Block, ...]


@dataclass(slots=True)
class _BlockState:
    block: Block
    polls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_exception: int | None = None
    last_ok_ns: int | None = None

    @property
    def key(self) -> str:
        return f"{self.block.function}@{self.block.address}"


@dataclass(slots=True)
class _SlaveState:
    spec: SlaveSpec
    blocks: list[_BlockState]
    due: float = 0.0
    polls: int = 0
    answered: int = 0
    failures_in_row: int = 0
    offline: bool = False
    went_offline: int = 0
    last_error: str | None = None
    last_reading_ns: int | None = None


class ModbusBus:
    def __init__(
        self,
        *,
        name: str,
        port: str,
        slaves: Sequence[SlaveSpec],
        pipeline: Pipeline,
        committer: Committer,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 1.0,
        turnaround_s: float = 0.02,
        echo: bool = False,
        offline_after: int = 3,
        offline_retry_s: float = 30.0,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        on_port_state: Callable[[PortState, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self._pipeline = pipeline
        self._committer = committer
        self._timeout = timeout_s
        # RTU wants at least 3.5 character times of silence between frames (11 bits each).
        self._turnaround = max(turnaround_s, 3.5 * 11 / baudrate)
        self._echo = echo
        self._offline_after = offline_after
        self._offline_retry = offline_retry_s
        self._clock = clock
        self._slaves = [_SlaveState(s, [_BlockState(b) for b in s.blocks]) for s in slaves]
        # A half answer left in the driver from before the open would be taken for the start of
        # the first answer, hence discard_input.
        self._port = SerialPort(
            port, label=f"modbus bus={name}",
            settings=SerialSettings(baudrate=baudrate, bytesize=bytesize, parity=parity,
                                    stopbits=stopbits),
            on_data=self._data, on_open=self._opened, on_error=self._port_error,
            on_state=on_port_state, discard_input=True, reopen_min_s=reopen_min_s,
            reopen_max_s=reopen_max_s)
        self._exchange: ReadExchange | CoilWrite | None = None
        # One exchange on the wire at a time: the poll loop's reads and an output's writes.
        self._wire = asyncio.Lock()
        self.coil_writes = 0
        self.coil_write_failures = 0
        self._waiter: asyncio.Future[int] | None = None
        self._quiet_until = 0.0
        self._bytes_in = 0
        self._bytes_out = 0
        self._stray = 0
        self._polls = 0
        self._errors: Counter[str] = Counter()
        self._last_error: str | None = None
        self._last_reading_ns: int | None = None
        self._last_stamp = 0

    # -- status ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        now = self._clock.monotonic()
        link = self._port.statistics()
        return {
            "port": self.port, "open": link.open, "opens": link.opens,
            "bytes_in": self._bytes_in, "bytes_out": self._bytes_out, "polls": self._polls,
            "stray_bytes": self._stray, "errors": dict(self._errors),
            "last_error": self._last_error, "last_reading_ns": self._last_reading_ns,
            "slaves": {s.spec.device: self._describe_slave(s, now, link.open,
                                                           link.state in _GONE)
                       for s in self._slaves},
        }

    def port_statistics(self) -> PortStats:
        """The port's own life: open, gone, reopening, how often."""
        return self._port.statistics()

    def _describe_slave(self, s: _SlaveState, now: float, is_open: bool,
                        gone: bool) -> dict[str, Any]:
        state = ("unknown" if s.polls == 0 else "unmonitored" if gone
                 else "offline" if s.offline else "online")
        return {
            "unit": s.spec.unit, "state": state, "interval_s": s.spec.interval_s,
            "polls": s.polls, "answered": s.answered, "failures_in_row": s.failures_in_row,
            "went_offline": s.went_offline,
            "next_poll_in_s": round(max(0.0, s.due - now), 3) if is_open else None,
            "last_error": s.last_error, "last_reading_ns": s.last_reading_ns,
            "errors": dict(sum((b.errors for b in s.blocks), Counter[str]())),
            "blocks": {b.key: {"function": b.block.function, "address": b.block.address,
                               "count": b.block.count, "polls": b.polls, "ok": b.ok,
                               "errors": dict(b.errors), "last_error": b.last_error,
                               "last_exception": b.last_exception, "last_ok_ns": b.last_ok_ns}
                       for b in s.blocks},
        }

    # -- the port --------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll while the port is open, open it again whenever it goes; cancellation stops it."""
        await self._port.run(self._poll_forever)

    def _opened(self) -> None:
        now = self._clock.monotonic()
        for s in self._slaves:
            s.due = now

    def _port_error(self, kind: str, message: str) -> None:
        self._errors[kind] += 1
        self._last_error = message

    def _data(self, data: bytes) -> None:
        received_at = self._clock.now_ns()
        self._bytes_in += len(data)
        exchange = self._exchange
        if exchange is None or exchange.done:
            self._stray += len(data)
            return
        if exchange.feed(data):
            self._stray += len(exchange.leftover)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(received_at)

    # -- polling ---------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        if not self._slaves:
            await self._port.sleep(math.inf)
        while True:
            slave = min(self._slaves, key=lambda s: s.due)
            await self._port.sleep(slave.due - self._clock.monotonic())
            await self._poll(slave)
            interval = slave.spec.interval_s
            if slave.offline:
                interval = max(interval, self._offline_retry)
            now = self._clock.monotonic()
            # Fixed rate; polls missed while the bus was busy are skipped, not caught up.
            slave.due += interval * max(1, math.floor((now - slave.due) / interval) + 1)

    async def _poll(self, slave: _SlaveState) -> None:
        self._polls += 1
        slave.polls += 1
        answered = False
        for block in slave.blocks:
            answered |= await self._read_block(slave, block)
        if answered:
            slave.answered += 1
            slave.failures_in_row = 0
            if slave.offline:
                slave.offline = False
                log.info("modbus bus=%s device=%s unit=%d answers again", self.name,
                         slave.spec.device, slave.spec.unit)
            return
        slave.failures_in_row += 1
        if not slave.offline and slave.failures_in_row >= self._offline_after:
            slave.offline = True
            slave.went_offline += 1
            log.warning("modbus bus=%s device=%s unit=%d offline: %d polls without an answer "
                        "(%s); asking every %.0f s", self.name, slave.spec.device,
                        slave.spec.unit, slave.failures_in_row, slave.last_error,
                        max(slave.spec.interval_s, self._offline_retry))

    async def write_coil(self, unit: int, address: int, on: bool) -> str | None:
        """Function 5 between two polls: switch coil ``address`` of slave ``unit``. None when
        the slave confirmed it, else what went wrong (port not open, timeout, exception)."""
        try:
            async with self._wire:
                await self._port.sleep(self._quiet_until - self._clock.monotonic())
                exchange = CoilWrite(unit, address, on, echo=self._echo)
                waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                self._exchange, self._waiter = exchange, waiter
                try:
                    self._port.write(exchange.request)
                    self._bytes_out += len(exchange.request)
                    await self._port.wait(waiter, self._timeout)
                except TimeoutError:
                    error: str | None = f"timeout after {self._timeout:g} s"
                else:
                    error = exchange.error.reason if exchange.error is not None else None
                finally:
                    self._exchange = self._waiter = None
                    self._quiet_until = self._clock.monotonic() + self._turnaround
        except PortGone as exc:
            error = str(exc)
        if error is None:
            self.coil_writes += 1
            return None
        self.coil_write_failures += 1
        log.warning("modbus bus=%s unit=%d coil %d %s not written: %s", self.name, unit,
                    address, "on" if on else "off", error)
        return error

    async def _read_block(self, slave: _SlaveState, state: _BlockState) -> bool:
        async with self._wire:
            return await self._read_block_now(slave, state)

    async def _read_block_now(self, slave: _SlaveState, state: _BlockState) -> bool:
        """One request and its answer; True when the slave answered (values or exception)."""
        spec, block = slave.spec, state.block
        await self._port.sleep(self._quiet_until - self._clock.monotonic())
        exchange = ReadExchange(spec.unit, block.function, block.address, block.count,
                                echo=self._echo)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._exchange, self._waiter = exchange, waiter
        state.polls += 1
        try:
            self._port.write(exchange.request)
            self._bytes_out += len(exchange.request)
            try:
                received_at = await self._port.wait(waiter, self._timeout)
            except TimeoutError:
                got = exchange.received
                detail = f"{got} bytes of an answer" if got else "no answer"
                self._block_error(slave, state, "timeout",
                                  f"timeout after {self._timeout:g} s: {detail}")
                return False
        finally:
            self._exchange = self._waiter = None
            self._quiet_until = self._clock.monotonic() + self._turnaround
        error = exchange.error
        if error is not None:
            self._rtu_error(slave, state, error)
            return error.kind == "exception"
        assert exchange.values is not None
        self._reading(slave, state, exchange.values, exchange.answer, received_at)
        return True

    def _rtu_error(self, slave: _SlaveState, state: _BlockState, error: RtuError) -> None:
        if error.kind == "exception":
            state.last_exception = error.code
        self._block_error(slave, state, error.kind, error.reason)

    def _block_error(self, slave: _SlaveState, state: _BlockState, kind: str,
                     reason: str) -> None:
        state.errors[kind] += 1
        message = (f"unit {slave.spec.unit} {state.block.function} at {state.block.address}: "
                   f"{reason}")
        if state.last_error != message:
            log.warning("modbus bus=%s device=%s %s", self.name, slave.spec.device, message)
        state.last_error = slave.last_error = message

    def _reading(self, slave: _SlaveState, state: _BlockState, values: list[int] | list[bool],
                 frame: bytes, received_at: int) -> None:
        # Two blocks answered within one clock tick stay two points.
        stamp = max(received_at, self._last_stamp + 1)
        self._last_stamp = stamp
        spec, block = slave.spec, state.block
        where = f"{self.port} unit {spec.unit} {block.function}@{block.address}"
        outcome = self._pipeline.accept(
            self.name, where, frame, stamp,
            lambda _frame: [decode_block(block, values, device=spec.device,
                                         measurement=spec.measurement, received_at_ns=stamp,
                                         source=self.port)],
            text=False)
        if outcome.dead is not None:
            state.errors[outcome.dead.kind] += 1
            state.last_error = slave.last_error = outcome.dead.error
        elif outcome.lines:
            state.ok += 1
            state.last_ok_ns = slave.last_reading_ns = self._last_reading_ns = stamp
        self._committer.add(outcome)

