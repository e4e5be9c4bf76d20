"""``garden-gateway regency-demo``: the regency service and several simulated parks on a private
central broker, to look at the regency's pages (issue 17).

A private Mosquitto (the central broker) in a folder of its own; ``--parks`` light simulated parks
publishing what a park's gateway and bridge publish (the summary, the gateway's status, the
bridge's connection), their polders rising and falling at different times; one park whose
gateway stops for a while and one whose link drops, again and again; and the regency service
itself on ``--api-port`` with a fresh operator token. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.core.errors import StackError
from gateway.ops.run import EXIT_FAILED, EXIT_OK, setup_logging
from gateway.regency.config import RegencyConfig
from gateway.regency.service import Regency
from gateway.testing.stack import PrivateMosquitto

SITES = ("taman-bukit-pelangi", "taman-sangatta", "taman-bengalon", "taman-rantau-pulung",
         "taman-kaliorang", "taman-muara-wahau", "taman-teluk-pandan", "taman-sandaran")
PERIOD_S = 120.0  # one demo "storm" cycle per park


def park_summary(site: str, index: int, now_s: float) -> dict[str, Any]:
    """What park ``index`` says at ``now_s``: its polder follows a storm of its own phase."""
    phase = (now_s / PERIOD_S + index / 5) % 1.0
    level = round(0.6 + 0.85 * max(0.0, math.sin(math.pi * phase)) ** 2, 3)
    alert = ("awas" if level >= 1.3 else "siaga" if level >= 1.1 else "waspada" if level >= 0.9
             else "normal")
    rising = phase < 0.5
    return {
        "schema": 1, "site": site, "time_ns": time.time_ns(), "clock_synced": True,
        "gateway": {"id": f"gw-{site}", "version": "demo", "state": "online",
                    "uptime_s": round(now_s % 86400, 1)},
        "devices": {"wifi_ap": {"up": 3, "down": 0, "unknown": 0, "unmonitored": 0,
                                "total": 3},
                    "polder": {"up": 1, "down": 0, "unknown": 0, "unmonitored": 0,
                               "total": 1}},
        "outages": [], "outages_open": 0, "uptime_pct": {},
        "wifi": {"clients_now": 5 + (index * 7) % 30, "distinct_today": 40 + index},
        "polder": [{"id": "polder-1", "name": f"Polder {site.removeprefix('taman-')}",
                    "level": level, "unit": "m", "alert_level": alert, "since_ns": None,
                    "trend_per_h": 0.3 if rising else -0.3,
                    "eta_next_s": 600.0 if rising and alert != "awas" else None,
                    "next_level": None, "quality": "ok"}],
        "spool": {"rows": 0, "oldest_unsent_age_s": None}}


async def simulate_parks(port: int, sites: list[str], stop: asyncio.Event) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="regency-demo-parks")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        while not stop.is_set():
            now = time.time()
            for i, site in enumerate(sites):
                # Park 1's gateway is off for 30 s of every 2 minutes; park 2's link drops for
                # 20 s of every 3 minutes: down and link_down on the pages, and alerts.
                online = not (i == 1 and now % 120 < 30)
                link = not (i == 2 and now % 180 < 20)
                client.publish(f"garden/{site}/bridge/connection", b"1" if link else b"0",
                               qos=1, retain=True)
                client.publish(f"garden/{site}/gateway/gw-{site}/status",
                               b"online" if online else b"offline", qos=1, retain=True)
                if online and link:
                    client.publish(f"garden/{site}/summary",
                                   json.dumps(park_summary(site, i, now)), qos=1, retain=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
    finally:
        client.disconnect()
        client.loop_stop()


def cmd_regency_demo(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    parks = max(1, min(args.parks, len(SITES)))
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="garden-regency-demo-")))
        try:
            broker = stack.enter_context(PrivateMosquitto(workdir / "mosquitto"))
        except StackError as exc:
            print(f"regency-demo: {exc}", file=sys.stderr)
            return EXIT_FAILED
        token = secrets.token_hex(16)
        config = RegencyConfig.model_validate({
            "data_dir": str(workdir / "regency"), "name": "Kutai Timur",
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "regency-demo"},
            "api": {"host": "127.0.0.1", "port": args.api_port, "operator_token": token},
            "stale_after_s": 30})
        base = f"http://127.0.0.1:{args.api_port}"
        print("\n".join([
            "Garden Gateway regency demo",
            f"  residents    {base}/                (every park, the worst first)",
            f"  operators    {base}/operator        token {token}",
            f"  API          curl -s {base}/api/v1/parks",
            f"  broker       127.0.0.1:{broker.port} (the central broker; {parks} simulated "
            "parks publish on it)",
            f"  parks        {', '.join(SITES[:parks])}",
            f"               {SITES[1]}'s gateway is off 30 s of every 2 minutes; "
            f"{SITES[min(2, parks - 1)]}'s link drops 20 s of every 3",
            "Ctrl-C stops everything.",
        ]), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run(config, broker.port, list(SITES[:parks])))
    return EXIT_OK


async def _run(config: RegencyConfig, port: int, sites: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    regency = asyncio.create_task(Regency(config).run(), name="regency")
    parks = asyncio.create_task(simulate_parks(port, sites, stop), name="parks")
    await stop.wait()
    regency.cancel()
    await asyncio.wait([regency, parks], timeout=10)
