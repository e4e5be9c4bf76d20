"""The simulators of ``devices/simulators`` on a pseudo-terminal: ``garden-gateway simulate``.

A pseudo-terminal is a pair of file descriptors: the simulator holds the master end, and the
slave end is a path (``/dev/pts/N``) that the gateway, pymodbus or minicom opens as if it were a
USB serial adapter. ``link`` adds a symlink to that path, as udev makes
``/dev/serial/by-id/...``, so that a config can name a path that is known before the run.

The simulator keeps both ends open for the whole run. The other side may then open and close
the path as often as it likes (the gateway does, when it backs off and reopens): the pty stays
up, and the master never reads EIO, which it would while nobody holds the slave end. Should it
read EIO anyway, it looks again a little later instead of spinning on it.

- :class:`GardenRunner` writes one line every ``interval_s`` seconds. Like a UART nobody listens
  to, a backlog nobody reads is dropped rather than handed to whoever opens the port next.
- :class:`PolderRunner` reads requests as they come (``loop.add_reader``, never blocking),
  frames them with :class:`~devices.modbus_rtu.RequestFramer` and writes the slave's answer.
- :class:`MqttParkRunner` publishes for the park's MQTT devices (collectd access points, Tasmota
  sensors), each on its own connection to the broker as the real ones have: an AP that reboots
  drops its connection for the while, a Tasmota that loses the Wi-Fi drops it without a word
  and the broker publishes its last will (``LWT Offline``).

All take the clock (``time.time``) as an argument and expose a ``statistics()`` snapshot. The
signal handling and the printing are the CLI's (``gateway/ops/cli.py``); the config snippets it
prints are built here (:func:`garden_config`, :func:`polder_config`, :func:`to_yaml`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import struct
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from devices.modbus import Block, Register
from devices.modbus_rtu import RequestFramer
from devices.serial_lines import Options
from devices.simulators import polder
from devices.simulators.ap import AccessPoint
from devices.simulators.garden import GardenSensor
from devices.simulators.polder import PolderSlave
from devices.simulators.tasmota import OFFLINE, ONLINE, TasmotaSensor

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# More than this many bytes waiting unread at the slave end: nobody is listening.
_STALE_BYTES = 2048
# After an unexpected EIO on the master, look again after this long rather than spin.
_EIO_RETRY_S = 0.1


@dataclass(frozen=True, slots=True)
class PtyPort:
    """An open pseudo-terminal pair; ``path`` is what the other side opens."""

    master: int
    slave: int
    tty: str
    link: Path | None

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.tty


@contextlib.contextmanager
def pty_port(link: Path | None = None) -> Iterator[PtyPort]:
    """A raw pty pair, with ``link`` pointing at its slave end, closed and unlinked on exit.

    A leftover symlink at ``link`` (from a simulator that was killed) is replaced; anything else
    there is refused with :class:`FileExistsError`.
    """
    master, slave = os.openpty()
    try:
        # Raw: no echo, no line editing, no CR/LF translation, all 8 bits; what a UART passes.
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        if link is not None:
            if link.is_symlink():
                link.unlink()
            elif link.exists():
                raise FileExistsError(errno.EEXIST, "exists and is not a symlink", str(link))
            link.symlink_to(name)
        try:
            yield PtyPort(master, slave, name, link)
        finally:
            # Only our own link: another simulator may have taken the path meanwhile.
            if link is not None and link.is_symlink() and os.readlink(link) == name:
                link.unlink()
    finally:
        os.close(master)
        os.close(slave)


def _unread(fd: int) -> int:
    """Bytes waiting in the terminal's input queue."""
    count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return count


@dataclass(frozen=True, slots=True)
class GardenStats:
    port: str
    lines: int
    # Lines the pty would not take (its buffer full) and lines flushed unread.
    dropped: int
    flushed_bytes: int


