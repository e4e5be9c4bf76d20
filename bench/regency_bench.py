"""The regency service with many parks: /api/v1/parks latency and the service's memory (issue 17).

    .venv/bin/python bench/regency_bench.py [--parks 200] [--requests 500]

A private Mosquitto; every park's gateway status and summary published retained (light
publishers, not gateways), summaries again every 10 s while measuring; the service run as
``python -m gateway regency`` (its own process); ``--requests`` sequential GET /api/v1/parks.
Prints p50 and p99 (target p99 < 300 ms with 200 parks) beside /health's p50 in the same run (the
server's floor), and the service's RSS after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.testing.stack import PrivateMosquitto, free_port  # noqa: E402


def summary(site: str) -> bytes:
    return json.dumps({
        "schema": 1, "site": site, "time_ns": time.time_ns(), "clock_synced": True,
        "gateway": {"id": f"gw-{site}", "version": "0.1.0", "state": "online", "uptime_s": 1.0},
        "devices": {"wifi_ap": {"up": 3, "down": 0, "unknown": 0, "unmonitored": 0,
                                "total": 3},
                    "polder": {"up": 1, "down": 0, "unknown": 0, "unmonitored": 0,
                               "total": 1}},
        "outages": [], "outages_open": 0,
        "uptime_pct": {f"ap-{i}": {"24h": 100.0, "7d": 99.5, "30d": 99.9} for i in range(3)},
        "wifi": {"clients_now": 12, "distinct_today": 40},
        "polder": [{"id": "polder-1", "name": f"Polder {site}", "level": 1.05, "unit": "m",
                    "alert_level": "waspada", "since_ns": None, "trend_per_h": 0.02,
                    "eta_next_s": 3600.0, "next_level": "siaga", "quality": "ok"}],
        "spool": {"rows": 0, "oldest_unsent_age_s": None}}).encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parks", type=int, default=200)
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()
    sites = [f"taman-{i:03d}" for i in range(args.parks)]
    with tempfile.TemporaryDirectory(prefix="garden-regency-") as tmp, \
            PrivateMosquitto(Path(tmp) / "mosquitto") as broker:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="parks")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        for site in sites:
            client.publish(f"garden/{site}/gateway/gw-{site}/status", b"online", qos=1,
                           retain=True).wait_for_publish(5)
            client.publish(f"garden/{site}/summary", summary(site), qos=1,
                           retain=True).wait_for_publish(5)
        port = free_port()
        path = Path(tmp) / "regency.yaml"
        path.write_text(yaml.safe_dump({
            "data_dir": str(Path(tmp) / "data"),
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "regency-bench"},
            "api": {"host": "127.0.0.1", "port": port}, "stale_after_s": 300}))
        log = (Path(tmp) / "regency.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "regency", "--config",
                                 str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        stop = threading.Event()

        def keep_publishing() -> None:
            while not stop.wait(10):
                for site in sites:
                    client.publish(f"garden/{site}/summary", summary(site), qos=0, retain=True)

        threading.Thread(target=keep_publishing, daemon=True).start()
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if len(http.get("/api/v1/parks").json()) == args.parks:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise SystemExit("the service did not list every park in 30 s")
            times, floor = [], []
            for _ in range(args.requests):
                start = time.perf_counter()
                response = http.get("/api/v1/parks")
                times.append(time.perf_counter() - start)
                assert response.status_code == 200
                # The reference, in the same run: the smallest answer the same server gives.
                start = time.perf_counter()
                http.get("/health")
                floor.append(time.perf_counter() - start)
            rss = rss_mb(proc.pid)
        finally:
            stop.set()
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
            client.loop_stop()
    times.sort()
    p99 = times[max(0, int(len(times) * 0.99) - 1)]
    print(f"## The regency service with {args.parks} parks ({args.requests} requests)\n")
    print("| measure | result | target |")
    print("| --- | ---: | ---: |")
    print(f"| GET /health p50 (the reference: the server's floor) | "
          f"{1000 * statistics.median(floor):.1f} ms | - |")
    print(f"| GET /api/v1/parks p50 | {1000 * statistics.median(times):.1f} ms | - |")
    print(f"| GET /api/v1/parks p99 | {1000 * p99:.1f} ms | < 300 ms |")
    print(f"| the service's RSS after the run | {rss:.1f} MB | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
