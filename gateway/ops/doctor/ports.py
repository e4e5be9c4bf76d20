"""``serial`` and ``modbus``: each configured port, and each Modbus slave on it.

Each port exists, is a stable ``/dev/serial/by-id`` name, is a character device, and opens
(exclusive, as the gateway opens it; held by someone else, it is "in use", normally by the
running gateway, which is fine, and not touched). A line sensor is given a few seconds for one
complete line; each Modbus slave is polled once with the gateway's own RTU framing
(:class:`devices.modbus_rtu.ReadExchange`).

The waits here are real time (``time.monotonic``), not a :class:`~gateway.core.clock.Clock`:
they bound blocking reads of a real port, whose own timeout is real time too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial

from devices.modbus_rtu import EXCEPTION_NAMES, ReadExchange
from gateway.config import Config, ModbusBusConfig
from gateway.ops.doctor.runner import Result


def stable_name(port: str) -> bool:
    return "/serial/by-id/" in port or "/serial/by-path/" in port


def _by_id_for(real: str) -> str | None:
    """The /dev/serial/by-id link that points at ``real`` (the device), if there is one."""
    base = Path("/dev/serial/by-id")
    with contextlib.suppress(OSError):
        for link in sorted(base.iterdir()):
            if os.path.realpath(link) == real:
                return str(link)
    return None


def _by_id_advice(where: str, port: str) -> str:
    real = os.path.realpath(port)
    link = _by_id_for(real) if os.path.exists(port) else None
    if link is not None:
        return f"set {where}.port to {link} (it points to {Path(real).name})"
    return (f"set {where}.port to the adapter's /dev/serial/by-id/... link "
            "(`ls -l /dev/serial/by-id/`)")


_BY_ID_WHY = "ttyUSB numbers change when adapters are replugged or the Pi reboots"


@dataclass(slots=True)
class _Opened:
    port: serial.Serial | None = None
    in_use: bool = False


def _open_port(check: str, name: str, where: str, port: str,
               serial_args: dict[str, Any]) -> _Opened | Result:
    """Open ``port`` as the gateway does (exclusive), or the FAIL saying why not."""
    if not os.path.lexists(port):
        extra = "" if stable_name(port) else f" ({_BY_ID_WHY})"
        return Result(check, name, "FAIL", f"{port} does not exist",
                      f"is the adapter plugged in? `ls -l /dev/serial/by-id/` lists the "
                      f"adapters by a stable name: put the right one in {where}.port{extra}")
    if not os.path.exists(port):
        return Result(check, name, "FAIL",
                      f"{port} points to {os.readlink(port)}, which is gone",
                      "the adapter was unplugged or died; plug it in (another USB port or "
                      "cable?) and check `dmesg | tail`")
    mode = os.stat(port).st_mode
    if not stat.S_ISCHR(mode):
        return Result(check, name, "FAIL", f"{port} is not a serial device",
                      _by_id_advice(where, port))
    try:
        return _Opened(serial.Serial(port, timeout=0, exclusive=True, **serial_args))
    except serial.SerialException as exc:
        code = exc.errno
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            return _Opened(in_use=True)
        if code == errno.EACCES:
            return Result(check, name, "FAIL", f"{port}: permission denied",
                          "the service's user gets the dialout group from the unit; to check "
                          "by hand run doctor with sudo, or `sudo usermod -aG dialout $USER` "
                          "and log in again")
        if code == errno.ENOENT:
            return Result(check, name, "FAIL", f"{port} vanished while opening it",
                          "a loose USB cable or adapter? check `dmesg | tail`")
        return Result(check, name, "FAIL", f"cannot open {port}: {exc}",
                      "check the adapter (`dmesg | tail`) and the port's settings")
    except (OSError, ValueError) as exc:
        return Result(check, name, "FAIL", f"cannot open {port}: {exc}",
                      "check the port's settings (baudrate, parity, stopbits)")


def _port_verdict(check: str, name: str, where: str, port: str, found: str) -> Result:
    if stable_name(port):
        return Result(check, name, "OK", found)
    return Result(check, name, "WARN", f"{found}; not a stable name",
                  f"{_by_id_advice(where, port)} — {_BY_ID_WHY}")


_IN_USE = "in use by another program, normally the running gateway (that is fine)"


def check_serial_source(cfg: Config, index: int, line_wait_s: float) -> list[Result]:
    src = cfg.serial[index]
    where = f"serial[{index}]"
    name = f"serial {src.name} {src.port}"
    opened = _open_port("serial", name, where, src.port, {"baudrate": src.baudrate})
    if isinstance(opened, Result):
        return [opened]
    if opened.port is None:
        return [_port_verdict("serial", name, where, src.port, f"{_IN_USE}; not read")]
    with opened.port as port:
        port.reset_input_buffer()
        if line_wait_s <= 0:
            return [_port_verdict("serial", name, where, src.port,
                                  f"opened at {src.baudrate} baud")]
        got, line = _one_line(port, line_wait_s, src.max_line_bytes)
    if line is None:
        if got:
            return [Result("serial", name, "WARN", f"{got} bytes in {line_wait_s:g} s but no "
                           "complete line", f"a wrong baudrate ({src.baudrate})? or a line "
                           "ending the sensor does not send?")]
        return [Result("serial", name, "WARN", f"opened, but nothing arrived in "
                       f"{line_wait_s:g} s", f"is the sensor powered and wired (its TX to the "
                       f"adapter's RX)? does it send at {src.baudrate} baud? it may just report "
                       "less often (--line-wait)")]
    text = line.decode("utf-8", "replace").strip()
    printable = sum(ch.isprintable() for ch in text)
    if not text or printable < 0.9 * len(text):
        return [Result("serial", name, "WARN", f"a line arrived but it is not text: {line[:40]!r}",
                       f"a wrong baudrate? the config says {src.baudrate}")]
    shown = text if len(text) <= 60 else text[:57] + "..."
    return [_port_verdict("serial", name, where, src.port, f"a line arrived: {shown!r}")]


def _one_line(port: serial.Serial, wait_s: float, max_bytes: int) -> tuple[int, bytes | None]:
    """One complete line that began after we opened: (bytes seen, the line or None)."""
    deadline = time.monotonic() + wait_s
    buf = b""
    seen = 0
    started = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return seen, None
        port.timeout = left
        data = port.read(max(1, port.in_waiting))
        seen += len(data)
        buf += data
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            # The first piece may be the end of a line that began before we listened.
            if started:
                return seen, line
            started = True
        if len(buf) > max_bytes:
            return seen, None


def check_modbus_bus(cfg: Config, index: int, timeout_s: float) -> list[Result]:
    bus = cfg.modbus[index]
    where = f"modbus[{index}]"
    name = f"modbus {bus.name} {bus.port}"
    settings = f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"
    opened = _open_port("serial", name, where, bus.port, {
        "baudrate": bus.baudrate, "bytesize": bus.bytesize, "parity": bus.parity,
        "stopbits": bus.stopbits})
    if isinstance(opened, Result):
        return [opened]
    if opened.port is None:
        return [_port_verdict("serial", name, where, bus.port,
                              f"{_IN_USE}; slaves not polled (stop the gateway to poll them)")]
    with opened.port as port:
        slaves = [_poll_slave(port, bus, i, timeout_s) for i in range(len(bus.slaves))]
    n = len(slaves)
    head = _port_verdict("serial", name, where, bus.port,
                         f"opened at {settings}, polled {n} slave{'s' if n != 1 else ''}")
    return [head, *slaves]


def _poll_slave(port: serial.Serial, bus: ModbusBusConfig, index: int,
                timeout_s: float) -> Result:
    slave = bus.slaves[index]
    block = slave.blocks[0]
    name = f"modbus {bus.name} unit {slave.unit} ({slave.device})"
    what = f"{block.function} {block.address}+{block.count}"
    settings = f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"
    exchange = ReadExchange(slave.unit, block.function, block.address, block.count,
                            echo=bus.echo)
    wait_s = min(bus.timeout_s, timeout_s)
    port.reset_input_buffer()
    # RS485 wants a quiet line (3.5 characters) before a request: the protocol, not a guess.
    time.sleep(max(bus.turnaround_s, 3.5 * 11 / bus.baudrate))
    port.write(exchange.request)
    started = time.monotonic()
    deadline = started + wait_s
    while not exchange.done:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        port.timeout = left
        data = port.read(max(1, port.in_waiting))
        if data:
            exchange.feed(data)
    ms = (time.monotonic() - started) * 1000
    wiring = (f"is the slave powered, and is its address {slave.unit}? check the A/B wires "
              f"(swap them if unsure) and the bus settings ({settings})")
    if exchange.values is not None:
        return Result("modbus", name, "OK", f"answered {what} in {ms:.0f} ms")
    error = exchange.error
    if error is None:
        if exchange.received:
            return Result("modbus", name, "FAIL", f"only {exchange.received} bytes of the "
                          f"answer to {what} within {wait_s:g} s",
                          f"a wrong baudrate or parity ({settings})? or raise timeout_s")
        return Result("modbus", name, "FAIL", f"no answer to {what} within {wait_s:g} s "
                      "(timeout)", wiring)
    if error.kind == "exception":
        meaning = EXCEPTION_NAMES.get(error.code or 0, "unknown")
        fix = ("the slave is there but has no such registers: check this slave's blocks "
               "(function, address, count) against the device's manual")
        if error.code not in (1, 2, 3):
            fix = "the slave is there but cannot serve the read now; see its manual"
        return Result("modbus", name, "FAIL", f"answered {what} with exception {error.code} "
                      f"({meaning})", fix)
    if error.kind == "crc":
        return Result("modbus", name, "FAIL", f"the answer to {what} was damaged (CRC error)",
                      f"noise or a setting: check {settings}, the A/B wiring, 120 ohm "
                      f"termination at both bus ends, and that no two slaves share unit "
                      f"{slave.unit}")
    return Result("modbus", name, "FAIL", f"a wrong answer to {what}: {error.reason}",
                  "another slave with the same address? an adapter that echoes (set echo: "
                  "true on the bus)?")
