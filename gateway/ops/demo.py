"""``garden-gateway demo``: the gateway and a simulated park, against private servers.

A private Mosquitto and, when ``influxd`` is installed, a private InfluxDB in a folder of their
own (``gateway.testing.stack``, the launcher the tests use); the simulated park of
``devices.simulators`` (access points over collectd, a Tasmota sensor, a line-printing garden
sensor and a Modbus polder station on pseudo-terminals) living through a day in
``--day-minutes``; and the gateway itself, run as ``garden-gateway run`` runs it, on the given
config (by default the shipped example) pointed at the simulated park.

The arguments are parsed in gateway/ops/cli.py, which imports this module only when the demo is
asked for: a park's ``run`` never loads the private servers' launcher, which is test support.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devices.simulators import park, polder
from devices.simulators.garden import GardenSensor
from gateway.config import LoadedConfig
from gateway.core import resources
from gateway.core.errors import StackError
from gateway.ops import simulate
from gateway.ops.run import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    load_config_or_report,
    serve,
    setup_logging,
)
from gateway.testing.stack import Stack, find_executable, free_port
from gateway.web.tls import certificate_for

# The demo's simulated sensors stand in for the example config's serial and Modbus sources.
DEMO_GARDEN_DEVICE = "kebun-2"
DEMO_PAGES = {
    "name": "Taman Bukit Pelangi",
    "garden": {"device": DEMO_GARDEN_DEVICE},
}
DEMO_POLDER = {"device": polder.DEVICE, "field": "level_m", "unit": "m",
               "name": "Polder Bukit Pelangi", "sensor_min": 0.0, "sensor_max": 3.0,
               "thresholds": {"waspada": 0.9, "siaga": 1.1, "awas": 1.3}}
# What the simulated park publishes, by topic: added when the config does not subscribe to it.
# The APs' collectd sends counters (StoreRates false), so the gateway sees an AP reboot as a
# counter reset.
DEMO_SUBSCRIPTIONS: tuple[dict[str, object], ...] = (
    {"name": "native", "topic": "garden/+/+/telemetry", "format": "native"},
    {"name": "access-points", "topic": "collectd/#", "format": "collectd",
     "options": {"measurement": "wifi_ap", "store_rates": False}},
    {"name": "tasmota", "topic": "tele/+/SENSOR", "format": "tasmota",
     "options": {"utc_offset_minutes": 480}},
    {"name": "tasmota-lwt", "topic": "tele/+/LWT", "format": "tasmota"},
)
INFLUX_MISSING = ("InfluxDB not installed: readings stay on the gateway (spool + local "
                  "history); apt-get install influxdb to send them")


def _demo_subscriptions(given: object) -> list[object]:
    subs: list[object] = list(given) if isinstance(given, list) else []
    for wanted in DEMO_SUBSCRIPTIONS:
        found = next((s for s in subs if isinstance(s, dict)
                      and s.get("topic") == wanted["topic"]), None)
        if found is None:
            subs.append(dict(wanted))
        elif wanted["format"] == "collectd":
            found["format"] = "collectd"
            found["options"] = {**(found.get("options") or {}), "store_rates": False,
                                "measurement": "wifi_ap"}
    return subs


def _demo_devices(given: object, step_s: float) -> list[object]:
    """The config's devices, with the simulated ones (re)defined at the demo's pace."""
    interval = max(1.0, step_s)
    ours: list[dict[str, object]] = [
        {"id": host, "name": "AP " + host.removeprefix("ap-").replace("-", " "),
         "kind": "wifi_ap", "zone": host.removeprefix("ap-").split("-")[0],
         "interval_s": interval}
        for host in park.AP_HOSTS
    ]
    ours += [
        {"id": park.TASMOTA_TOPIC, "name": "Sensor kebun (Tasmota AM2301)",
         "kind": "garden_env", "zone": "kebun", "interval_s": interval},
        {"id": DEMO_GARDEN_DEVICE, "name": "Sensor kebun timur (serial)", "kind": "garden_env",
         "zone": "kebun", "interval_s": interval},
        {"id": polder.DEVICE, "name": "Sensor level air polder", "kind": "polder",
         "zone": "polder", "interval_s": interval},
    ]
    ids = {d["id"] for d in ours}
    kept = [d for d in (given if isinstance(given, list) else [])
            if not (isinstance(d, dict) and d.get("id") in ids)]
    return [*kept, *ours]


def _section(raw: dict[str, object], key: str) -> dict[str, object]:
    found = raw.get(key)
    section: dict[str, object] = dict(found) if isinstance(found, dict) else {}
    raw[key] = section
    return section


def _demo_polder(step_s: float, speed: float) -> dict[str, object]:
    """The flood watch at the demo's pace: its windows and holds are simulated time, and a
    reading every ``step_s`` real seconds is one every ``step_s * speed`` simulated ones."""
    real = 1.0 / speed
    raw = dict(DEMO_POLDER)
    raw.update(interval_s=step_s, window_s=max(120.0, round(1800 * real, 3)),
               min_hold_s=round(1800 * real, 3), flatline_s=max(step_s * 3, 1800 * real),
               # the water's speed per real hour: the simulated rate times the pace
               max_rate_per_h=1.0 * speed, rise_alert_per_h=0.2 * speed, noise=0.04)
    return raw


def _demo_config(path: Path, garden_port: str, polder_port: str, garden: GardenSensor,
                 *, step_s: float, influx: bool, speed: float = 1.0
                 ) -> dict[str, object] | None:
    """``path``'s config with its sources pointed at the simulated park.

    The demo's pace (``step_s`` real seconds per sample) sets the devices' intervals and the
    liveness hold, so that an outage of simulated hours is one in the gateway's eyes too.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return None
    if not isinstance(raw, dict):
        print(f"{path}: the top level must be a mapping of keys", file=sys.stderr)
        return None
    raw.update(simulate.garden_config(garden_port, garden, name="kebun-sim"))
    raw.update(simulate.polder_config(polder_port, name="polder-sim", interval_s=step_s))
    raw["subscriptions"] = _demo_subscriptions(raw.get("subscriptions"))
    raw["devices"] = _demo_devices(raw.get("devices"), step_s)
    pages = _section(raw, "pages")
    raw["pages"] = {**DEMO_PAGES, "name": pages.get("name") or DEMO_PAGES["name"]}
    raw["polder"] = [_demo_polder(step_s, speed)]
    liveness = _section(raw, "liveness")
    # A Tasmota saying "Offline" for a simulated hour is an outage, not flapping.
    liveness["hold_s"] = round(2 * step_s, 3)
    wifi = _section(raw, "wifi")
    # The simulated APs hang off 100 Mbit/s: a counter going down by more than that could
    # carry is their reboot, not a 32-bit wrap.
    wifi["max_rate_bps"] = 100e6
    wifi["utc_offset_minutes"] = 480
    if not influx:
        _section(raw, "influx")["enabled"] = False
    # A laptop or container without NTP says its clock is unsynchronised: with "auto" the
    # demo would hold every reading it stamps. The floor (clock.min_valid_time) still holds.
    _section(raw, "clock").setdefault("require_sync", "no")
    return raw


