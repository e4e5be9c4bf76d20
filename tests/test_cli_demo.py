"""The README's main-job command: ``garden-gateway demo`` runs the simulated park through a whole
day (``--day-minutes 0.5``: 30 s), takes a reading, stops clean; and without influxd it runs on
the gateway's own store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.testing.stack import free_port
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


def _start(tmp_path: Path, port: int, *extra: str, env: dict[str, str] | None = None,
           argv0: list[str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "demo.log"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [*(argv0 or [sys.executable, "-m", "gateway"]), "demo", "--workdir",
             str(tmp_path / "demo"), "--api-port", str(port), *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, out


def _banner(out: Path) -> tuple[str, dict[str, str]]:
    wait_for(lambda: "Ctrl-C stops everything" in out.read_text(), timeout=60,
             what="the demo banner")
    text = out.read_text()
    found = re.search(r"Authorization: Bearer ([0-9a-f]{32})", text)
    assert found is not None, text
    return text, {"Authorization": f"Bearer {found.group(1)}"}


def _get(url: str, headers: dict[str, str] | None = None) -> Any:
    """The JSON at ``url``; None while the API is not listening yet."""
    try:
        return httpx.get(url, timeout=2, headers=headers).json()
    except httpx.TransportError:
        return None


def _stop(proc: subprocess.Popen[bytes], out: Path, sig: signal.Signals) -> None:
    pids = _children(proc.pid)
    assert len(pids) >= 1  # mosquitto (and influxd)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=10,
             what="mosquitto and influxd to be gone")
    assert "gateway stopped" in out.read_text()


def test_demo_lives_through_a_park_day_takes_a_reading_and_stops_everything(
        tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    proc, out = _start(tmp_path, port, "--day-minutes", "0.5")
    try:
        text, operator = _banner(out)
        assert f"http://127.0.0.1:{port}/api/v1/status" in text
        assert f"http://127.0.0.1:{port}/operator" in text
        assert "a simulated day passes in 0.5 real minutes" in text
        assert "ap-taman-bermain reboots" in text
        status = wait_for(lambda: (s := _get(f"{api}/status", operator)) is not None
                          and s["mqtt"]["connected"] and s, what="demo gateway connected")
        assert status["gateway"]["id"] == "gw-taman-bukit-pelangi"

        # The day, as the residents' page and the operators see it.
        levels: list[str] = []
        seen: dict[str, Any] = {}

        def the_day_happened() -> bool:
            resident = _get(f"{api}/resident")
            if resident is None:
                return False
            if not levels or levels[-1] != resident["polder"]["level"]:
                levels.append(resident["polder"]["level"])
            wifi = resident["wifi"]
            if wifi["aps_up"] == 3 and (wifi["clients_now"] or 0) > 0:
                seen["wifi"] = wifi
            devices = {d["id"]: d for d in _get(f"{api}/devices", operator)}
            usage = (devices.get("ap-taman-bermain") or {}).get("wifi") or {}
            if usage.get("counter_events", {}).get("reset", 0) >= 1:
                seen["reset"] = usage
            outages = _get(f"{api}/outages?device=kebun-1", operator)
            if any(o["end_ns"] is not None for o in outages):
                seen["outage"] = outages
            rose_and_fell = "awas" in levels and "normal" in levels[levels.index("awas"):]
            return rose_and_fell and seen.keys() == {"wifi", "reset", "outage"}

        # A day is 30 s; should the first events come before the gateway listened, the
        # second day brings them again.
        wait_for(the_day_happened, timeout=70, interval=0.1, what="the day's events")
        # Up through the warning levels and down again (the rise may pass a level between two
        # polls; the slower fall passes each).
        fall = levels[levels.index("awas"):]
        assert fall[-1] == "normal", levels
        assert {"siaga", "waspada"} <= set(fall), levels
        # The storm's float sticks for an hour on the way up: the flood watch says so, and
        # says when it is believed again.
        wait_for(lambda: "polder_sensor_ok polder=polder-1" in out.read_text(), timeout=70,
                 what="the stuck float flagged and recovered")
        log_text = out.read_text()
        assert "polder_sensor_fault polder=polder-1" in log_text
        assert "quality=flatline" in log_text
        [outage] = [o for o in seen["outage"] if o["end_ns"] is not None][:1]
        assert outage["kind"] == "garden_env"
        assert outage["duration_s"] > 0
        assert seen["wifi"]["status"] in ("normal", "gangguan")
        # The chart's history holds the high water too (public: the residents' chart).
        history = _get(f"{api}/history?device=polder-1&field=level_m&range=1h")
        assert max(p[3] for p in history["points"]) >= 1.3
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]

        # The printed mosquitto_pub line works as written.
        pub_line = next(ln.strip() for ln in text.splitlines() if "mosquitto_pub" in ln)
        written = _get(f"{api}/status", operator)["counts"]["written"]
        subprocess.run(pub_line, shell=True, check=True, timeout=10)  # noqa: S602
        wait_for(lambda: _get(f"{api}/status", operator)["counts"]["written"] > written,
                 what="the reading written to InfluxDB")
        # The park reaches InfluxDB: the line sensor, the Modbus station, the APs, Tasmota.
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
        assert stored("SELECT tx_bytes FROM wifi_ap WHERE device = 'ap-gerbang-utama'")
        assert stored("SELECT temperature_c FROM garden_env WHERE device = 'kebun-1'")
        # Stored times are real (the simulated clock only drives the values).
        newest = stored("SELECT last(tx_bytes) FROM wifi_ap")[0][0]
        assert abs(_epoch(str(newest)) - time.time()) < 60
        # The printed doctor line checks the config the demo really runs: its broker, its
        # InfluxDB, its API; none of those fails.
        doctor_line = next(ln.strip() for ln in text.splitlines()
                           if ln.strip().startswith("doctor"))
        argv = doctor_line.split()[1:]  # "garden-gateway doctor --config ..."
        assert argv[0] == "garden-gateway"
        checked = subprocess.run([sys.executable, "-m", "gateway", *argv[1:], "--json"],
                                 capture_output=True, text=True, timeout=60, cwd=ROOT,
                                 check=False)
        report = json.loads(checked.stdout)
        fails = [r for r in report["checks"] if r["verdict"] == "FAIL"
                 and r["check"] in ("config", "broker", "influx", "api", "disk")]
        assert fails == [], fails
        assert {r["check"] for r in report["checks"]} >= {"config", "broker", "influx", "api"}
        status = _get(f"{api}/status", operator)
        assert status["serial"]["kebun-sim"]["open"] is True
        assert status["serial"]["kebun-sim"]["errors"] == {}
        assert status["modbus"]["polder-sim"]["slaves"]["polder-1"]["state"] == "online"
        assert len(_children(proc.pid)) >= 2  # mosquitto and influxd
        _stop(proc, out, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# find_executable also looks in /usr/sbin and /usr/bin; this child looks on PATH alone, so that
# a PATH without influxd is a machine without InfluxDB.
_PATH_ONLY = ("import sys, gateway.testing.stack; gateway.testing.stack._EXTRA_DIRS = (); "
              "from gateway.ops.cli import main; sys.exit(main(sys.argv[1:]))")


def test_demo_without_influxd_keeps_readings_on_the_gateway(tmp_path: Path) -> None:
    from gateway.testing.stack import find_executable

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("mosquitto", "mosquitto_pub"):
        (bin_dir / name).symlink_to(find_executable(name))
    env = {**os.environ, "PATH": str(bin_dir)}
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    proc, out = _start(tmp_path, port, "--day-minutes", "2", env=env,
                       argv0=[sys.executable, "-c", _PATH_ONLY])
    try:
        text, operator = _banner(out)
        assert ("InfluxDB not installed: readings stay on the gateway (spool + local history); "
                "apt-get install influxdb to send them") in text
        assert "--data-urlencode" not in text  # no InfluxDB to query
        status = wait_for(lambda: (s := _get(f"{api}/status", operator)) is not None
                          and s["spool"]["rows"] > 0 and s, what="readings in the spool")
        assert status["influx"]["state"] == "disabled"
        assert status["counts"]["written"] == 0
        # The residents' page works from the local store alone.
        resident = wait_for(lambda: (r := _get(f"{api}/resident"))["polder"]["value"] is not None
                            and r["wifi"]["aps_up"] == 3 and r, what="the park on the page")
        assert resident["garden"]["temperature_c"] is not None
        assert len(_children(proc.pid)) == 1  # mosquitto alone
        _stop(proc, out, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
