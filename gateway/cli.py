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
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devices.simulators import polder
from devices.simulators.garden import GardenSensor
from devices.simulators.polder import REGISTERS, PolderSlave
from gateway import simulate
from gateway.config import LoadedConfig, load_config
from gateway.errors import ConfigError, GatewayError, StackError

if TYPE_CHECKING:
    from gateway.stack import Stack

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "example.yaml"

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
    from gateway.app import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals are handled here and nowhere else, before the web server starts.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(loaded.config)
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
DEMO_SENSOR_INTERVAL_S = 5.0


def _demo_config(path: Path, garden_port: str, polder_port: str,
                 garden: GardenSensor) -> dict[str, object] | None:
    """``path``'s config with its serial and Modbus sources pointed at the simulators."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return None
    if not isinstance(raw, dict):
        print(f"{path}: the top level must be a mapping of keys", file=sys.stderr)
        return None
    raw.update(simulate.garden_config(garden_port, garden, name="kebun-sim"))
    raw.update(simulate.polder_config(polder_port, name="polder-sim",
                                      interval_s=DEMO_SENSOR_INTERVAL_S))
    return raw


async def _demo(loaded: LoadedConfig, banner: str, runners: list[simulate.GardenRunner
                | simulate.PolderRunner]) -> int:
    stop_sims = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop_sims), name=f"simulator {i}")
             for i, r in enumerate(runners)]
    try:
        return await _serve(loaded, on_started=banner)
    finally:
        stop_sims.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.stack import Stack

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="garden-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        stack = Stack(workdir, influx=True)
        stack.__enter__()
    except StackError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        with contextlib.ExitStack() as ports:
            return _demo_with_stack(args, workdir, stack, ports)
    finally:
        stack.__exit__(None, None, None)


def _demo_with_stack(args: argparse.Namespace, workdir: Path, stack: Stack,
                     ports: contextlib.ExitStack) -> int:
    assert stack.mosquitto is not None
    assert stack.influx is not None
    # Where udev would put the adapters' stable names.
    by_id = workdir / "dev" / "serial" / "by-id"
    by_id.mkdir(parents=True, exist_ok=True)
    try:
        garden_port = ports.enter_context(simulate.pty_port(by_id / "usb-kebun-sim-if00"))
        polder_port = ports.enter_context(simulate.pty_port(by_id / "usb-polder-rs485-sim-if00"))
    except OSError as exc:
        print(f"demo: cannot make the simulators' pseudo-terminals: {exc}", file=sys.stderr)
        return EXIT_FAILED
    garden = GardenSensor(DEMO_GARDEN_DEVICE, "kv", "nmea")
    raw = _demo_config(args.config, garden_port.path, polder_port.path, garden)
    if raw is None:
        return EXIT_USAGE
    config_path = workdir / "gateway.yaml"
    config_path.write_text(simulate.to_yaml(raw), encoding="utf-8")
    api_port = args.api_port
    env = {
        "GARDEN_GATEWAY_DATA_DIR": str(workdir / "data"),
        "GARDEN_GATEWAY_MQTT__HOST": "127.0.0.1",
        "GARDEN_GATEWAY_MQTT__PORT": str(stack.mosquitto.port),
        "GARDEN_GATEWAY_INFLUX__URL": stack.influx.url,
        "GARDEN_GATEWAY_API__PORT": str(api_port),
        # The demo is for this machine only, whatever the example config says.
        "GARDEN_GATEWAY_API__HOST": "127.0.0.1",
    }
    # A fresh operator token for this run, unless one is given.
    token = os.environ.get("GARDEN_GATEWAY_API__OPERATOR_TOKEN") or secrets.token_hex(16)
    env["GARDEN_GATEWAY_API__OPERATOR_TOKEN"] = token
    os.environ.update(env)
    loaded = _load(config_path)
    if loaded is None:
        return EXIT_USAGE
    _setup_logging(loaded.config.log_level)
    cfg = loaded.config
    runners: list[simulate.GardenRunner | simulate.PolderRunner] = [
        simulate.GardenRunner(garden_port, garden, interval_s=DEMO_SENSOR_INTERVAL_S),
        simulate.PolderRunner(polder_port, PolderSlave(1)),
    ]
    banner = "\n".join([
        "",
        "Garden Gateway demo is running. Where to look:",
        f"  park page    http://127.0.0.1:{api_port}/",
        f"  operators    http://127.0.0.1:{api_port}/operator  (token {token})",
        f"  status API   curl -H 'Authorization: Bearer {token}' "
        f"http://127.0.0.1:{api_port}/api/v1/status",
        f"  API docs     http://127.0.0.1:{api_port}/docs",
        f"  broker       mqtt://127.0.0.1:{stack.mosquitto.port}  (private, in {workdir})",
        f"  InfluxDB     {stack.influx.url}  database {cfg.influx.database}",
        f"  config       {config_path}  ({args.config} with the simulators below)",
        f"  simulators   garden sensor {DEMO_GARDEN_DEVICE} (kv lines) on {garden_port.path}",
        f"               polder water level {polder.DEVICE} (Modbus RTU unit 1) on "
        f"{polder_port.path}",
        "  send a reading:",
        f"    mosquitto_pub -p {stack.mosquitto.port} -q 1 -t "
        f"garden/{cfg.gateway.site}/polder-1/telemetry -m '{{\"level_cm\": 182.5}}'",
        "  see it in InfluxDB:",
        f"    curl -sG {stack.influx.url}/query --data-urlencode db={cfg.influx.database} "
        "--data-urlencode 'q=SELECT * FROM /.*/ ORDER BY time DESC LIMIT 5'",
        "  Ctrl-C stops everything.",
        "",
    ])
    try:
        return asyncio.run(_demo(loaded, banner, runners))
    except KeyboardInterrupt:
        return EXIT_OK


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
        "demo", help="run the gateway against a private Mosquitto and InfluxDB in a temp folder"
    )
    demo.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    demo.add_argument("--workdir", help="folder for the private servers (default: a new one)")
    demo.add_argument("--api-port", type=int, default=8080)
    demo.set_defaults(func=cmd_demo)
    _add_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
