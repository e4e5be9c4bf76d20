"""systemd: the unit passes ``systemd-analyze verify``, and the notify protocol (READY, STATUS,
WATCHDOG, STOPPING) goes through a real ``NOTIFY_SOCKET`` that this test binds, the way
systemd's end of it would. The watchdog is withheld when the gateway's loops are not alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import gateway.app.gateway as app
import gateway.app.watchdog as watchdog
from gateway.app.gateway import Gateway
from gateway.app.sdnotify import Notifier, watchdog_interval_s
from gateway.config import Config
from gateway.core.errors import SpoolError
from gateway.pipeline.ingest import Outcome
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import ROOT, GatewayProcess, base_config, gateway_in_process, until, wait_for

UNIT = ROOT / "systemd" / "garden-gateway.service"
INSTALLED_EXEC = "/opt/garden-gateway/.venv/bin/garden-gateway"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


class NotifyListener:
    """systemd's end of ``NOTIFY_SOCKET``: a bound datagram socket and a thread that keeps
    every message with the monotonic time it arrived."""

    def __init__(self, address: str, on_ready: Callable[[], Any] | None = None) -> None:
        self.address = address
        # Called on the listener's thread the moment READY=1 arrives; its answer is kept.
        self._on_ready = on_ready
        self.on_ready_said: Any = None
        target: str | bytes = (b"\0" + address[1:].encode() if address.startswith("@")
                               else address)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(target)
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify listener",
                                        daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            at = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            if "READY" in fields and self._on_ready is not None:
                self.on_ready_said = self._on_ready()
            with self._lock:
                self._messages.append((at, fields))

    def messages(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._messages)

    def times(self, key: str) -> list[float]:
        return [at for at, fields in self.messages() if key in fields]

    def first(self, key: str) -> tuple[float, dict[str, str]] | None:
        return next(((at, f) for at, f in self.messages() if key in f), None)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._sock.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _socket_path(tmp_path: Path) -> str:
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, f"AF_UNIX paths are limited to 107 bytes: {path}"
    return path


# -- the unit ----------------------------------------------------------------------------------

def _unit_for_verify(directory: Path, text: str) -> Path:
    """The unit with ExecStart pointed at this venv's real script (verify checks that the
    program exists); every other byte as in the repository."""
    assert text.count(INSTALLED_EXEC) == 1
    exe = Path(sys.executable).parent / "garden-gateway"
    assert exe.exists(), f"{exe}: the venv's console script (pip install -e .)"
    directory.mkdir(parents=True, exist_ok=True)
    unit = directory / "garden-gateway.service"
    unit.write_text(text.replace(INSTALLED_EXEC, str(exe)), encoding="utf-8")
    return unit


def _verify(unit: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about this unit file (its other output concerns
    the host's own units)."""
    assert Path(SYSTEMD_ANALYZE).exists(), "systemd-analyze (Debian package systemd) missing"
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info", "SYSTEMD_LOG_COLOR": "0",
           "SYSTEMD_PAGER": ""}
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    said = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 or said, f"verify failed: {done.stdout}{done.stderr}"
    return said


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_for_verify(tmp_path / "good", UNIT.read_text(encoding="utf-8"))
    assert _verify(unit) == []


def test_the_regency_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = (UNIT.parent / "garden-regency.service").read_text(encoding="utf-8")
    installed = "/opt/garden-gateway/.venv/bin/garden-gateway regency"
    assert text.count(installed) == 1
    exe = Path(sys.executable).parent / "garden-gateway"
    directory = tmp_path / "regency"
    directory.mkdir()
    unit = directory / "garden-regency.service"
    unit.write_text(text.replace(installed, f"{exe} regency"), encoding="utf-8")
    assert _verify(unit) == []


