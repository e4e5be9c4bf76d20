"""The README's main-job command: ``garden-gateway demo`` runs, takes a reading, stops clean."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from gateway.stack import free_port
from tests.conftest import ROOT, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[1].split()[0] != "Z"


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def test_demo_prints_where_to_look_takes_a_reading_and_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "demo.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--workdir", str(tmp_path / "demo"),
             "--api-port", str(port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in out.read_text(), timeout=60,
                 what="the demo banner")
        text = out.read_text()
        assert f"http://127.0.0.1:{port}/api/v1/status" in text
        assert f"http://127.0.0.1:{port}/operator" in text
        found = re.search(r"Authorization: Bearer ([0-9a-f]{32})", text)
        assert found is not None, text
        operator = {"Authorization": f"Bearer {found.group(1)}"}
        def get_status() -> dict[str, Any] | None:
            # The banner comes as the gateway starts; its API may listen a moment later.
            try:
                body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/api/v1/status",
                                                 timeout=2, headers=operator).json()
            except httpx.TransportError:
                return None
            return body

        status = wait_for(lambda: (s := get_status()) is not None and s["mqtt"]["connected"]
                          and s, what="demo gateway connected")
        # The printed mosquitto_pub line works as written.
        pub_line = next(ln.strip() for ln in text.splitlines() if "mosquitto_pub" in ln)
        subprocess.run(pub_line, shell=True, check=True, timeout=10)  # noqa: S602
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=2,
                           headers=operator)
                 .json()["counts"]["written"] >= 1, what="the reading written to InfluxDB")
        assert status["gateway"]["id"] == "gw-taman-bukit-pelangi"
        # The simulated garden sensor (serial) and polder station (Modbus RTU) reach InfluxDB.
        where = re.search(r"InfluxDB\s+(\S+)\s+database (\S+)", text)
        assert where is not None
        influx_url, database = where.groups()

        def stored(query: str) -> list[list[object]]:
            body = httpx.get(f"{influx_url}/query", params={"db": database, "q": query},
                             timeout=5).json()
            series = body["results"][0].get("series", [])
            return series[0]["values"] if series else []

        garden = wait_for(lambda: stored(
            "SELECT soil_moisture_pct FROM garden_env WHERE device = 'kebun-2'"),
            timeout=30, what="the garden simulator's readings in InfluxDB")
        polder = wait_for(lambda: stored(
            "SELECT level_m, level_mm FROM polder WHERE device = 'polder-1' "
            "AND level_m > 0"), timeout=30, what="the polder simulator's readings in InfluxDB")
        assert 0 < float(garden[0][1]) <= 100
        assert abs(float(polder[0][1]) * 1000 - float(polder[0][2])) <= 1
        status = httpx.get(f"http://127.0.0.1:{port}/api/v1/status", timeout=2,
                           headers=operator).json()
        assert status["serial"]["kebun-sim"]["open"] is True
        assert status["serial"]["kebun-sim"]["errors"] == {}
        assert status["modbus"]["polder-sim"]["slaves"]["polder-1"]["state"] == "online"
        pids = _children(proc.pid)
        assert len(pids) >= 2  # mosquitto and influxd
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        wait_for(lambda: not any(_alive(p) for p in pids), timeout=10,
                 what="mosquitto and influxd to be gone")
        assert "gateway stopped" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