Runner = simulate.GardenRunner | simulate.PolderRunner | simulate.MqttParkRunner


async def _demo(loaded: LoadedConfig, banner: str, runners: list[Runner]) -> int:
    stop_sims = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop_sims), name=f"simulator {i}")
             for i, r in enumerate(runners)]
    try:
        return await serve(loaded, on_started=banner)
    finally:
        stop_sims.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Until the gateway's own handlers are in place: unwind, so the servers are stopped.
    raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace) -> int:
    """``garden-gateway demo``: its arguments are parsed by gateway/ops/cli.py."""
    try:
        # None only when the shipped example is missing: this says where it was looked for.
        config = args.config if args.config is not None else resources.example_config()
    except resources.MissingFileError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="garden-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        find_executable("influxd")
    except StackError:
        influx = False
    else:
        influx = True
    try:
        stack = Stack(workdir, influx=influx)
        stack.__enter__()
    except StackError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
    try:
        with contextlib.ExitStack() as ports:
            return _demo_with_stack(args, config, workdir, stack, ports)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        stack.__exit__(None, None, None)


def _scenario(day: park.DayClock) -> list[str]:
    lines = [f"  the day      a simulated day passes in {day.day_minutes:g} real minutes "
             f"(--day-minutes), from {day.start_hour:02.0f}:00 WITA:"]
    for at, what in park.SCENARIO:
        hour, minute = (int(x) for x in at.split(":"))
        offset_s = round(((hour + minute / 60 - day.start_hour) % 24) * 3600 / day.speed)
        lines.append(f"    {at}  after {offset_s // 60:3d}:{offset_s % 60:02d}  {what}")
    lines.append("    Values follow the simulated clock; every timestamp stored is real.")
    return lines


