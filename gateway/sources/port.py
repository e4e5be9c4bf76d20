"""One serial port's life: open it, read it from the event loop, notice it is gone, open it again.

Both serial sources sit on a USB adapter (the line-printing sensors of
:mod:`gateway.sources.serial`, the RS485 buses of :mod:`gateway.sources.modbus`), and a
technician may pull it, a power dip may reset it, the kernel may give it back under a new
``ttyUSB`` number. What to do about that is the same for both, so it is written once, here; the
sources only say what to do with the bytes and what to do while the port is open.

- The port is opened with pyserial, exclusive (a second gateway or a technician's ``screen``
  gets "busy" instead of half the bytes) and non-blocking (``timeout=0``), and read from the
  event loop with ``add_reader``: the loop never waits for the port.
- "Gone" is noticed three ways: a read fails (EIO, ENXIO: the adapter was pulled), a read
  returns end of file (the other end of a pseudo-terminal closed), or the configured path no
  longer names the device that is open (checked every ``node_check_s``, because some drivers
  leave a stale descriptor silent instead of failing it, and a by-id link may move to a new
  node). The port is closed at once and counted, once per loss.
- It is then opened again by its configured path with capped exponential backoff and jitter
  (:class:`gateway.core.backoff.Backoff`), which is why technicians should configure
  ``/dev/serial/by-id/...`` (stable across replugging) rather than ``/dev/ttyUSB0``.

While the port is open, :meth:`SerialPort.run` runs the owner's *session* (Modbus polls the
bus; a line source just waits). When the port goes away, the port's own waits
(:meth:`SerialPort.sleep`, :meth:`SerialPort.wait`) and :meth:`SerialPort.write` raise
:class:`PortGone` into the session, so the session keeps no "gone" flag of its own.
:class:`PortGone` is a signal between the port and its session; it never leaves ``run``.

The port takes no :class:`gateway.core.clock.Clock`: it reads no time. Its waits (the backoff,
:meth:`SerialPort.sleep`) are on the event loop's clock, like the Modbus answer timeouts,
because they pace real hardware: a fake clock that a test holds still for its timestamps must
not keep a replugged adapter closed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import serial

from gateway.core.aio import wait_event, wait_future
from gateway.core.backoff import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

PortState = Literal["closed", "open", "port_gone", "reopening"]
"""``closed``: not opened yet, or stopped. ``open``: open and read. ``port_gone``: it was open
and went away; closed, the first attempt to open it again waits out its backoff.
``reopening``: an attempt to open it failed (missing, busy, refused); the next one waits out
its backoff."""

# stat() errors that mean the path names no device any more; any other (EACCES on a parent
# folder, say) says nothing about the adapter, and closing a working port for it would flap it.
_NODE_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENXIO, errno.ENODEV})


class PortGone(Exception):
    """The open port went away; raised into the session by the port's waits and writes."""

    def __init__(self, port: str, reason: str) -> None:
        super().__init__(reason)
        self.port = port
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """How the line is framed: pyserial's names and values (parity "N", "E", "O"...)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def __str__(self) -> str:
        return (f"baudrate={self.baudrate} bytesize={self.bytesize} parity={self.parity} "
                f"stopbits={self.stopbits:g}")


@dataclass(frozen=True, slots=True)
class PortStats:
    """A snapshot of one port's life, for the status API and /metrics."""

    path: str
    state: PortState
    opens: int
    """Successful opens."""
    losses: int
    """Times the open port went away."""
    open_failures: int
    """Attempts to open it that failed, in all."""
    reopen_attempts: int
    """Attempts that failed since it was last open (0 while it is open)."""
    last_error: str | None

    @property
    def open(self) -> bool:
        return self.state == "open"


