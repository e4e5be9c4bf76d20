"""The HTTP server holds: connection caps, head and body timeouts, bodies limited before reading.

The gateway runs as a real process with systemd's default open-file limit (1,024) while other
loopback addresses (127.0.0.2 and up: Linux routes all of 127/8 to lo) lay siege to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from gateway.web.events import EventHub
from tests.conftest import (
    ROOT,
    Publisher,
    answers_health,
    base_config,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(120)
SITE = "taman-uji"
MB = 1024 * 1024


class Limited:
    """``python -m gateway run`` under ``prlimit --nofile=N:N`` (prlimit execs: same pid)."""

    def __init__(self, tmp_path: Path, cfg: dict[str, Any], nofile: int = 1024) -> None:
        self.cfg = cfg
        self.port: int = cfg["api"]["port"]
        self.api = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "gateway.log"
        path = write_config(tmp_path / "gateway.yaml", cfg)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["/usr/bin/prlimit", f"--nofile={nofile}:{nofile}", sys.executable, "-m", "gateway",
                 "run", "--config", str(path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: answers_health(self.proc, self.api, self.log_path), timeout=30,
                 what="gateway /health")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_files(self) -> int:
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=30)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Callable[..., Limited]]:
    made: list[Limited] = []

    def make(cfg: dict[str, Any], nofile: int = 1024) -> Limited:
        gw = Limited(tmp_path, cfg, nofile)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()


def config(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
           **api: Any) -> dict[str, Any]:
    cfg = base_config(tmp_path, mosquitto, influx, db, devices=[
        {"id": "kebun-9", "kind": "garden_env", "site": SITE, "interval_s": 60}])
    cfg["api"].update(api)
    return cfg


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def health_ok(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_1500_half_open_connections_at_1024_files_leave_health_and_ingest_alone(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Callable[[int], Publisher], limited: Callable[..., Limited],
) -> None:
    gw = limited(config(tmp_path, mosquitto, influx_server, db_name, header_timeout_s=4.0,
                        max_connections_per_client=64))
    limits = Path(f"/proc/{gw.proc.pid}/limits").read_text()
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["1024", "1024"]
               for line in limits.splitlines()), limits
    pub = publisher_factory(mosquitto.port)

    siege: list[socket.socket] = []
    health_answers: list[bool] = []
    try:
        for i in range(1500):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i // 50}", 0))  # 30 addresses, 50 each
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", gw.port))
            siege.append(s)
            if i % 100 == 99:
                # The legitimate world, from 127.0.0.1, during the siege.
                health_answers.append(health_ok(gw.api))
                pub.publish(f"garden/{SITE}/kebun-9/telemetry", {"temperature_c": 20 + i / 100},
                            qos=1)
        for n, s in enumerate(siege):  # half of them send half a request line
            if n % 2:
                with contextlib.suppress(OSError):
                    s.send(b"GET /api/v1/resi")
        for _ in range(5):
            health_answers.append(health_ok(gw.api))
        assert all(health_answers), health_answers
        assert gw.proc.poll() is None

        # Ingest went on: every reading published during the siege reached InfluxDB.
        query = 'SELECT "temperature_c" FROM "garden_env" WHERE "device"=\'kebun-9\''

        def delivered() -> int:
            rows = influx_server.query(query, db_name)
            return len(rows[0]["values"]) if rows else 0
        wait_for(lambda: delivered() == 15, timeout=20,
                 what="the 15 readings of the siege in InfluxDB")

        # The head timeout (or a newer connection's need) closed every one of them.
        started = time.monotonic()
        wait_for(lambda: all(closed_by_peer(s) for s in siege if s.fileno() != -1),
                 timeout=30, what="the half-open connections closed by the gateway")
        closed_after = time.monotonic() - started
        assert gw.open_files() < 200
        assert health_ok(gw.api)
        log = gw.log()
        assert "Too many open files" not in log, log
        assert "out of system resource" not in log, log
        assert "Traceback" not in log, log
        (tmp_path / "siege.txt").write_text(f"all closed {closed_after:.1f}s after the siege\n")
    finally:
        for s in siege:
            s.close()
    assert gw.stop() == 0


def post_raw(port: int, head: bytes, body_chunks: Iterator[bytes], *,
             timeout_s: float = 10) -> bytes:
    """Send a request head and as much of a body as the server takes; the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        deadline = time.monotonic() + timeout_s
        for chunk in body_chunks:
            view = memoryview(chunk)
            while view and time.monotonic() < deadline:
                readable, writable, _ = select.select([s], [s], [], 1)
                if readable:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        return answer
                    if not data:
                        return answer
                    answer += data
                if writable:
                    try:
                        view = view[s.send(view):]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        return answer + _rest(s)
            if time.monotonic() >= deadline or answer:
                break
        return answer + _rest(s)


