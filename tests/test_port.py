"""The serial-port lifecycle shared by the line and Modbus sources, on real pseudo-terminal pairs.

The port opens the slave end by a symlinked path (as a technician configures
``/dev/serial/by-id/...``); the test holds the master end, as the adapter's far side would,
and pulls it (closes the master), removes the node, or plugs a new pty in at the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import serial

from gateway.sources.port import PortGone, SerialPort, SerialSettings
from tests.conftest import running, until
from tests.test_serial import fake_port


class Reported(list[tuple[str, str]]):
    """What the port reported to ``on_error``: (kind, message), in order."""

    def __call__(self, kind: str, message: str) -> None:
        self.append((kind, message))

    def of(self, kind: str) -> list[str]:
        return [message for k, message in self if k == kind]


class Received:
    """What the port delivered to ``on_data``, awaited with a timeout."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._changed = asyncio.Event()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk
        self._changed.set()

    async def expect(self, wanted: bytes, limit_s: float = 10.0) -> None:
        async with asyncio.timeout(limit_s):
            while wanted not in self.data:
                self._changed.clear()
                await self._changed.wait()


def make_port(path: Path, on_data: Callable[[bytes], None], *,
              on_error: Callable[[str, str], None] | None = None, node_check_s: float = 1.0,
              settings: SerialSettings = SerialSettings(baudrate=9600),  # noqa: B008 - frozen
              discard_input: bool = False) -> SerialPort:
    return SerialPort(str(path), label="test port=pty", on_data=on_data, on_error=on_error,
                      settings=settings, discard_input=discard_input, reopen_min_s=0.02,
                      reopen_max_s=0.1, node_check_s=node_check_s)


def new_pty() -> tuple[int, str]:
    """A raw pty's master and its slave's name (the port opens the slave by its path)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    name = os.ttyname(slave)
    os.close(slave)
    return master, name


def point(link: Path, target: str) -> None:
    """Move ``link`` to ``target`` in one step, as udev moves a by-id link."""
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)


async def read_master(master: int, size: int, limit_s: float = 10.0) -> bytes:
    """What the port wrote, read from the master end without blocking the loop.

    Only once the port holds the slave end open: before that the master reads EIO."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(master, readable)
    try:
        async with asyncio.timeout(limit_s):
            await ready
    finally:
        loop.remove_reader(master)
    return os.read(master, size)


@contextlib.asynccontextmanager
async def run_port(port: SerialPort,
                   session: Callable[[], Awaitable[None]] | None = None
                   ) -> AsyncIterator[None]:
    async with running(port.run(session)):
        yield
    # Cancellation is the way to stop it, and it leaves the port closed.
    assert port.statistics().state == "closed"


async def test_pulled_and_plugged_again_at_the_same_path(tmp_path: Path) -> None:
    received, reported = Received(), Reported()
    with fake_port(tmp_path / "ttyUSB-by-id") as pty:
        port = make_port(pty.link, received, on_error=reported)
        async with run_port(port):
            await until(lambda: port.statistics().open)
            pty.write(b"first\n")
            await received.expect(b"first\n")

            pty.unplug()  # the master closes: the slave end reads EIO or end of file
            await until(lambda: not port.is_open)
            st = port.statistics()
            assert st.state in ("port_gone", "reopening")
            assert st.losses == 1
            (gone,) = reported.of("port_gone")
            assert gone.startswith(f"port {pty.link} went away")
            # While the path is missing, every attempt fails and is counted; still one loss.
            await until(lambda: port.statistics().reopen_attempts >= 2)
            st = port.statistics()
            assert st.state == "reopening"
            assert st.losses == 1
            assert st.open_failures == st.reopen_attempts == len(reported.of("open_failed"))
            assert (st.last_error or "").startswith(f"cannot open {pty.link}")

            pty.plug()  # a new pty behind the same symlink, as a replugged adapter
            await until(lambda: port.statistics().open)
            pty.write(b"second\n")
            await received.expect(b"second\n")
            st = port.statistics()
            assert (st.opens, st.losses, st.reopen_attempts) == (2, 1, 0)
            assert st.path == str(pty.link)
    assert bytes(received.data) == b"first\nsecond\n"


