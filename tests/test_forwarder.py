"""The forwarder against the real InfluxDB 1.6.7 (v1) and, for v2, against a stub.

Debian's InfluxDB 1.6.7 has no ``/api/v2/write`` (added in 1.8), so the v2 tests talk to a
stub HTTP server; their names say so.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from gateway.core.backoff import Backoff, parse_retry_after
from gateway.store.forwarder import Forwarder
from gateway.store.influx import InfluxWriter
from gateway.store.spool import Spool
from gateway.testing.stack import PrivateInfluxDB
from tests.conftest import until

T0 = 1_795_850_797_000_000_000


def lines(n: int, start: int = 0, measurement: str = "polder") -> list[str]:
    return [f"{measurement},device=p1,site=s level_cm={i}.5 {T0 + i}" for i in range(start,
                                                                                   start + n)]


class FakeSleep:
    """Records requested delays and returns at once: time where it matters is injected."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)

    # The rest of the Clock the forwarder takes: real time.
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
async def spool(tmp_path: Path) -> Any:
    s = Spool.open(tmp_path / "spool.db", max_bytes=10**8)
    yield s
    await s.close()


def make(spool: Spool, url: str, sleep: FakeSleep, **kw: Any) -> tuple[Forwarder, InfluxWriter]:
    writer_kw = {k: kw.pop(k) for k in list(kw) if k in (
        "api", "database", "username", "password", "org", "bucket", "token", "use_gzip")}
    writer = InfluxWriter(url=url, **writer_kw)
    fwd = Forwarder(spool=spool, writer=writer, clock=sleep, backoff_min_s=1.0,
                    backoff_max_s=8.0, auth_retry_s=30.0, **kw)
    return fwd, writer


# -- v1 against the real InfluxDB -------------------------------------------------------------


async def test_v1_delivers_creates_database_and_deletes_rows(
    spool: Spool, influx_server: PrivateInfluxDB, db_name: str
) -> None:
    sleep = FakeSleep()
    fwd, writer = make(spool, influx_server.url, sleep, database=db_name)
    await spool.append(lines(12_000))
    for _ in range(3):
        assert await fwd.forward_once()
    assert spool.statistics().rows == 0
    assert influx_server.count(db_name, "polder", "level_cm") == 12_000
    st = fwd.statistics()
    assert (st.batches, st.written, st.connected, st.state) == (3, 12_000, True, "idle")
    await writer.aclose()


async def test_v1_type_conflict_quarantines_only_the_bad_line(
    spool: Spool, influx_server: PrivateInfluxDB, db_name: str
) -> None:
    sleep = FakeSleep()
    fwd, writer = make(spool, influx_server.url, sleep, database=db_name)
    await spool.append(lines(1))
    assert await fwd.forward_once()
    bad = f'polder,device=p1,site=s level_cm="high" {T0 + 500}'
    batch = lines(40, start=1)
    batch.insert(17, bad)
    await spool.append(batch)
    assert await fwd.forward_once()
    assert spool.statistics().rows == 0
    assert influx_server.count(db_name, "polder", "level_cm") == 41
    q = await spool.quarantined()
    assert [r["line"] for r in q] == [bad]
    assert q[0]["status"] == 400
    assert "field type conflict" in q[0]["reason"]
    assert fwd.statistics().quarantined == 1
    await writer.aclose()


async def test_v1_unparsable_line_is_named_by_the_server_and_quarantined(
    spool: Spool, influx_server: PrivateInfluxDB, db_name: str
) -> None:
    sleep = FakeSleep()
    fwd, writer = make(spool, influx_server.url, sleep, database=db_name)
    garbage = "polder,device=p1 level_cm= 12"
    batch = lines(10)
    batch.insert(3, garbage)
    await spool.append(batch)
    assert await fwd.forward_once()
    assert [r["line"] for r in await spool.quarantined()] == [garbage]
    assert influx_server.count(db_name, "polder", "level_cm") == 10
    await writer.aclose()


async def test_v1_unreachable_backs_off_then_delivers(
    spool: Spool, influx: PrivateInfluxDB, db_name: str
) -> None:
    sleep = FakeSleep()
    fwd, writer = make(spool, influx.url, sleep, database=db_name)
    await spool.append(lines(100))
    influx.stop()
    for _ in range(4):
        assert not await fwd.forward_once()
    st = fwd.statistics()
    assert st.state == "backoff"
    assert st.connected is False
    assert "cannot reach InfluxDB" in (st.last_error or "")
    assert spool.statistics().rows == 100
    # Capped exponential with jitter: each step between half and all of 1, 2, 4, 8 s.
    for delay, step in zip(sleep.delays, [1, 2, 4, 8], strict=True):
        assert step / 2 <= delay <= step
    influx.start()
    assert await fwd.forward_once()
    assert influx.count(db_name, "polder", "level_cm") == 100
    assert fwd.statistics().state == "idle"
    await writer.aclose()