@pytest.mark.parametrize(("wrong", "said"), [
    (("WatchdogSec=30", "WatchdogSecs=30"), "Unknown key 'WatchdogSecs'"),
    (("DevicePolicy=closed", "DevicePolicy=closd"), "device policy"),
    (("Type=notify", "Type=notfy"), "service type"),
])
def test_verify_catches_a_broken_unit(tmp_path: Path, wrong: tuple[str, str], said: str) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(f"\n{wrong[0]}\n") == 1
    unit = _unit_for_verify(tmp_path / "broken", text.replace(f"\n{wrong[0]}\n",
                                                              f"\n{wrong[1]}\n"))
    complaints = _verify(unit)
    assert any(said in line for line in complaints), complaints


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_says_what_the_gateway_needs() -> None:
    s = _unit_settings()
    one = {key: values[-1] for key, values in s.items()}
    assert (one["Type"], one["NotifyAccess"], one["Restart"]) == ("notify", "main", "always")
    assert one["StartLimitIntervalSec"] == "0"  # never gives up
    assert float(one["WatchdogSec"]) == 30
    # The stop outlasts the default grace plus what follows it; a longer grace is covered by
    # EXTEND_TIMEOUT_USEC (test_notify_protocol_through_a_real_notify_socket).
    grace = Config.model_fields["shutdown_grace_s"].default
    assert float(one["TimeoutStopSec"]) >= grace + app.STOP_MARGIN_S
    assert one["ExecStart"] == f"{INSTALLED_EXEC} run --config /etc/garden-gateway/config.yaml"
    assert one["EnvironmentFile"] == "-/etc/garden-gateway/secrets.env"
    assert one["StateDirectory"] == "garden-gateway"
    assert "GARDEN_GATEWAY_DATA_DIR=/var/lib/garden-gateway" in s["Environment"]
    assert (one["User"], one["Group"], one["SupplementaryGroups"]) == (
        "garden-gateway", "garden-gateway", "dialout")
    assert one["CapabilityBoundingSet"] == ""
    assert one["DevicePolicy"] == "closed"
    assert {"char-ttyUSB rw", "char-ttyACM rw"} <= set(s["DeviceAllow"])
    assert (one["ProtectSystem"], one["NoNewPrivileges"]) == ("strict", "yes")
    # Nothing but the state directory is writable: the spool, state and history live there.
    assert "ReadWritePaths" not in s


# -- the client ---------------------------------------------------------------------------------

def test_notifier_is_a_no_op_without_notify_socket() -> None:
    env: dict[str, str] = {"WATCHDOG_USEC": "1000000"}
    n = Notifier.from_environment(env)
    assert not n.enabled
    assert n.watchdog_s is None  # no socket, nobody to ping
    assert not n.ready("up")
    assert not n.watchdog()
    assert (n.statistics().sent, n.statistics().failed) == (0, 0)


def test_notifier_sends_to_an_abstract_socket_and_unsets_the_environment() -> None:
    listener = NotifyListener(f"@garden-gateway-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "2500000",
               "WATCHDOG_PID": str(os.getpid()), "OTHER": "kept"}
        n = Notifier.from_environment(env, unset=True)
        assert env == {"OTHER": "kept"}  # a child process the gateway starts inherits none
        assert n.watchdog_s == 2.5
        assert n.ready("line one\nSTOPPING=1")
        assert n.watchdog()
        wait_for(lambda: len(listener.messages()) == 2, timeout=5, what="two datagrams")
        (_, ready), (_, ping) = listener.messages()
        # A newline in STATUS would have smuggled in an assignment of its own.
        assert ready == {"READY": "1", "STATUS": "line one STOPPING=1"}
        assert ping == {"WATCHDOG": "1"}
        assert n.statistics().sent == 2
        n.close()
    finally:
        listener.close()


def test_failed_sends_are_counted_and_logged_once(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    with caplog.at_level(logging.WARNING, logger="gateway.app.sdnotify"):
        assert not n.watchdog()
        assert not n.watchdog()
        assert not n.status("still here")
    n.close()
    stats = n.statistics()
    assert (stats.sent, stats.failed) == (0, 3)
    assert stats.last_error is not None
    assert "nobody-listens.sock" in stats.last_error
    assert len([r for r in caplog.records if r.name == "gateway.app.sdnotify"]) == 1
    relative = Notifier("relative/notify.sock")
    assert not relative.enabled
    assert relative.statistics().failed == 1


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # another process's
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}, None),
])
def test_watchdog_interval_honours_watchdog_pid(env: dict[str, str],
                                                expected: float | None) -> None:
    assert watchdog_interval_s(env, pid=4242) == expected


# -- the real gateway, as systemd runs it ------------------------------------------------------

