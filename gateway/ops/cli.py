"""``garden-gateway``: run, check-config, demo, simulate.

Exit codes: 0 ok; 1 the gateway failed while running; 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devices.simulators import park, polder
from devices.simulators.garden import GardenSensor
from devices.simulators.polder import REGISTERS, PolderSlave
from gateway.config import LoadedConfig, load_config
from gateway.core.errors import ConfigError, GatewayError, StackError
from gateway.ops import doctor, simulate

if TYPE_CHECKING:
    from gateway.testing.stack import Stack

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "example.yaml"

log = logging.getLogger("gateway")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; one line per batch is too chatty for an SD card.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _load(path: Path) -> LoadedConfig | None:
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(f"{path}: configuration is not valid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return loaded


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_USAGE
    cfg = loaded.config
    print(f"{args.config}: ok — gateway {cfg.gateway.id} at site {cfg.gateway.site}, "
          f"{len(cfg.subscriptions)} subscriptions, {len(cfg.devices)} devices, "
          f"broker {cfg.mqtt.host}:{cfg.mqtt.port}, InfluxDB {cfg.influx.url} "
          f"({cfg.influx.api}), data in {cfg.data_dir}")
    return EXIT_OK


async def _serve(loaded: LoadedConfig, on_started: str = "") -> int:
    from gateway.app.gateway import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals are handled here and nowhere else, before the web server starts.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(loaded.config) as gateway:
        if on_started:
            print(on_started, flush=True)
        await gateway.run(stop)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return EXIT_USAGE
    _setup_logging(loaded.config.log_level)
    try:
        return asyncio.run(_serve(loaded))
    except (OSError, GatewayError, ExceptionGroup) as exc:
        # A task that fails for good ends the process; systemd restarts it.
        log.exception("gateway failed: %s", exc)
        return EXIT_FAILED


# The demo's simulated sensors stand in for the example config's serial and Modbus sources.
DEMO_GARDEN_DEVICE = "kebun-2"
DEMO_DAY_MINUTES = 20.0
DEMO_PAGES = {
    "name": "Taman Bukit Pelangi",
    "polder": {"device": polder.DEVICE, "field": "level_m", "unit": "m",
               "thresholds": {"waspada": 0.9, "siaga": 1.1, "awas": 1.3}},
    "garden": {"device": DEMO_GARDEN_DEVICE},
}
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


def _demo_config(path: Path, garden_port: str, polder_port: str, garden: GardenSensor,
                 *, step_s: float, influx: bool) -> dict[str, object] | None:
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
        return await _serve(loaded, on_started=banner)
    finally:
        stop_sims.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Until the gateway's own handlers are in place: unwind, so the servers are stopped.
    raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.testing.stack import Stack, find_executable

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
            return _demo_with_stack(args, workdir, stack, ports)
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


def _demo_with_stack(args: argparse.Namespace, workdir: Path, stack: Stack,
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
    raw = _demo_config(args.config, garden_port.path, polder_port.path, garden,
                       step_s=step_s, influx=stack.influx is not None)
    if raw is None:
        return EXIT_USAGE
    config_path = workdir / "gateway.yaml"
    config_path.write_text(simulate.to_yaml(raw), encoding="utf-8")
    api_port = args.api_port
    env = {
        "GARDEN_GATEWAY_DATA_DIR": str(workdir / "data"),
        "GARDEN_GATEWAY_MQTT__HOST": "127.0.0.1",
        "GARDEN_GATEWAY_MQTT__PORT": str(stack.mosquitto.port),
        "GARDEN_GATEWAY_API__PORT": str(api_port),
        # The demo is for this machine only, whatever the example config says.
        "GARDEN_GATEWAY_API__HOST": "127.0.0.1",
    }
    if stack.influx is not None:
        env["GARDEN_GATEWAY_INFLUX__URL"] = stack.influx.url
    # A fresh operator token for this run, unless one is given.
    token = os.environ.get("GARDEN_GATEWAY_API__OPERATOR_TOKEN") or secrets.token_hex(16)
    env["GARDEN_GATEWAY_API__OPERATOR_TOKEN"] = token
    os.environ.update(env)
    loaded = _load(config_path)
    if loaded is None:
        return EXIT_USAGE
    _setup_logging(loaded.config.log_level)
    cfg = loaded.config
    sim_clock = lambda: day.sim(time.time())  # noqa: E731 - the models' clock, one line
    slave = park.polder_slave(weather)
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
        f"  broker       mqtt://127.0.0.1:{stack.mosquitto.port}  (private, in {workdir})",
        *influx_lines,
        f"  config       {config_path}  ({args.config} with the simulated park below)",
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


def _simulator(
    args: argparse.Namespace, port: simulate.PtyPort
) -> tuple[simulate.GardenRunner | simulate.PolderRunner, str]:
    """The runner ``args`` ask for on ``port``, and what to print: where, and the config."""
    shown = f"{port.path} (-> {port.tty})" if port.link is not None else port.path
    runner: simulate.GardenRunner | simulate.PolderRunner
    if args.device_kind == "polder":
        slave = PolderSlave(args.unit, seed=args.seed)
        for field, value in args.set:
            slave.set(field, value)
        runner = simulate.PolderRunner(port, slave)
        fixed = ", ".join(f"{k}={v}" for k, v in args.set)
        head = [
            f"# Polder water-level station, Modbus RTU slave unit {args.unit}, on {shown}",
            *([f"# Fixed: {fixed}"] if fixed else []),
            "# Register map: devices.simulators.polder.BLOCKS. Paste into the gateway config:",
        ]
        config = simulate.polder_config(port.path, unit=args.unit)
    else:
        sensor = GardenSensor(args.device, args.format, args.checksum, seed=args.seed)
        runner = simulate.GardenRunner(port, sensor, interval_s=args.interval)
        checksums = " with NMEA checksums" if args.checksum == "nmea" else ""
        head = [
            f"# Garden sensor {args.device}: a {args.format} line every {args.interval:g} s"
            f"{checksums}, on {shown}",
            "# Paste into the gateway config:",
        ]
        config = simulate.garden_config(port.path, sensor)
    text = "\n".join([*head, simulate.to_yaml(config).rstrip(), "# Ctrl-C stops the simulator."])
    return runner, text


async def _simulate(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as cleanup:
        try:
            port = cleanup.enter_context(simulate.pty_port(args.link))
        except OSError as exc:
            print(f"simulate: cannot make the pseudo-terminal or its link: {exc}",
                  file=sys.stderr)
            return EXIT_USAGE
        runner, text = _simulator(args, port)
        print(text, flush=True)
        await runner.run(stop)
        stats = dataclasses.asdict(runner.statistics())
        log.info("simulator stopped: %s", " ".join(f"{k}={v}" for k, v in stats.items()))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    _setup_logging("INFO")
    return asyncio.run(_simulate(args))


def _override(text: str) -> tuple[str, float | int | bool]:
    try:
        return simulate.parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds, more than 0")
    return value


def _day_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1440):
        raise argparse.ArgumentTypeError(f"{text!r}: minutes, more than 0 and at most 1440")
    return value


def _device_id(text: str) -> str:
    try:
        GardenSensor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _unit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 247:
        raise argparse.ArgumentTypeError(f"{text!r}: unit addresses are 1..247")
    return value


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "simulate", help="run a simulated sensor on a pseudo-terminal (for a demo or a bench)",
        description="Run a simulated sensor on a pseudo-terminal and print the port and the "
        "config that reads it. Runs until Ctrl-C or SIGTERM.",
    )
    kinds = parser.add_subparsers(dest="device_kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--link", type=Path,
                        help="also make this symlink to the port (like /dev/serial/by-id/...)")
    common.add_argument("--seed", type=int, default=0,
                        help="weather seed: the same seed gives the same rain (default 0)")
    polder = kinds.add_parser(
        "polder", parents=[common], help="a polder water-level station (Modbus RTU slave)",
        description="A polder water-level station answering Modbus RTU reads of the register "
        "map devices.simulators.polder.BLOCKS. Fields: "
        f"{', '.join(REGISTERS)}.",
    )
    polder.add_argument("--unit", type=_unit, default=1, help="slave unit address (default 1)")
    polder.add_argument("--set", type=_override, action="append", default=[],
                        metavar="FIELD=VALUE",
                        help="fix a field, e.g. level_mm=1850 or pump_on=false (repeatable)")
    polder.set_defaults(func=cmd_simulate)
    garden = kinds.add_parser(
        "garden", parents=[common], help="a line-printing garden sensor (Arduino style)",
        description="A garden sensor printing soil moisture, temperature, humidity and rain "
        "as text lines, as an Arduino or ESP32 sketch does.",
    )
    garden.add_argument("--interval", type=_positive, default=5.0,
                        help="seconds between lines (default 5)")
    garden.add_argument("--format", choices=("kv", "json", "csv"), default="kv")
    garden.add_argument("--checksum", choices=("none", "nmea"), default="none")
    garden.add_argument("--device", type=_device_id, default="kebun-1",
                        help="device id in the lines (default kebun-1)")
    garden.set_defaults(func=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="garden-gateway",
        description="Park gateway: MQTT and serial sensors in, durable spool, InfluxDB out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", type=Path, required=True, help="YAML config file")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file (exit 2 when invalid)")
    check.add_argument("--config", type=Path, required=True, help="YAML config file")
    check.set_defaults(func=cmd_check_config)
    demo = sub.add_parser(
        "demo", help="run the gateway and a simulated park against a private Mosquitto "
        "(and InfluxDB, when installed) in a temp folder",
        description="A private Mosquitto and, when influxd is installed, a private InfluxDB in "
        "a temporary folder; a simulated park (access points, a Tasmota sensor, a polder "
        "level station and a line-printing sensor) living through a day in --day-minutes; and "
        "the gateway with its pages. Ctrl-C stops everything.",
    )
    demo.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    demo.add_argument("--workdir", help="folder for the private servers (default: a new one)")
    demo.add_argument("--api-port", type=int, default=8080)
    demo.add_argument("--day-minutes", type=_day_minutes, default=DEMO_DAY_MINUTES,
                      help="real minutes a simulated day takes (default "
                      f"{DEMO_DAY_MINUTES:g}; 1440: real time)")
    demo.set_defaults(func=cmd_demo)
    _add_simulate(sub)
    doctor.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