def _rest(s: socket.socket) -> bytes:
    s.setblocking(True)
    s.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := s.recv(65536):
            data += chunk
    return data


def megabytes(n: int, *, chunked: bool = False) -> Iterator[bytes]:
    block = b"x" * MB
    for _ in range(n):
        yield f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block


def test_a_64_mb_session_body_is_refused_unread_and_costs_no_memory(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    limited: Callable[..., Limited],
) -> None:
    gw = limited(config(tmp_path, mosquitto, influx_server, db_name))
    for _ in range(3):  # warm up the paths once, so RSS measures the body and nothing else
        httpx.post(f"{gw.api}/api/v1/session", json={"token": "x" * 20}, timeout=5)
    before = gw.rss_kb()
    started = time.monotonic()
    head = (f"POST /api/v1/session HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {64 * MB}\r\n\r\n").encode()
    answer = post_raw(gw.port, head, megabytes(64))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    chunked_head = (b"POST /api/v1/session HTTP/1.1\r\nHost: gw\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer = post_raw(gw.port, chunked_head, megabytes(64, chunked=True))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    took = time.monotonic() - started
    after = gw.rss_kb()
    (tmp_path / "rss.txt").write_text(f"RSS before {before} kB after {after} kB "
                                      f"({took:.2f}s for both)\n")
    assert after - before < 5 * 1024, (before, after)
    # A GET with a body is refused too; a proper sign-in still works.
    r = httpx.request("GET", f"{gw.api}/health", content=b"x" * 10, timeout=5)
    assert r.status_code == 413
    assert health_ok(gw.api)


def test_an_oversized_or_slow_request_head_and_a_slow_body_are_cut_off(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    limited: Callable[..., Limited],
) -> None:
    gw = limited(config(tmp_path, mosquitto, influx_server, db_name, header_timeout_s=1.0,
                        body_timeout_s=1.0, max_header_bytes=8192))
    before = gw.rss_kb()
    # A head of 16 MB: refused once it passes the limit, not buffered.
    head = b"GET /health HTTP/1.1\r\nHost: gw\r\n"
    filler = (b"X-Filler: " + b"a" * 1000 + b"\r\n" for _ in range(16 * 1024))
    answer = post_raw(gw.port, head, filler)
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]
    assert gw.rss_kb() - before < 5 * 1024
    # A head that never ends: closed after header_timeout_s.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n")
        started = time.monotonic()
        assert _rest(s) == b""
        assert 0.5 < time.monotonic() - started < 5
    # A body that never ends: 408 after body_timeout_s.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"POST /api/v1/session HTTP/1.1\r\nHost: gw\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"to")
        started = time.monotonic()
        assert _rest(s).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 5
    assert health_ok(gw.api)


def test_one_address_cannot_hold_more_than_its_share(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    limited: Callable[..., Limited],
) -> None:
    gw = limited(config(tmp_path, mosquitto, influx_server, db_name,
                        max_connections_per_client=10, header_timeout_s=30.0))
    held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5,
                                     source_address=("127.0.0.9", 0)) for _ in range(10)]
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5,
                                      source_address=("127.0.0.9", 0)) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert not _rest(extra).startswith(b"HTTP/1.1 200")  # closed at once
        assert health_ok(gw.api)  # another address still gets in
    finally:
        for s in held:
            s.close()
    wait_for(lambda: httpx.get(f"{gw.api}/health", timeout=5).status_code == 200, timeout=10,
             what="health")


async def test_the_event_stream_cap_holds_under_many_concurrent_real_clients(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    limited: Callable[..., Limited],
) -> None:
    cap = 20
    gw = await asyncio.to_thread(limited, config(
        tmp_path, mosquitto, influx_server, db_name, sse_max_clients=cap,
        max_connections_per_client=500))
    statuses: list[int] = []
    release = asyncio.Event()
    all_answered = asyncio.Event()

    async def client(n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http, \
                http.stream("GET", f"{gw.api}/api/v1/events") as r:
            statuses.append(r.status_code)
            if len(statuses) == 120:
                all_answered.set()
            if r.status_code == 200:
                await release.wait()

    tasks = [asyncio.create_task(client(n)) for n in range(120)]
    async with asyncio.timeout(30):
        await all_answered.wait()
    assert statuses.count(200) == cap, statuses
    assert statuses.count(503) == len(tasks) - cap
    release.set()
    await asyncio.gather(*tasks)
    # Once they left, the places are free again.
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(50):
            async with http.stream("GET", f"{gw.api}/api/v1/events") as r:
                if r.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert r.status_code == 200


def test_the_hub_counts_a_stream_from_the_moment_it_is_let_in() -> None:
    hub = EventHub(max_clients=3)
    bodies = [hub.stream(operator=False) for _ in range(3)]
    with pytest.raises(Exception, match="already open"):
        hub.stream(operator=False)
    assert hub.statistics()["clients"] == 3
    assert len(bodies) == 3