def test_notify_protocol_through_a_real_notify_socket(
        tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB,
        db_name: str, gateway_factory: Callable[..., GatewayProcess]) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    listener = NotifyListener(_socket_path(tmp_path), lambda: _accepts(cfg["api"]["port"]))
    try:
        # WATCHDOG_PID left unset: the child's pid is not known before it starts, and unset
        # means "whoever reads it" (sd_watchdog_enabled(3)).
        gw = gateway_factory(cfg, start=False, env={"NOTIFY_SOCKET": listener.address,
                                                    "WATCHDOG_USEC": "1000000"})
        gw.env.pop("WATCHDOG_PID", None)
        gw.start(wait=False)
        ready = wait_for(lambda: listener.first("READY"), timeout=30, what="READY=1")
        # READY=1 means the API listens: it accepted a connection the moment READY came,
        # and answers at once.
        assert listener.on_ready_said is True
        assert httpx.get(f"{gw.api}/health", timeout=2).status_code == 200
        ready_at, fields = ready
        assert re.fullmatch(r"mqtt=\S+ influx=\S+ spool_rows=\d+ received=\d+ written=\d+",
                            fields["STATUS"]), fields
        assert listener.messages()[0][1] == fields  # nothing before READY
        wait_for(lambda: len(listener.times("WATCHDOG")) >= 5, timeout=10, what="5 pings")
        pings = listener.times("WATCHDOG")
        assert pings[0] > ready_at
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        assert 0.35 < gaps[len(gaps) // 2] < 0.75, gaps  # every half of WATCHDOG_USEC

        assert gw.terminate() == 0
        stopping_at, stopping = wait_for(lambda: listener.first("STOPPING"), timeout=5,
                                         what="STOPPING=1")
        assert stopping["STATUS"].startswith("stopping")
        grace = cfg["shutdown_grace_s"]
        assert int(stopping["EXTEND_TIMEOUT_USEC"]) == int((grace + app.STOP_MARGIN_S) * 1e6)
        assert max(listener.times("WATCHDOG")) < stopping_at
        assert "systemd: ready, watchdog=1s" in gw.log()
    finally:
        listener.close()


@contextlib.asynccontextmanager
async def _watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cfg: dict[str, Any],
                   watchdog_s: float = 0.6, on_ready: Callable[[], Any] | None = None,
                   ) -> AsyncIterator[tuple[Gateway, NotifyListener]]:
    """The gateway in process, under a watchdog of ``watchdog_s``, pinging once ready."""
    listener = NotifyListener(_socket_path(tmp_path), on_ready)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(watchdog_s * 1e6)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(watchdog, "STATUS_S", 0.3)
    try:
        async with gateway_in_process(tmp_path, cfg) as gateway:
            assert "NOTIFY_SOCKET" not in os.environ  # taken out for child processes
            await until(lambda: len(listener.times("WATCHDOG")) >= 2)
            assert "READY" in listener.messages()[0][1]
            assert gateway.alive()
            yield gateway, listener
    finally:
        listener.close()


def _pings_after(listener: NotifyListener, t: float) -> list[float]:
    return [at for at in listener.times("WATCHDOG") if at > t]


def _line() -> Outcome:
    return Outcome([f"watchdog_test value=1i {time.time_ns()}"])


async def test_watchdog_withheld_once_a_task_has_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto: PrivateMosquitto,
        influx_server: PrivateInfluxDB, db_name: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    async with _watched(tmp_path, monkeypatch, cfg) as (gateway, listener):
        task = next(t for t in asyncio.all_tasks() if t.get_name() == "liveness.watch")
        task.cancel()
        await asyncio.wait([task])
        gone = time.monotonic()
        skips = gateway.watchdog_skips
        await until(lambda: gateway.watchdog_skips >= skips + 3, 5)
        assert not gateway.alive()
        # A ping already on its way when the task was cancelled may land just after.
        assert _pings_after(listener, gone + 0.1) == []
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len([e for e in errors if "task liveness.watch was cancelled" in e]) == 1, errors
        assert any(f.get("STATUS") == "not alive: task liveness.watch was cancelled"
                   for _, f in listener.messages())