async def test_v1_wrong_password_pauses_until_fixed(
    spool: Spool, tmp_path: Path, db_name: str
) -> None:
    with PrivateInfluxDB(tmp_path / "authdb", auth=("admin", "admin-pw")) as server:
        server.create_database(db_name)
        sleep = FakeSleep()
        fwd, writer = make(spool, server.url, sleep, database=db_name, username="garden",
                           password="s3cret", create_database=False)
        await spool.append(lines(5))
        assert not await fwd.forward_once()
        st = fwd.statistics()
        assert st.state == "auth_failed"
        assert "401" in (st.last_error or "")
        assert sleep.delays == [30.0]
        # The admin creates the user: the next attempt resumes by itself.
        server.query("CREATE USER garden WITH PASSWORD 's3cret'")
        server.query(f'GRANT ALL ON "{db_name}" TO garden')
        assert await fwd.forward_once()
        assert server.count(db_name, "polder", "level_cm") == 5
        await writer.aclose()


async def test_v1_missing_database_without_rights_says_who_must_create_it(
    spool: Spool, tmp_path: Path, db_name: str
) -> None:
    with PrivateInfluxDB(tmp_path / "authdb", auth=("admin", "admin-pw")) as server:
        server.query("CREATE USER garden WITH PASSWORD 'pw'")
        sleep = FakeSleep()
        fwd, writer = make(spool, server.url, sleep, database=db_name, username="garden",
                           password="pw")
        await spool.append(lines(3))
        assert not await fwd.forward_once()
        st = fwd.statistics()
        assert st.state == "database_missing"
        assert f'an InfluxDB admin must run: CREATE DATABASE "{db_name}"' in (st.last_error or "")
        server.create_database(db_name)
        server.query(f'GRANT WRITE ON "{db_name}" TO garden')
        assert await fwd.forward_once()
        assert server.count(db_name, "polder", "level_cm") == 3
        await writer.aclose()


# -- v2 against a stub (InfluxDB 1.6.7 has no /api/v2/write) --------------------------------


@dataclass
class StubRequest:
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    lines: list[str]


@dataclass
class V2Stub:
    """Scripted /api/v2/write: ``script`` answers each request (status, headers, body)."""

    url: str = ""
    requests: list[StubRequest] = field(default_factory=list)
    script: Callable[[StubRequest], tuple[int, dict[str, str], str]] = (
        lambda r: (204, {}, ""))


@pytest.fixture
def v2_stub() -> Iterator[V2Stub]:
    stub = V2Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            url = urlparse(self.path)
            req = StubRequest(url.path, parse_qs(url.query), dict(self.headers),
                              body.decode().split("\n"))
            stub.requests.append(req)
            status, headers, text = stub.script(req)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            data = text.encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def v2(spool: Spool, stub: V2Stub, sleep: FakeSleep) -> tuple[Forwarder, InfluxWriter]:
    return make(spool, stub.url, sleep, api="v2", org="diskominfo", bucket="garden",
                token="tok-123", create_database=False, batch_size=5000)


async def test_v2_stub_write_uses_org_bucket_token_and_gzip(spool: Spool,
                                                            v2_stub: V2Stub) -> None:
    fwd, writer = v2(spool, v2_stub, FakeSleep())
    await spool.append(lines(7))
    assert await fwd.forward_once()
    (req,) = v2_stub.requests
    assert req.path == "/api/v2/write"
    assert req.params == {"org": ["diskominfo"], "bucket": ["garden"], "precision": ["ns"]}
    assert req.headers["Authorization"] == "Token tok-123"
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.lines == lines(7)
    assert spool.statistics().rows == 0
    await writer.aclose()


async def test_v2_stub_429_honours_retry_after(spool: Spool, v2_stub: V2Stub) -> None:
    answers = iter([(429, {"Retry-After": "17"}, '{"code":"too many requests"}'),
                    (204, {}, "")])
    v2_stub.script = lambda r: next(answers)
    sleep = FakeSleep()
    fwd, writer = v2(spool, v2_stub, sleep)
    await spool.append(lines(3))
    assert not await fwd.forward_once()
    assert sleep.delays == [17.0]
    assert fwd.statistics().state == "backoff"
    assert spool.statistics().rows == 3
    assert await fwd.forward_once()
    assert spool.statistics().rows == 0
    await writer.aclose()


async def test_v2_stub_503_backs_off_with_growing_jittered_delays(spool: Spool,
                                                                  v2_stub: V2Stub) -> None:
    v2_stub.script = lambda r: (503, {}, '{"message":"unavailable"}')
    sleep = FakeSleep()
    fwd, writer = v2(spool, v2_stub, sleep)
    await spool.append(lines(1))
    for _ in range(6):
        assert not await fwd.forward_once()
    caps = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(sleep.delays, caps, strict=True))
    assert len(set(sleep.delays)) > 1
    assert fwd.statistics().connected is True  # it answered: reachable, but unwell
    await writer.aclose()


