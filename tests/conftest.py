"""Fixtures: a private Mosquitto and InfluxDB per test (or per session), and the gateway itself.

Everything listens on 127.0.0.1 on free ports inside pytest's temporary folders; nothing here
touches the machine's default ports or system services.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from devices.reading import DecodeError, Reading
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, StackError, free_port

ROOT = Path(__file__).resolve().parent.parent
_db_names = itertools.count(1)


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def until(cond: Callable[[], Any], limit_s: float = 10.0) -> None:
    """The async twin of wait_for, for conditions on statistics snapshots (no event to await)."""
    async with asyncio.timeout(limit_s):
        while not cond():  # noqa: ASYNC110 - polling statistics snapshots in a test
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(*coros: Any) -> AsyncIterator[list[asyncio.Task[Any]]]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        _, pending = await asyncio.wait(tasks, timeout=10)
        # A task that swallowed its cancellation would otherwise hang the test until the
        # suite's timeout, with nothing to say which one.
        assert not pending, f"still running 10 s after cancel: {[t.get_name() for t in pending]}"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateInfluxDB]:
    with PrivateInfluxDB(tmp_path_factory.mktemp("influx")) as server:
        yield server


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[PrivateInfluxDB]:
    """An InfluxDB of this test's own, for tests that stop and start it."""
    with PrivateInfluxDB(tmp_path / "influx") as server:
        yield server


@pytest.fixture
def db_name() -> str:
    return f"garden_t{os.getpid()}_{next(_db_names)}"