async def test_watchdog_withheld_while_the_committer_is_stuck_then_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto: PrivateMosquitto,
        influx_server: PrivateInfluxDB, db_name: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      spool={"commit_interval_s": 0.02, "unacked_commit_interval_s": 0.05})
    release = threading.Event()
    async with _watched(tmp_path, monkeypatch, cfg) as (gateway, listener):
        gateway.commit_stall_s = 1.5
        original = gateway.spool.db.append

        def hung_card(*args: Any, **kwargs: Any) -> Any:  # an SD card that stopped answering
            release.wait(30)
            return original(*args, **kwargs)

        monkeypatch.setattr(gateway.spool.db, "append", hung_card)
        try:
            gateway.committer.add(_line())  # its commit hangs
            await until(lambda: gateway.committer.pending == 0, 5)
            gateway.committer.add(_line())  # and this one waits behind it
            await until(lambda: "spool.commit stuck" in caplog.text, 10)
            stuck = time.monotonic()
            assert not gateway.alive()
            skips = gateway.watchdog_skips
            await until(lambda: gateway.watchdog_skips >= skips + 2, 5)
            assert _pings_after(listener, stuck + 0.1) == []
        finally:
            release.set()
        await until(lambda: gateway.committer.statistics()["pending_lines"] == 0, 10)
        freed = time.monotonic()
        await until(lambda: len(_pings_after(listener, freed)) >= 2, 5)
        assert "watchdog: alive again (was: spool.commit stuck" in caplog.text


async def test_a_disk_that_refuses_commits_is_not_a_watchdog_matter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto: PrivateMosquitto,
        influx_server: PrivateInfluxDB, db_name: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      spool={"commit_interval_s": 0.02, "unacked_commit_interval_s": 0.05})
    async with _watched(tmp_path, monkeypatch, cfg) as (gateway, listener):
        gateway.commit_stall_s = 1.5

        original = gateway.spool.db.append
        refusing = True

        def full_disk(*args: Any, **kwargs: Any) -> Any:
            if refusing:
                raise SpoolError("spool write failed: database or disk is full (test)")
            return original(*args, **kwargs)

        monkeypatch.setattr(gateway.spool.db, "append", full_disk)
        gateway.committer.add(_line())
        await until(lambda: gateway.committer.failures >= 1, 5)
        first = time.monotonic()
        # Three failed commits, a second apart: lines wait longer than commit_stall_s.
        await until(lambda: gateway.committer.failures >= 3, 10)
        assert gateway.committer.pending > 0
        assert time.monotonic() - first > gateway.commit_stall_s
        assert gateway.alive()
        assert len(_pings_after(listener, first)) >= 5
        assert "not alive" not in caplog.text
        # ... and it says so where systemctl status shows it.
        await until(lambda: any("commit_failures=" in f.get("STATUS", "")
                                for _, f in listener.messages()), 5)
        refusing = False  # the shutdown's last commit goes through


async def test_a_blocked_event_loop_skips_the_ping(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto: PrivateMosquitto,
        influx_server: PrivateInfluxDB, db_name: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    async with _watched(tmp_path, monkeypatch, cfg) as (gateway, listener):
        block: dict[str, float] = {}

        def hog() -> None:  # a callback that blocks the loop longer than half the interval
            block["start"] = time.monotonic()
            time.sleep(1.0)
            block["end"] = time.monotonic()

        asyncio.get_running_loop().call_soon(hog)
        await until(lambda: "end" in block and len(_pings_after(listener, block["end"])) >= 1,
                    5)
        assert _pings_after(listener, block["start"])[0] - block["end"] > 0.2
        assert "watchdog: not alive, WATCHDOG=1 withheld" in caplog.text
        assert "event loop blocked" in caplog.text
        assert "watchdog: alive again (was: event loop blocked" in caplog.text
        assert gateway.alive()


async def test_ready_waits_for_the_api_to_listen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto: PrivateMosquitto,
        influx_server: PrivateInfluxDB, db_name: str) -> None:
    # A slow start of the web server (a name to resolve, a loaded Pi): READY=1 must wait.
    startup = app._QuietServer.startup

    async def slow_startup(self: Any, sockets: list[socket.socket] | None = None) -> None:
        await asyncio.sleep(0.5)
        await startup(self, sockets)

    monkeypatch.setattr(app._QuietServer, "startup", slow_startup)
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    port = cfg["api"]["port"]
    async with _watched(tmp_path, monkeypatch, cfg, on_ready=lambda: _accepts(port)) as (
            gateway, listener):
        assert listener.on_ready_said is True
        assert gateway.watchdog_pings >= 2
