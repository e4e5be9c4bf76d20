"""How long a polder reading takes to the residents' page and to the alert target (issue 16).

    .venv/bin/python bench/polder_latency.py [--rounds 20]

The real gateway process (``python -m gateway run``) against a private Mosquitto and InfluxDB,
a webhook receiver on 127.0.0.1 and a reader of the public live stream (``/api/v1/events``, what
the residents' page listens to). Each round publishes one reading (QoS 1) that moves the polder
across a threshold, alternately up (Awas) and down (Normal, with ``min_hold_s: 0``), and times:

- publish -> the ``resident`` event whose polder level is the new one (the page redraws on it);
- publish -> the webhook's ``polder_level`` for that change.

Targets: <= 10 s to the page, <= 60 s to the alert target when it is reachable. Medians with
min and max; wall-clock times on this machine.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, free_port  # noqa: E402

SITE = "taman-bench"


SEEN: list[tuple[float, dict[str, Any]]] = []  # (arrival, body) of every webhook call


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        SEEN.append((time.monotonic(), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def stream(api: str, seen: list[tuple[float, str]], stop: threading.Event) -> None:
    """The public live stream's resident events: (arrival, polder level)."""
    # No read timeout: the stream is quiet between events (keepalives every 15 s).
    timeout = httpx.Timeout(10.0, read=None)
    with httpx.stream("GET", f"{api}/api/v1/events", timeout=timeout) as response:
        event = None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "resident":
                body = json.loads(line.split(":", 1)[1])
                seen.append((time.monotonic(), (body.get("polder") or {}).get("level", "")))


def wait(cond: Any, limit: float) -> float | None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = cond()
        if got is not None:
            return float(got)
        time.sleep(0.005)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="garden-latency-") as tmp, \
            PrivateMosquitto(Path(tmp) / "mosquitto") as broker, \
            PrivateInfluxDB(Path(tmp) / "influx") as influx:
        influx.create_database("latency")
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        cfg = {
            "data_dir": str(Path(tmp) / "data"),
            "gateway": {"id": "gw-bench", "site": SITE},
            "mqtt": {"host": "127.0.0.1", "port": broker.port},
            "influx": {"url": influx.url, "database": "latency"},
            "api": {"host": "127.0.0.1", "port": port, "operator_token": "x" * 32},
            "clock": {"require_sync": "no"},
            "subscriptions": [{"topic": f"garden/{SITE}/+/telemetry", "format": "native",
                               "name": "native"}],
            "devices": [{"id": "polder-1", "kind": "polder", "interval_s": 60}],
            "polder": [{"device": "polder-1", "field": "level_cm", "max_rate_per_h": 1e9,
                        "min_hold_s": 0, "thresholds": {"waspada": 150, "siaga": 200,
                                                        "awas": 250}}],
            "alerts": {"targets": [{"kind": "webhook", "name": "bench",
                                    "url": f"http://127.0.0.1:{hook.server_address[1]}/"}]},
        }
        path = Path(tmp) / "gateway.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        log = (Path(tmp) / "gateway.log").open("wb")
        gw = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(path)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        stop = threading.Event()
        try:
            wait(lambda: 1 if _up(api) else None, 30)
            pages: list[tuple[float, str]] = []
            threading.Thread(target=stream, args=(api, pages, stop), daemon=True).start()
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id="latency")
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            time.sleep(1)  # the stream is open
            to_page: list[float] = []
            to_hook: list[float] = []
            for i in range(args.rounds):
                level, word = (262.0, "awas") if i % 2 == 0 else (120.0, "normal")
                hooks_before = len(SEEN)
                pages_before = len(pages)
                sent = time.monotonic()
                client.publish(f"garden/{SITE}/polder-1/telemetry",
                               json.dumps({"level_cm": level}), qos=1).wait_for_publish(5)
                page = wait(lambda w=word, n=pages_before: next(
                    (t for t, lv in pages[n:] if lv == w), None), 30)
                alert = wait(lambda w=word, n=hooks_before: next(
                    (t for t, b in SEEN[n:] if b.get("event") == "polder_level"
                     and b.get("alert_level") == w), None), 90)
                if page is not None:
                    to_page.append(page - sent)
                if alert is not None:
                    to_hook.append(alert - sent)
            client.loop_stop()
        finally:
            stop.set()
            gw.terminate()
            gw.wait(timeout=30)
            log.close()
            hook.shutdown()
    print(f"## A polder reading to the page and to the alert target ({args.rounds} rounds)\n")
    print("| path | arrived | median | min | max | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, got, target in (("reading -> residents' live event", to_page, "<= 10 s"),
                              ("reading -> webhook polder_level", to_hook, "<= 60 s")):
        if got:
            print(f"| {name} | {len(got)} of {args.rounds} | {statistics.median(got):.3f} s | "
                  f"{min(got):.3f} s | {max(got):.3f} s | {target} |")
        else:
            print(f"| {name} | 0 of {args.rounds} | - | - | - | {target} |")
    return 0


def _up(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