# The operator token every test gateway is configured with (tests/test_api.py checks that the
# operator endpoints refuse without it).
OPERATOR_TOKEN = "test-operator-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def base_config(
    tmp_path: Path, broker: PrivateMosquitto, server: PrivateInfluxDB, database: str,
    **overrides: Any,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "gateway": {"id": "gw-test", "site": "taman-uji"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "gw-test",
                 "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        "influx": {"url": server.url, "database": database, "flush_interval_s": 0.2,
                   "backoff_min_s": 0.1, "backoff_max_s": 0.5, "auth_retry_s": 0.3},
        "spool": {"commit_interval_s": 0.02},
        "api": {"host": "127.0.0.1", "port": free_port(), "operator_token": OPERATOR_TOKEN},
        "shutdown_grace_s": 5,
        # This machine's kernel says its clock is unsynchronised (no NTP in the container):
        # "auto" would hold every reading the gateway stamps. tests/test_timesync.py covers it.
        "clock": {"require_sync": "no"},
        "subscriptions": [
            {"name": "native", "topic": "garden/+/+/telemetry", "format": "native"},
            {"name": "weather", "topic": "vendor/weather/#", "format": "json",
             "options": {"device_key": "id", "fields": {"temp": "temperature_c"}}},
            {"name": "telegraf", "topic": "telegraf/#", "format": "influx"},
        ],
        "devices": [{"id": "polder-1", "kind": "polder"}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def answers_health(proc: subprocess.Popen[bytes], api: str, log_path: Path) -> bool:
    """Whether the gateway at ``api`` answers /health; a gateway that exited fails the test."""
    if proc.poll() is not None:
        raise AssertionError(f"gateway exited with {proc.returncode}:\n"
                             f"{log_path.read_text(encoding='utf-8', errors='replace')}")
    try:
        return httpx.get(f"{api}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def serving(argv: list[str], *, api: str, log_path: Path, env: dict[str, str],
            cwd: Path, what: str) -> Iterator[str]:
    """A gateway command as a child: yields ``api`` once /health answers; afterwards SIGTERM,
    and the test fails unless it exits 0."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        wait_for(lambda: answers_health(proc, api, log_path), timeout=30, what=what)
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        assert code == 0, log_path.read_text(encoding="utf-8", errors="replace")


class GatewayProcess:
    """``python -m gateway run`` as a child process, as systemd would run it."""

    def __init__(self, config_path: Path, cfg: dict[str, Any], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = f"http://127.0.0.1:{cfg['api']['port']}"

    def start(self, *, wait: bool = True) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
        )
        log.close()
        if wait:
            wait_for(self._healthy, timeout=30, what="gateway /health")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        return answers_health(self.proc, self.api, self.log_path)

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.api}/api/v1/status", timeout=5, headers=OPERATOR)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def make(cfg: dict[str, Any], *, start: bool = True,
             env: dict[str, str] | None = None) -> GatewayProcess:
        n = len(started)
        path = write_config(tmp_path / f"gateway{n}.yaml", cfg)
        gw = GatewayProcess(path, cfg, tmp_path / f"gateway{n}.log", env)
        started.append(gw)
        if start:
            gw.start()
        return gw

    yield make
    for gw in started:
        gw.stop()


class Publisher:
    """A QoS 1 publisher that waits for every PUBACK (paho, its own network thread)."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], *,
                qos: int = 1, retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher_factory() -> Iterator[Callable[[int], Publisher]]:
    made: list[Publisher] = []

    def make(port: int) -> Publisher:
        pub = Publisher(port, client_id=f"test-publisher-{len(made)}")
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close()


def decodes_or_refuses(decode: Callable[[str, bytes, int, Any], list[Reading]], topic: str,
                       payload: bytes, received_at_ns: int, opts: Any) -> None:
    """A decoder either returns readings or raises DecodeError naming what it was given;
    anything else escaping (an IndexError, a KeyError) fails the property tests."""
    try:
        result = decode(topic, payload, received_at_ns, opts)
    except DecodeError as error:
        refused = error
    else:
        assert all(isinstance(r, Reading) for r in result)
        return
    assert (refused.source, refused.payload) == (topic, payload)


def influx_count(server: PrivateInfluxDB, db: str, measurement: str, field: str) -> int:
    try:
        return server.count(db, measurement, field)
    except (StackError, httpx.HTTPError):
        # The database may not exist yet while we wait for the gateway to create it.
        return 0


@contextlib.asynccontextmanager
async def gateway_in_process(tmp_path: Path, cfg: dict[str, Any],
                             clock: Any = None) -> AsyncIterator[Any]:
    """The gateway on this test's event loop (for a FakeClock), its API served for real."""
    from gateway.app.gateway import Gateway
    from gateway.config import validate_raw

    config = validate_raw(json.loads(json.dumps(cfg)), env={}, base=tmp_path).config
    async with Gateway(config, clock=clock) as gateway:
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop), name="gateway under test")
        api = f"http://127.0.0.1:{cfg['api']['port']}"
        try:
            async with httpx.AsyncClient(base_url=api, timeout=5, headers=OPERATOR) as http:
                async with asyncio.timeout(30):
                    while True:
                        if task.done():
                            task.result()
                        with contextlib.suppress(httpx.TransportError):
                            if (await http.get("/health")).status_code == 200:
                                break
                        await asyncio.sleep(0.02)
                setattr(gateway, "http", http)  # noqa: B010 - the test's handle on the API
                yield gateway
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def debian_binary(name: str, folder: str, package: str) -> str:
    """A program ./dev takes out of a Debian package into .venv/<folder> (binary only, no
    service): on PATH, or there. Missing: a failure in CI (./dev test must have fetched it), a
    skip elsewhere, saying how to get it."""
    found = shutil.which(name)
    if found is not None:
        return found
    local = ROOT / ".venv" / folder / "usr" / "bin" / name
    if local.is_file():
        return str(local)
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing in CI: ./dev test takes it out of Debian's {package}")
    pytest.skip(f"{name} not installed (./dev test fetches it from Debian's {package})")


class Watcher:
    """Subscribes and keeps the last message per topic (retained ones included)."""

    def __init__(self, port: int, topic: str, client_id: str = "test-watcher") -> None:
        self.last: dict[str, bytes] = {}
        self.retained: dict[str, bool] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.last[msg.topic] = bytes(msg.payload)
        self.retained[msg.topic] = bool(msg.retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- a small SD card: a tmpfs of its own -----------------------------------------------------


@contextlib.contextmanager
def small_card(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path`` for the block: a card that really fills
    up (ENOSPC, SQLITE_FULL). Skips the test where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("no mount(8) here: a small card cannot be made")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size_bytes},mode=0777",
                           "tmpfs", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run([umount, "-l", str(path)], capture_output=True, check=False)


def fill_card(card: Path, *, leave_bytes: int = 0, name: str = "filler") -> Path:
    """Fill the filesystem holding ``card`` until under ``leave_bytes`` are free (0: until it
    refuses even one byte); returns the filler file, whose removal gives the room back."""
    filler = card / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                st = os.statvfs(card)
                if leave_bytes and st.f_bavail * st.f_frsize - chunk < leave_bytes:
                    break
                try:
                    os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
