"""A real Modbus RTU slave bus for the tests: pymodbus's server on a pseudo-terminal, behind a
relay that can damage answers, silence a slave, echo requests like some USB-RS485 adapters,
and be unplugged.

    gateway ── <link> = pty A ── relay ── pty B ── pymodbus ModbusSerialServer (units ...)

It runs on its own thread and event loop, so a test may block (waiting on InfluxDB or on a
gateway subprocess) while the slaves keep answering. Register values live in
:attr:`ModbusPeer.memory` and may be changed while the gateway polls (:meth:`set`); the
server reads them at each request.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import tty
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devices.modbus import Register, encode_value

SIZE = 64  # registers (or bits) per table and unit: addresses 0..63 exist, 64 and up do not
_FC_TABLE = {1: "coils", 2: "discrete", 3: "holding", 4: "input"}


def _raw_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave


class ModbusPeer:
    def __init__(self, link: Path, units: Sequence[int] = (1,)) -> None:
        self.link = link
        self.units = tuple(units)
        self.memory: dict[int, dict[str, list[int]]] = {
            u: {t: [0] * SIZE for t in ("coils", "discrete", "holding", "input")}
            for u in self.units
        }
        self.silenced: set[int] = set()
        self.corrupt_answers = 0
        self.echo = False
        self.requests: list[bytes] = []
        self.coil_writes: list[tuple[int, int, list[bool]]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="modbus-peer",
                                        daemon=True)
        self._server: ModbusSerialServer | None = None
        self._a_master: int | None = None
        self._b_master = -1
        self._b_slave = -1

    # -- control, from the test's thread -----------------------------------------------------

    def set(self, unit: int, table: str, register: Register, value: float | int | bool) -> None:
        """Store ``value`` as the raw registers ``register`` describes (scale, order...)."""
        words = encode_value(register, value)
        with self._lock:
            self.memory[unit][table][register.address:register.address + len(words)] = words

    def coil(self, unit: int, address: int) -> bool:
        with self._lock:
            return bool(self.memory[unit]["coils"][address])

    def unplug(self) -> None:
        self._call(self._unplug)

    def plug(self) -> None:
        self._call(self._plug)

    def _call(self, fn: Any) -> None:
        done: Future[None] = Future()

        def run() -> None:
            try:
                fn()
                done.set_result(None)
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        done.result(timeout=10)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        async def shutdown() -> None:
            self._unplug()
            self._loop.remove_reader(self._b_master)
            if self._server is not None:
                await self._server.shutdown()  # type: ignore[no-untyped-call]

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            for fd in (self._b_master, self._b_slave):
                os.close(fd)
            self._loop.close()

    # -- on the peer's loop -------------------------------------------------------------------

    async def _start(self) -> None:
        self._b_master, self._b_slave = _raw_pty()
        devices = [
            SimDevice(id=u, simdata=(
                [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)],
                [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)],
                [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
            ), action=functools.partial(self._action, u))
            for u in self.units
        ]
        self._server = ModbusSerialServer(devices, port=os.ttyname(self._b_slave),
                                          baudrate=9600)
        await self._server.listen()
        self._loop.add_reader(self._b_master, self._from_slaves)
        self._plug()

    async def _action(self, unit: int, function_code: int, start: int, address: int,
                      count: int, current: list[int], set_values: Any) -> None:
        if function_code in (5, 15) and set_values is not None:
            # A write of coils (a relay board's siren): kept, so the test reads it back.
            with self._lock:
                for i, value in enumerate(set_values):
                    self.memory[unit]["coils"][address + i] = int(bool(value))
                self.coil_writes.append((unit, address, [bool(v) for v in set_values]))
            return
        table = _FC_TABLE.get(function_code)
        if table is None:
            return
        with self._lock:
            memory = list(self.memory[unit][table])
        if table in ("coils", "discrete"):
            # Bits are packed 16 to a register, the first bit in the low bit.
            for i in range(0, SIZE, 16):
                current[i // 16] = sum(1 << b for b in range(16) if memory[i + b])
        else:
            current[:SIZE] = memory  # current[0] is address 0: the table starts there

    def _plug(self) -> None:
        master, slave = _raw_pty()
        name = os.ttyname(slave)
        os.close(slave)  # the gateway opens the link itself
        self._a_master = master
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(name)
        self._loop.add_reader(master, self._from_gateway)

    def _unplug(self) -> None:
        if self._a_master is not None:
            self._loop.remove_reader(self._a_master)
            os.close(self._a_master)
            self._a_master = None
        if self.link.is_symlink():
            self.link.unlink()

    def _from_gateway(self) -> None:
        assert self._a_master is not None
        try:
            data = os.read(self._a_master, 512)
        except OSError:
            return  # the gateway closed its end; it will open it again
        self.requests.append(data)
        if self.echo:
            os.write(self._a_master, data)
        if data and data[0] in self.silenced:
            return  # as if the slave never heard it
        os.write(self._b_master, data)

    def _from_slaves(self) -> None:
        try:
            data = os.read(self._b_master, 512)
        except OSError:
            return
        if self.corrupt_answers and data:
            self.corrupt_answers -= 1
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        if self._a_master is not None:
            os.write(self._a_master, data)


@contextmanager
def modbus_peer(link: Path, units: Sequence[int] = (1,)) -> Iterator[ModbusPeer]:
    peer = ModbusPeer(link, units)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