async def test_v2_stub_413_splits_the_batch(spool: Spool, v2_stub: V2Stub) -> None:
    v2_stub.script = lambda r: (413, {}, '{"message":"too large"}') if len(r.lines) > 300 \
        else (204, {}, "")
    fwd, writer = v2(spool, v2_stub, FakeSleep())
    await spool.append(lines(1000))
    assert await fwd.forward_once()
    delivered = [ln for r in v2_stub.requests if len(r.lines) <= 300 for ln in r.lines]
    assert delivered == lines(1000)
    assert spool.statistics().rows == 0
    await writer.aclose()


async def test_v2_stub_422_bisects_to_the_refused_line(spool: Spool, v2_stub: V2Stub) -> None:
    poison = lines(1, start=99)[0]

    def script(r: StubRequest) -> tuple[int, dict[str, str], str]:
        if poison in r.lines:
            return 422, {}, json.dumps({"code": "unprocessable entity",
                                        "message": "failure writing points: schema conflict"})
        return 204, {}, ""

    v2_stub.script = script
    fwd, writer = v2(spool, v2_stub, FakeSleep())
    await spool.append(lines(200))
    assert await fwd.forward_once()
    q = await spool.quarantined()
    assert [r["line"] for r in q] == [poison]
    assert q[0]["status"] == 422
    assert "schema conflict" in q[0]["reason"]
    assert spool.statistics().rows == 0
    await writer.aclose()


async def test_v2_stub_401_pauses_with_clear_state(spool: Spool, v2_stub: V2Stub) -> None:
    v2_stub.script = lambda r: (401, {}, '{"code":"unauthorized","message":"bad token"}')
    sleep = FakeSleep()
    fwd, writer = v2(spool, v2_stub, sleep)
    await spool.append(lines(2))
    assert not await fwd.forward_once()
    st = fwd.statistics()
    assert st.state == "auth_failed"
    assert "bad token" in (st.last_error or "")
    assert sleep.delays == [30.0]
    assert spool.statistics().rows == 2
    await writer.aclose()


def test_retry_after_parses_seconds_and_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_capped_and_resets() -> None:
    import random

    b = Backoff(0.5, 4.0, random.Random(1))
    delays = [b.next() for _ in range(8)]
    assert all(d <= 4.0 for d in delays)
    assert delays[-1] >= 2.0
    b.reset()
    assert b.next() <= 0.5


async def test_idle_forwarder_reports_whether_influxdb_answers(
    spool: Spool, influx: PrivateInfluxDB, db_name: str
) -> None:
    writer = InfluxWriter(url=influx.url, database=db_name)
    fwd = Forwarder(spool=spool, writer=writer, idle_probe_s=0.05)
    task = asyncio.create_task(fwd.run())
    try:
        await until(lambda: fwd.statistics().connected is True)
        influx.stop()
        await until(lambda: fwd.statistics().connected is False)
        assert "does not answer /ping" in (fwd.statistics().last_error or "")
        assert fwd.statistics().state == "idle"
    finally:
        task.cancel()
        await asyncio.wait([task])
        await writer.aclose()


async def test_the_tail_of_a_burst_goes_out_once_input_is_quiet(
    spool: Spool, influx: PrivateInfluxDB, db_name: str
) -> None:
    # A 30 s flush interval would hold these 300 lines; 0.1 s without new input sends them.
    writer = InfluxWriter(url=influx.url, database=db_name)
    fwd = Forwarder(spool=spool, writer=writer, flush_interval_s=30, quiet_flush_s=0.1)
    task = asyncio.create_task(fwd.run())
    try:
        await spool.append(lines(300))
        await until(lambda: spool.rows == 0, 5)
        assert fwd.statistics().written == 300
        assert influx.count(db_name, "polder", "level_cm") == 300
    finally:
        task.cancel()
        await asyncio.wait([task])
        await writer.aclose()


async def test_a_trickle_waits_out_the_flush_interval_not_a_request_per_reading(
    spool: Spool, influx: PrivateInfluxDB, db_name: str
) -> None:
    # A park's pace: a reading, then a quiet moment longer than quiet_flush_s, again and
    # again. Fewer than quiet_flush_min_rows waiting: no quiet flush, one send per interval.
    writer = InfluxWriter(url=influx.url, database=db_name)
    fwd = Forwarder(spool=spool, writer=writer, flush_interval_s=1.0, quiet_flush_s=0.05)
    task = asyncio.create_task(fwd.run())
    try:
        for i in range(6):
            await spool.append([lines(6)[i]])
            await asyncio.sleep(0.1)  # the pace of the input, longer than quiet_flush_s
        await until(lambda: spool.rows == 0, 5)
        assert fwd.statistics().written == 6
        assert fwd.statistics().batches <= 2  # not 6: one per interval
    finally:
        task.cancel()
        await asyncio.wait([task])
        await writer.aclose()