def _demo_with_stack(args: argparse.Namespace, config: Path, workdir: Path, stack: Stack,
                     ports: contextlib.ExitStack) -> int:
    assert stack.mosquitto is not None
    day = park.DayClock(time.time(), args.day_minutes)
    step_s = day.step_s()
    # Where udev would put the adapters' stable names.
    by_id = workdir / "dev" / "serial" / "by-id"
    by_id.mkdir(parents=True, exist_ok=True)
    try:
        garden_port = ports.enter_context(simulate.pty_port(by_id / "usb-kebun-sim-if00"))
        polder_port = ports.enter_context(simulate.pty_port(by_id / "usb-polder-rs485-sim-if00"))
    except OSError as exc:
        print(f"demo: cannot make the simulators' pseudo-terminals: {exc}", file=sys.stderr)
        return EXIT_FAILED
    weather = park.DemoWeather()
    garden = GardenSensor(DEMO_GARDEN_DEVICE, "kv", "nmea", boot_s=day.sim_start_s)
    garden.weather = weather
    raw = _demo_config(config, garden_port.path, polder_port.path, garden,
                       step_s=step_s, influx=stack.influx is not None, speed=day.speed)
    if raw is None:
        return EXIT_USAGE
    api_port = args.api_port
    # The config the demo runs is the file it writes: its broker, InfluxDB, data_dir and API
    # are in it, so `doctor --config` on it checks what runs.
    def section(key: str) -> dict[str, Any]:
        value = raw.get(key)
        return dict(value) if isinstance(value, dict) else {}

    raw["data_dir"] = str(workdir / "data")
    raw["mqtt"] = {**section("mqtt"), "host": "127.0.0.1", "port": stack.mosquitto.port}
    if stack.influx is not None:
        raw["influx"] = {**section("influx"), "url": stack.influx.url}
    api_raw: dict[str, Any] = {
        **section("api"),
        # The demo is for this machine only, whatever the example config says.
        "host": "127.0.0.1", "port": api_port,
        # HTTPS as a park has it (self-signed); on 127.0.0.1 alone the operator side may also
        # stay on plain HTTP, so the curl lines below work without the certificate.
        "tls": {"self_signed": True, "port": 8443 if api_port == 8080 else free_port()},
        "operator_over_http": True,
    }
    api_raw.pop("operator_token", None)
    raw["api"] = api_raw
    config_path = workdir / "gateway.yaml"
    config_path.write_text(simulate.to_yaml(raw), encoding="utf-8")
    # A fresh operator token for this run, unless one is given; a secrets file beside the
    # config, as install.sh keeps one, so doctor reads it the same way.
    token = os.environ.get("GARDEN_GATEWAY_API__OPERATOR_TOKEN") or secrets.token_hex(16)
    env_file = workdir / "secrets.env"
    env_file.write_text(f"GARDEN_GATEWAY_API__OPERATOR_TOKEN={token}\n", encoding="utf-8")
    env_file.chmod(0o600)
    os.environ["GARDEN_GATEWAY_API__OPERATOR_TOKEN"] = token
    loaded = load_config_or_report(config_path)
    if loaded is None:
        return EXIT_USAGE
    setup_logging(loaded.config.log_level)
    cfg = loaded.config
    cert = certificate_for(cfg.api.tls, cfg.data_dir)  # made now; the gateway reuses it
    https_lines = [] if cert is None or cfg.api.tls is None else [
        f"  HTTPS        https://127.0.0.1:{cfg.api.tls.port}/operator  (self-signed)",
        f"               certificate SHA-256 {cert.fingerprint}",
    ]
    sim_clock = lambda: day.sim(time.time())  # noqa: E731 - the models' clock, one line
    slave = park.polder_slave(weather, storm=park.demo_storm())
    slave.boot_s = day.sim_start_s
    aps = park.access_points(day)
    tasmota = park.tasmota(weather)
    runners: list[Runner] = [
        simulate.GardenRunner(garden_port, garden, interval_s=step_s, clock=sim_clock),
        simulate.PolderRunner(polder_port, slave, clock=sim_clock),
        simulate.MqttParkRunner(host="127.0.0.1", port=stack.mosquitto.port, aps=aps,
                                tasmotas=[tasmota], interval_s=step_s, sim=day.sim),
    ]
    if stack.influx is not None:
        influx_lines = [
            f"  InfluxDB     {stack.influx.url}  database {cfg.influx.database}",
        ]
        look = [
            "  see it in InfluxDB:",
            f"    curl -sG {stack.influx.url}/query --data-urlencode db={cfg.influx.database} "
            "--data-urlencode 'q=SELECT * FROM /.*/ ORDER BY time DESC LIMIT 5'",
        ]
    else:
        influx_lines = [f"  InfluxDB     {INFLUX_MISSING}"]
        look = [
            "  see it in the spool (waiting for an InfluxDB):",
            f"    curl -s -H 'Authorization: Bearer {token}' "
            f"http://127.0.0.1:{api_port}/api/v1/status",
        ]
    site = cfg.gateway.site
    banner = "\n".join([
        "",
        "Garden Gateway demo is running. Where to look:",
        f"  park page    http://127.0.0.1:{api_port}/",
        f"  operators    http://127.0.0.1:{api_port}/operator  (token {token})",
        f"  status API   curl -H 'Authorization: Bearer {token}' "
        f"http://127.0.0.1:{api_port}/api/v1/status",
        f"  API docs     http://127.0.0.1:{api_port}/docs",
        *https_lines,
        f"  broker       mqtt://127.0.0.1:{stack.mosquitto.port}  (private, in {workdir})",
        *influx_lines,
        f"  config       {config_path}  ({config} with the simulated park below)",
        f"  doctor       garden-gateway doctor --config {config_path} --env-file {env_file} "
        "--skip systemd",
        "  simulators   access points " + ", ".join(park.AP_HOSTS)
        + " (collectd over MQTT)",
        f"               Tasmota garden sensor {park.TASMOTA_TOPIC} (tele/{park.TASMOTA_TOPIC}/"
        "SENSOR, LWT)",
        f"               garden sensor {DEMO_GARDEN_DEVICE} (kv lines) on {garden_port.path}",
        f"               polder water level {polder.DEVICE} (Modbus RTU unit 1) on "
        f"{polder_port.path}",
        f"               one sample every {step_s:g} s",
        *_scenario(day),
        "  send a reading:",
        f"    mosquitto_pub -p {stack.mosquitto.port} -q 1 -t "
        f"garden/{site}/polder-1/telemetry -m '{{\"level_cm\": 182.5}}'",
        *look,
        "  Ctrl-C stops everything.",
        "",
    ])
    return asyncio.run(_demo(loaded, banner, runners))