class SerialPort:
    """One serial port by its configured path, kept open for as long as :meth:`run` runs.

    ``on_data`` gets every chunk read (in the event loop's reader callback, so it must not
    wait). ``on_open`` runs after each open, before the first byte is delivered. ``on_error``
    gets ``("open_failed" | "port_gone", message)`` for the owner's own error counts; the port
    logs them itself, once per change of message, as ``<label>: <message>``. ``on_state`` gets
    every change of :data:`PortState` with the reason (``None`` for ``open`` and ``closed``):
    the application turns ``port_gone``/``reopening`` into its devices being unmonitored.
    """

    def __init__(
        self,
        path: str,
        *,
        label: str,
        on_data: Callable[[bytes], None],
        settings: SerialSettings,
        on_open: Callable[[], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
        on_state: Callable[[PortState, str | None], None] | None = None,
        discard_input: bool = False,
        reopen_min_s: float = 0.5,
        reopen_max_s: float = 30.0,
        node_check_s: float = 1.0,
        read_size: int = 4096,
    ) -> None:
        self.path = path
        self.settings = settings
        self._label = label
        self._on_data = on_data
        self._on_open = on_open
        self._on_error = on_error
        self._on_state = on_state
        self._discard_input = discard_input
        self._backoff = Backoff(reopen_min_s, reopen_max_s)
        self._node_check_s = node_check_s
        self._read_size = read_size
        self._serial: serial.Serial | None = None
        self._identity: tuple[int, int, int] | None = None
        self._node_timer: asyncio.TimerHandle | None = None
        self._gone: asyncio.Event | None = None
        self._gone_reason = ""
        self._watched: set[asyncio.Future[Any]] = set()
        self._state: PortState = "closed"
        self._opens = 0
        self._losses = 0
        self._open_failures = 0
        self._reopen_attempts = 0
        self._last_error: str | None = None

    # -- status ------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def statistics(self) -> PortStats:
        return PortStats(
            path=self.path, state=self._state, opens=self._opens, losses=self._losses,
            open_failures=self._open_failures, reopen_attempts=self._reopen_attempts,
            last_error=self._last_error,
        )

    # -- the lifecycle -----------------------------------------------------------------------

    async def run(self, session: Callable[[], Awaitable[None]] | None = None) -> None:
        """Open, run ``session`` until the port goes away, back off, again, for ever.

        Without a session the port is just read until it goes away. A session that returns
        closes the port, which is opened again after the backoff. Cancellation stops it and
        leaves the port closed.
        """
        try:
            while True:
                try:
                    self._open()
                except (serial.SerialException, OSError, ValueError) as exc:
                    # ValueError: pyserial's word for settings the driver refuses.
                    self._open_failed(exc)
                    await asyncio.sleep(self._backoff.next())
                    continue
                try:
                    await (session() if session is not None else self.wait_gone())
                except PortGone:
                    pass
                finally:
                    self._close()
                    if self._state == "open":  # the session ended, or was cancelled
                        self._set_state("closed", None)
                await asyncio.sleep(self._backoff.next())
        finally:
            self._close()
            self._set_state("closed", None)

    async def wait_gone(self) -> None:
        """Return when the open port goes away (at once when it is not open)."""
        gone = self._gone
        if gone is not None and self.is_open:
            await gone.wait()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (``math.inf``: for ever) while the port stays open.

        Raises :class:`PortGone` as soon as it goes away, also at once when it already has
        (even for ``seconds <= 0``, so a session notices between two quick steps).
        """
        gone = self._require_open()
        if seconds <= 0:
            return
        if await wait_event(gone, seconds):
            raise self._gone_error()

    async def wait(self, future: asyncio.Future[T], seconds: float) -> T:
        """``future``'s result; :class:`PortGone` if the port goes away first, TimeoutError
        (and ``future`` cancelled) after ``seconds``."""
        self._require_open()
        self._watched.add(future)
        try:
            return await wait_future(future, seconds)
        finally:
            self._watched.discard(future)

    def write(self, data: bytes) -> None:
        """Write ``data`` now (a request of a few bytes: the driver's buffer takes it whole).

        A failed write means the adapter is gone: :class:`PortGone`.
        """
        self._require_open()
        port = self._serial
        assert port is not None
        try:
            os.write(port.fileno(), data)
        except OSError as exc:
            self._lose(f"port {self.path} went away: {exc.strerror or exc}")
            raise self._gone_error() from exc

    # -- inside ------------------------------------------------------------------------------

    def _require_open(self) -> asyncio.Event:
        gone = self._gone
        if gone is None or gone.is_set() or not self.is_open:
            raise self._gone_error()
        return gone

    def _gone_error(self) -> PortGone:
        return PortGone(self.path, self._gone_reason or f"port {self.path} is not open")

    def _open(self) -> None:
        s = self.settings
        port = serial.Serial(self.path, baudrate=s.baudrate, bytesize=s.bytesize,
                             parity=s.parity, stopbits=s.stopbits, timeout=0, exclusive=True)
        try:
            if self._discard_input:
                port.reset_input_buffer()
            identity = _identity(os.fstat(port.fileno()))
        except (serial.SerialException, OSError):
            port.close()
            raise
        self._serial = port
        self._identity = identity
        self._gone = asyncio.Event()
        self._gone_reason = ""
        self._opens += 1
        self._reopen_attempts = 0
        self._backoff.reset()
        if self._on_open is not None:
            self._on_open()
        self._set_state("open", None)
        loop = asyncio.get_running_loop()
        loop.add_reader(port.fileno(), self._readable)
        self._node_timer = loop.call_later(self._node_check_s, self._check_node)
        log.info("%s port=%s opened (%s)", self._label, self.path, s)

    def _close(self) -> None:
        if self._node_timer is not None:
            self._node_timer.cancel()
            self._node_timer = None
        port, self._serial = self._serial, None
        if port is None:
            return
        asyncio.get_running_loop().remove_reader(port.fileno())
        try:
            port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("%s port=%s close: %s", self._label, self.path, exc)

    def _set_state(self, state: PortState, reason: str | None) -> None:
        changed = state != self._state
        self._state = state
        if changed and self._on_state is not None:
            self._on_state(state, reason)

    def _open_failed(self, exc: BaseException) -> None:
        self._open_failures += 1
        self._reopen_attempts += 1
        self._report("open_failed", f"cannot open {self.path}: {exc}")
        self._set_state("reopening", f"cannot open {self.path}: {exc}")

    def _lose(self, reason: str) -> None:
        """The port went away: close it now, once, and wake whoever waits on it."""
        if not self.is_open:
            return
        self._state = "port_gone"
        self._losses += 1
        self._gone_reason = reason
        self._report("port_gone", reason)
        self._close()
        if self._gone is not None:
            self._gone.set()
        for future in list(self._watched):
            if not future.done():
                future.set_exception(self._gone_error())
        if self._on_state is not None:
            self._on_state("port_gone", reason)

    def _report(self, kind: str, message: str) -> None:
        if message != self._last_error:
            log.warning("%s: %s", self._label, message)
        self._last_error = message
        if self._on_error is not None:
            self._on_error(kind, message)

    def _readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            data = os.read(port.fileno(), self._read_size)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(f"port {self.path} went away: {exc.strerror or exc}")
            return
        if not data:
            self._lose(f"port {self.path} went away (end of file)")
            return
        self._on_data(data)

    def _check_node(self) -> None:
        self._node_timer = None
        if self._serial is None:
            return
        try:
            now = _identity(os.stat(self.path))
        except OSError as exc:
            if exc.errno in _NODE_GONE:
                self._lose(f"port {self.path} went away: the device node is gone "
                           f"({exc.strerror or exc})")
                return
            log.debug("%s port=%s stat: %s", self._label, self.path, exc)
        else:
            if now != self._identity:
                self._lose(f"port {self.path} went away: the path names another device now")
                return
        self._node_timer = asyncio.get_running_loop().call_later(self._node_check_s,
                                                                 self._check_node)


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    # A replugged adapter gets a new node (a new inode), often with the same device number.
    return st.st_dev, st.st_ino, st.st_rdev