class GardenRunner:
    """Writes ``sensor``'s lines to ``port`` every ``interval_s`` seconds until ``stop`` is set."""

    def __init__(
        self, port: PtyPort, sensor: GardenSensor, *, interval_s: float, clock: Clock = time.time
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval {interval_s} s: must be more than 0")
        self._port = port
        self._sensor = sensor
        self._interval_s = interval_s
        self._clock = clock
        self._lines = 0
        self._dropped = 0
        self._flushed = 0

    def statistics(self) -> GardenStats:
        return GardenStats(self._port.path, self._lines, self._dropped, self._flushed)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if self._sensor.boot_s is None:
            self._sensor.boot_s = self._clock()
        due = loop.time()
        while not stop.is_set():
            self._emit()
            # A fixed rate, without a burst of catch-up lines after the loop was held up.
            due = max(due + self._interval_s, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await stop.wait()

    def _emit(self) -> None:
        port = self._port
        waiting = _unread(port.slave)
        if waiting > _STALE_BYTES:
            termios.tcflush(port.slave, termios.TCIFLUSH)
            self._flushed += waiting
        line = self._sensor.line(self._clock())
        try:
            written = os.write(port.master, line)
        except BlockingIOError:
            written = 0
        if written < len(line):
            # The pty is full: nobody reads. Drop its backlog and what did not fit, so that a
            # reader never sees half a line.
            termios.tcflush(port.slave, termios.TCIFLUSH)
            self._dropped += 1
            return
        self._lines += 1


@dataclass(frozen=True, slots=True)
class PolderStats:
    port: str
    unit: int
    requests: int
    answers: int
    # Answers that were exception responses (illegal address or count).
    exceptions: int
    # Requests for other units: not answered, as on a real bus.
    other_units: int
    # Bytes that were not part of a read request (noise, other function codes).
    skipped_bytes: int
    read_errors: int
    dropped_answers: int


class PolderRunner:
    """Answers the Modbus RTU reads that arrive on ``port`` as ``slave`` until ``stop`` is set."""

    def __init__(self, port: PtyPort, slave: PolderSlave, *, clock: Clock = time.time) -> None:
        self._port = port
        self._slave = slave
        self._clock = clock
        self._framer = RequestFramer()
        self._requests = 0
        self._answers = 0
        self._exceptions = 0
        self._other_units = 0
        self._read_errors = 0
        self._failing = False
        self._retry: asyncio.TimerHandle | None = None
        self._dropped = 0

    def statistics(self) -> PolderStats:
        return PolderStats(
            self._port.path, self._slave.unit, self._requests, self._answers, self._exceptions,
            self._other_units, self._framer.skipped, self._read_errors, self._dropped,
        )

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if self._slave.boot_s is None:
            self._slave.boot_s = self._clock()
        master = self._port.master
        loop.add_reader(master, self._on_readable, loop)
        try:
            await stop.wait()
        finally:
            loop.remove_reader(master)
            if self._retry is not None:
                self._retry.cancel()

    def _on_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        master = self._port.master
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: no slave end is open (see the module docstring).
            self._pause(loop, str(exc))
            return
        if not data:
            self._pause(loop, "end of file")
            return
        self._failing = False
        for request in self._framer.feed(data):
            self._requests += 1
            answer = self._slave.answer(request, self._clock())
            if answer is None:
                self._other_units += 1
                continue
            if answer[1] & 0x80:
                self._exceptions += 1
            try:
                os.write(master, answer)
            except BlockingIOError:
                # The pty's buffer is full of answers nobody read: drop them and this one.
                termios.tcflush(self._port.slave, termios.TCIFLUSH)
                self._dropped += 1
                continue
            self._answers += 1

    def _pause(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        """Stop watching a master that cannot be read, and look again shortly; say so once."""
        self._read_errors += 1
        if not self._failing:
            log.warning("polder simulator: reading %s failed (%s); retrying every %.1f s",
                        self._port.path, reason, _EIO_RETRY_S)
        self._failing = True
        loop.remove_reader(self._port.master)
        self._retry = loop.call_later(_EIO_RETRY_S, self._resume, loop)

    def _resume(self, loop: asyncio.AbstractEventLoop) -> None:
        self._retry = None
        loop.add_reader(self._port.master, self._on_readable, loop)


# -- the park's MQTT devices ------------------------------------------------------------------


class _Connection:
    """One device's own MQTT connection: paho with its network thread, which connects (and
    reconnects) in the background, so nothing here ever blocks the event loop."""

    def __init__(self, host: str, port: int, client_id: str,
                 will: tuple[str, bytes] | None = None) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        # Set once the device has said what it says on every connect (Tasmota: LWT Online).
        self.announced = False

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    async def close(self) -> None:
        """A clean goodbye (DISCONNECT): the broker forgets the last will."""
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    async def drop(self) -> None:
        """The network goes away under the device: no DISCONNECT, the socket just closes, and
        the broker publishes the last will, as it does when an AP or a board loses power."""
        await asyncio.to_thread(self.client.loop_stop)
        sock = self.client.socket()
        if sock is not None:
            sock.close()


@dataclass(frozen=True, slots=True)
class MqttParkStats:
    broker: str
    messages: int
    # Samples a device took while its connection was not up yet (not sent, as collectd's
    # and Tasmota's own small buffers would lose them in the end too).
    unsent: int
    # AP reboots and Tasmota dropouts so far.
    reboots: int
    dropouts: int
    connected: tuple[str, ...]


class MqttParkRunner:
    """Every ``interval_s`` real seconds, one sample from each AP and Tasmota sensor.

    ``sim`` maps the real time to the simulated time the models take (see
    :class:`devices.simulators.park.DayClock`); the payloads carry the real time.
    """

    def __init__(self, *, host: str, port: int, aps: list[AccessPoint],
                 tasmotas: list[TasmotaSensor], interval_s: float,
                 sim: Callable[[float], float] = lambda t: t, clock: Clock = time.time) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval {interval_s} s: must be more than 0")
        self._host, self._port = host, port
        self._aps = aps
        self._tasmotas = tasmotas
        self._interval_s = interval_s
        self._sim = sim
        self._clock = clock
        self._conns: dict[str, _Connection] = {}
        self._messages = self._unsent = self._reboots = self._dropouts = 0

    def statistics(self) -> MqttParkStats:
        return MqttParkStats(f"{self._host}:{self._port}", self._messages, self._unsent,
                             self._reboots, self._dropouts,
                             tuple(sorted(k for k, c in self._conns.items() if c.connected)))

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while not stop.is_set():
                await self._tick()
                due = max(due + self._interval_s, loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await stop.wait()
        finally:
            conns, self._conns = list(self._conns.values()), {}
            await asyncio.gather(*(c.close() for c in conns))

    async def _tick(self) -> None:
        real = self._clock()
        t = self._sim(real)
        for ap in self._aps:
            # collectd has no last will: the broker just sees the AP's connection end.
            conn = await self._presence(ap.host, ap.up(t), None)
            if conn is not None:
                self._send(conn, ap.messages(t, real))
        for sensor in self._tasmotas:
            conn = await self._presence(f"DVES_{sensor.topic}", sensor.online(t),
                                        (sensor.lwt_topic, OFFLINE))
            if conn is None:
                continue
            if conn.connected and not conn.announced:
                conn.publish(sensor.lwt_topic, ONLINE, retain=True)
                conn.announced = True
            self._send(conn, [(sensor.sensor_topic, sensor.sensor_payload(t, real))])

    async def _presence(self, client_id: str, up: bool,
                        will: tuple[str, bytes] | None) -> _Connection | None:
        """The device's connection if it is up (opened when it comes up), else None."""
        conn = self._conns.get(client_id)
        if up:
            if conn is None:
                conn = self._conns[client_id] = _Connection(self._host, self._port, client_id,
                                                            will)
            return conn
        if conn is not None:
            del self._conns[client_id]
            await conn.drop()
            if will is None:
                self._reboots += 1
            else:
                self._dropouts += 1
            log.info("simulated %s is off the network", client_id)
        return None

    def _send(self, conn: _Connection, messages: list[tuple[str, bytes]]) -> None:
        if not conn.connected:
            self._unsent += len(messages)
            return
        for topic, payload in messages:
            conn.publish(topic, payload)
        self._messages += len(messages)


# -- what the technician pastes into the config ----------------------------------------------


def _non_defaults(obj: Any) -> dict[str, Any]:
    """A dataclass's fields that differ from their defaults, in declaration order."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            found[f.name] = list(value) if isinstance(value, tuple) else value
    return found


def register_config(register: Register) -> dict[str, Any]:
    return _non_defaults(register)


def block_config(block: Block) -> dict[str, Any]:
    """A block as the config writes it: function, address, count, registers (and measurement)."""
    config: dict[str, Any] = {
        "function": block.function,
        "address": block.address,
        "count": block.count,
        "registers": [register_config(r) for r in block.registers],
    }
    if block.measurement:
        config["measurement"] = block.measurement
    return config


def polder_config(port: str, *, unit: int = 1, name: str = "polder",
                  device: str = polder.DEVICE, interval_s: float = 5) -> dict[str, Any]:
    """The ``modbus:`` section that polls the polder simulator on ``port``."""
    return {"modbus": [{
        "name": name,
        "port": port,
        "baudrate": 9600,
        "slaves": [{
            "device": device,
            "unit": unit,
            "interval_s": interval_s,
            "measurement": polder.MEASUREMENT,
            "blocks": [block_config(b) for b in polder.BLOCKS],
        }],
    }]}


def options_config(options: Options) -> dict[str, Any]:
    return _non_defaults(options)


def garden_config(port: str, sensor: GardenSensor, *, name: str = "garden") -> dict[str, Any]:
    """The ``serial:`` section that reads the garden simulator on ``port``."""
    return {"serial": [{
        "name": name,
        "port": port,
        "baudrate": 9600,
        "options": options_config(sensor.options()),
    }]}


class _Dumper(yaml.SafeDumper):
    # Lists indented under their key, as in config/example.yaml.
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_yaml(config: dict[str, Any]) -> str:
    """Block style, except mappings of plain values (a register) which fit on one line."""
    text: str = yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=100)
    return text


def parse_override(text: str) -> tuple[str, float | int | bool]:
    """``FIELD=VALUE`` for :meth:`PolderSlave.set`: ``level_mm=1850``, ``pump_on=true``."""
    field, eq, raw = text.partition("=")
    field, raw = field.strip(), raw.strip()
    if not eq or not field or not raw:
        raise ValueError(f"{text!r}: expected FIELD=VALUE, for example level_mm=1850")
    found = polder.REGISTERS.get(field)
    if found is None:
        raise ValueError(f"{field!r} is not in the register map; fields: "
                         f"{', '.join(polder.REGISTERS)}")
    value: float | int | bool
    if found[1].type == "bool":
        lowered = raw.lower()
        if lowered not in ("true", "false", "on", "off", "1", "0"):
            raise ValueError(f"{field}: {raw!r} is not true/false, on/off or 1/0")
        value = lowered in ("true", "on", "1")
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{field}: {raw!r} is not a number") from None
    PolderSlave().set(field, value)  # the same checks the running simulator makes
    return field, value