async def test_a_vanished_or_moved_device_node_is_noticed_though_reads_never_fail(
    tmp_path: Path
) -> None:
    received, reported = Received(), Reported()
    link = tmp_path / "ttyACM-by-id"
    masters: list[int] = []

    def plug_new(where: Path) -> int:
        master, name = new_pty()
        masters.append(master)
        point(where, name)
        return master

    first = plug_new(link)
    try:
        port = make_port(link, received, on_error=reported, node_check_s=0.05)
        async with run_port(port):
            await until(lambda: port.statistics().open)
            os.write(first, b"a\n")
            await received.expect(b"a\n")

            # The node goes, but every master stays open: this descriptor never fails a read.
            link.unlink()
            await until(lambda: not port.is_open)
            (gone,) = reported.of("port_gone")
            assert gone.startswith(f"port {link} went away: the device node is gone")

            second = plug_new(link)  # it comes back as another device
            await until(lambda: port.statistics().open)
            os.write(second, b"b\n")
            await received.expect(b"b\n")

            third = plug_new(link)  # the link moves while the port is open on `second`
            await until(lambda: port.statistics().opens == 3)
            assert port.statistics().losses == 2
            assert reported.of("port_gone")[1] == (
                f"port {link} went away: the path names another device now")
            os.write(third, b"c\n")
            await received.expect(b"c\n")
    finally:
        for master in masters:
            os.close(master)
    assert bytes(received.data) == b"a\nb\nc\n"


async def test_the_session_is_told_when_the_port_goes_and_runs_again_after(
    tmp_path: Path
) -> None:
    answers: list[asyncio.Future[bytes]] = []
    told: list[tuple[str, str]] = []
    sessions = 0

    def on_data(chunk: bytes) -> None:
        if answers and not answers[-1].done():
            answers[-1].set_result(chunk)

    with fake_port(tmp_path / "ttyRS485") as pty:
        port = make_port(pty.link, on_data, discard_input=True,
                         settings=SerialSettings(baudrate=19200, parity="E"))

        async def session() -> None:
            nonlocal sessions
            sessions += 1
            answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            answers.append(answer)
            port.write(b"ping")
            try:
                assert await port.wait(answer, 30) == b"pong"
            except PortGone as exc:
                told.append(("waiting for an answer", exc.reason))
                raise
            try:
                await port.sleep(math.inf)
            except PortGone as exc:
                told.append(("sleeping", exc.reason))
                raise

        async with run_port(port, session):
            assert pty.master is not None
            await until(lambda: len(answers) == 1)  # the session has written
            assert await read_master(pty.master, 64) == b"ping"
            pty.write(b"pong")
            await until(lambda: sessions == 1 and answers[0].done())
            pty.unplug()
            await until(lambda: len(told) == 1)
            assert told[0][0] == "sleeping"
            assert told[0][1].startswith(f"port {pty.link} went away")
            pty.plug()
            await until(lambda: len(answers) == 2)
            assert await read_master(pty.master, 64) == b"ping"
            pty.unplug()  # before the answer: the wait for it ends at once, not at 10 s
            await until(lambda: len(told) == 2)
            assert told[1][0] == "waiting for an answer"
            assert sessions == 2
            # Waiting on a port that is gone raises at once, even for no time at all.
            with pytest.raises(PortGone):
                await port.sleep(0)
            with pytest.raises(PortGone):
                port.write(b"late")
        assert port.statistics().losses == 2


async def test_the_port_is_exclusive_and_released_when_stopped(tmp_path: Path) -> None:
    with fake_port(tmp_path / "ttyUSB-shared") as pty:
        first = make_port(pty.link, Received())
        second = make_port(pty.link, Received())
        async with run_port(first):
            await until(lambda: first.is_open)
            async with run_port(second):
                await until(lambda: second.statistics().reopen_attempts >= 1)
                st = second.statistics()
                assert st.state == "reopening"
                assert st.opens == 0
                assert (st.last_error or "").startswith(f"cannot open {pty.link}")
        # Stopped, the first let go of it: anyone may open it now.
        with serial.Serial(str(pty.link), timeout=0, exclusive=True):
            pass


def test_a_port_that_never_ran_is_closed(tmp_path: Path) -> None:
    port = make_port(tmp_path / "nothing", Received())
    st = port.statistics()
    assert (st.state, st.open, st.opens, st.losses, st.last_error) == (
        "closed", False, 0, 0, None)
