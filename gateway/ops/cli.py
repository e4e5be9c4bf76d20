"""``garden-gateway``: the command line (every command's arguments) and its dispatch.

``run`` and ``check-config`` are here; ``demo`` is gateway/ops/demo.py, ``simulate`` runs the
simulators of gateway/ops/simulate.py, ``doctor`` is gateway/ops/doctor/. :func:`build_parser`
gives the whole command line (the man page is made from it).

A command imports only its own modules: :func:`main` builds the parser of the command it was
given and nothing else, and each command's module is imported inside the functions that add or
run it. ``run`` is what a park's Pi does all day, and the doctor, the simulators, the accounts'
tools and the demo would be a few MB of its memory for nothing (bench/memory_bench.py).

Exit codes: 0 ok; 1 the gateway failed while running; 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import importlib.metadata
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from gateway.config import DEFAULT_CONFIG_PATH
from gateway.core import resources
from gateway.core.errors import GatewayError
from gateway.ops.run import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    load_config_or_report,
    serve,
    setup_logging,
)

if TYPE_CHECKING:
    from gateway.ops import simulate

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# Real minutes a simulated day of the demo takes (gateway/ops/demo.py), unless --day-minutes.
DEMO_DAY_MINUTES = 20.0

log = logging.getLogger("gateway")


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return EXIT_USAGE
    cfg = loaded.config
    print(f"{args.config}: ok — gateway {cfg.gateway.id} at site {cfg.gateway.site}, "
          f"{len(cfg.subscriptions)} subscriptions, {len(cfg.devices)} devices, "
          f"broker {cfg.mqtt.host}:{cfg.mqtt.port}, InfluxDB {cfg.influx.url} "
          f"({cfg.influx.api}), data in {cfg.data_dir}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_config_or_report(args.config)
    if loaded is None:
        return EXIT_USAGE
    setup_logging(loaded.config.log_level)
    try:
        return asyncio.run(serve(loaded))
    except (OSError, GatewayError, ExceptionGroup) as exc:
        taken = _port_in_use(exc)
        if taken is not None:
            api = loaded.config.api
            print(f"garden-gateway: the API's port is in use by another program ({taken}); "
                  f"stop that program (`sudo ss -ltnp` shows which) or set api.port (now "
                  f"{api.port}) or api.tls.port in {args.config}", file=sys.stderr)
            return EXIT_FAILED
        # A task that fails for good ends the process; systemd restarts it.
        log.exception("gateway failed: %s", exc)
        return EXIT_FAILED


def _port_in_use(exc: BaseException) -> OSError | None:
    """The "address already in use" inside ``exc`` (a TaskGroup's failure), if that is it."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _port_in_use(inner)
            if found is not None:
                return found
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the private servers' launcher (test support) is for the demo only, never
    # for a park's `run`; and demo.py runs the gateway with this module's serve().
    from gateway.ops import demo

    return demo.cmd_demo(args)


def cmd_polder_replay(args: argparse.Namespace) -> int:
    # Imported here: the replay runs on the tests' FakeClock, which a park's `run` never loads.
    from gateway.config.polder import PolderConfig
    from gateway.ops import polder_replay

    if args.thresholds is not None:
        try:
            waspada, siaga, awas = (float(x) for x in args.thresholds.split(","))
            polder = PolderConfig.model_validate({
                "device": "replay", "field": "level", "unit": args.unit,
                "thresholds": {"waspada": waspada, "siaga": siaga, "awas": awas}})
        except ValueError as exc:
            print(f"garden-gateway polder-replay: --thresholds: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        loaded = load_config_or_report(args.config)
        if loaded is None:
            return EXIT_USAGE
        polders = {p.device: p for p in loaded.config.polder}
        if not polders or (args.polder is not None and args.polder not in polders):
            print(f"garden-gateway polder-replay: {args.config} has no polder "
                  f"{args.polder or ''} (polders: {', '.join(polders) or 'none'}); or give "
                  "--thresholds", file=sys.stderr)
            return EXIT_USAGE
        polder = polders[args.polder] if args.polder else next(iter(polders.values()))
    try:
        _, score, rows = polder_replay.run(args.file, polder, quiet=args.quiet)
    except (OSError, ValueError) as exc:
        print(f"garden-gateway polder-replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"\n{len(rows)} readings of {polder.title} replayed")
    print("\n".join(score.lines()))
    return EXIT_OK


def cmd_regency_demo(args: argparse.Namespace) -> int:
    # Imported here: the private broker's launcher (test support) is for the demo only.
    from gateway.ops import regency_demo

    return regency_demo.cmd_regency_demo(args)


def cmd_regency(args: argparse.Namespace) -> int:
    """The regency service: every park's state from the central broker, one API."""
    from gateway.core.errors import ConfigError
    from gateway.regency.config import load_regency_config
    from gateway.regency.service import Regency

    try:
        config = load_regency_config(args.config, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging("INFO")

    async def serve_regency() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(Regency(config).run(), name="regency")
        done, _ = await asyncio.wait([task, asyncio.create_task(stop.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # it failed by itself: that failure, not a quiet stop
        task.cancel()
        await asyncio.wait([task])

    asyncio.run(serve_regency())
    return EXIT_OK


def _simulator(
    args: argparse.Namespace, port: simulate.PtyPort
) -> tuple[simulate.GardenRunner | simulate.PolderRunner, str]:
    """The runner ``args`` ask for on ``port``, and what to print: where, and the config."""
    from devices.simulators.garden import GardenSensor
    from devices.simulators.park import demo_storm
    from devices.simulators.polder import PolderSlave
    from gateway.ops import simulate

    shown = f"{port.path} (-> {port.tty})" if port.link is not None else port.path
    runner: simulate.GardenRunner | simulate.PolderRunner
    if args.device_kind == "polder":
        slave = PolderSlave(args.unit, seed=args.seed)
        if args.storm:
            slave.play(demo_storm(args.seed), start_s=time.time())
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
    from gateway.ops import simulate

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
    setup_logging("INFO")
    return asyncio.run(_simulate(args))


def _override(text: str) -> tuple[str, float | int | bool]:
    from gateway.ops import simulate

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
    from devices.simulators.garden import GardenSensor

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


def _add_simulate(sub: Subcommands) -> None:
    from devices.simulators.polder import REGISTERS

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
    polder.add_argument("--storm", action="store_true",
                        help="play the demo's storm from now (devices.simulators.storm: two "
                        "flat hours, 30 cm/h to 1.45 m, spikes, the float stuck for an hour)")
    polder.set_defaults(func=cmd_simulate)
    garden = kinds.add_parser(
        "garden", parents=[common], help="a line-printing garden sensor (Arduino style)",
        description="A garden sensor printing soil moisture, temperature, humidity and rain "
        "as text lines, as an Arduino or ESP32 sketch does.",
    )
    garden.add_argument("--interval", type=_positive, default=5.0,
                        help="seconds between lines (default 5)")
    garden.add_argument("--format", choices=("kv", "json", "csv"), default="kv",
                        help="how the simulated board prints its lines (default kv)")
    garden.add_argument("--checksum", choices=("none", "nmea"), default="none",
                        help="an NMEA-style *XX checksum after each line, or none (default)")
    garden.add_argument("--device", type=_device_id, default="kebun-1",
                        help="device id in the lines (default kebun-1)")
    garden.set_defaults(func=cmd_simulate)


def _example_config() -> Path | None:
    try:
        return resources.example_config()
    except resources.MissingFileError:
        return None  # every command but the demo works without it; the demo says what is wrong


def _version() -> str:
    """The installed package's version (pyproject.toml), without importing the gateway."""
    try:
        return importlib.metadata.version("garden-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_run(sub: Subcommands) -> None:
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                     help=f"YAML config file (default {DEFAULT_CONFIG_PATH})")
    run.set_defaults(func=cmd_run)


def _add_check_config(sub: Subcommands) -> None:
    check = sub.add_parser("check-config", help="validate a config file (exit 2 when invalid)")
    check.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                       help=f"YAML config file (default {DEFAULT_CONFIG_PATH})")
    check.set_defaults(func=cmd_check_config)


def _add_demo(sub: Subcommands) -> None:
    demo = sub.add_parser(
        "demo", help="run the gateway and a simulated park against a private Mosquitto "
        "(and InfluxDB, when installed) in a temp folder",
        description="A private Mosquitto and, when influxd is installed, a private InfluxDB in "
        "a temporary folder; a simulated park (access points, a Tasmota sensor, a polder "
        "level station and a line-printing sensor) living through a day in --day-minutes; and "
        "the gateway with its pages. Ctrl-C stops everything.",
    )
    demo.add_argument("--config", type=Path, default=_example_config(),
                      help="the park's config to run (default: the shipped example)")
    demo.add_argument("--workdir", help="folder for the private servers (default: a new one)")
    demo.add_argument("--api-port", type=int, default=8080,
                      help="port of the pages and the API (default 8080)")
    demo.add_argument("--day-minutes", type=_day_minutes, default=DEMO_DAY_MINUTES,
                      help="real minutes a simulated day takes (default "
                      f"{DEMO_DAY_MINUTES:g}; 1440: real time)")
    demo.set_defaults(func=cmd_demo)


def _add_polder_replay(sub: Subcommands) -> None:
    replay = sub.add_parser(
        "polder-replay", help="run the flood watch over a CSV of polder levels and score it",
        description="Replays time,level rows (and rain; and the labels true, spike, stuck of "
        "a synthetic storm) through the flood watch the gateway runs, prints the alerts it "
        "would have sent and, for labelled files, the scores against the issue's targets.")
    replay.add_argument("file", type=Path, help="CSV with the columns time,level[,true,spike,"
                        "stuck,rain]; time in ISO 8601 or Unix seconds")
    replay.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                        help=f"take the polder from this config (default {DEFAULT_CONFIG_PATH})")
    replay.add_argument("--polder", help="the polder's device id in the config (default: the "
                        "first)")
    replay.add_argument("--thresholds", help="waspada,siaga,awas instead of a config, e.g. "
                        "150,200,250")
    replay.add_argument("--unit", default="cm", choices=("m", "cm", "mm"),
                        help="the level's unit with --thresholds (default cm)")
    replay.add_argument("--quiet", action="store_true", help="only the scores, no alerts")
    replay.set_defaults(func=cmd_polder_replay)


def _add_regency(sub: Subcommands) -> None:
    regency = sub.add_parser(
        "regency", help="the regency service: every park's state from the central broker",
        description="Keeps a persistent session on the central broker, holds every park's "
        "latest summary, gateway status and bridge connection, and serves /api/v1/parks, "
        "/api/v1/parks/<site>, /api/v1/outages and /metrics. Config: mqtt, data_dir, api, "
        "stale_after_s; overrides GARDEN_REGENCY_<KEY>.")
    regency.add_argument("--config", type=Path, required=True, help="the regency's YAML file")
    regency.set_defaults(func=cmd_regency)


def _add_regency_demo(sub: Subcommands) -> None:
    regency_demo = sub.add_parser(
        "regency-demo", help="the regency service and several simulated parks on a private "
        "central broker",
        description="A private Mosquitto as the central broker, --parks light simulated parks "
        "publishing their summaries, gateway status and bridge connection (polders rising and "
        "falling, a gateway that stops, a link that drops), and the regency service with its "
        "pages. Ctrl-C stops everything.")
    regency_demo.add_argument("--parks", type=int, default=5, help="how many parks (1 to 8, "
                              "default 5)")
    regency_demo.add_argument("--api-port", type=int, default=8090,
                              help="port of the regency's pages and API (default 8090)")
    regency_demo.add_argument("--workdir", help="folder for the broker and the service's "
                              "files (default: a new one)")
    regency_demo.set_defaults(func=cmd_regency_demo)


def _add_doctor(sub: Subcommands) -> None:
    from gateway.ops import doctor

    doctor.register(sub)


def _add_devices(sub: Subcommands) -> None:
    from gateway.ops import accounts

    accounts.register(sub)


# Every command and what adds it to the parser, in the order of the help and the man page.
SUBCOMMANDS: dict[str, Callable[[Subcommands], None]] = {
    "run": _add_run,
    "check-config": _add_check_config,
    "demo": _add_demo,
    "polder-replay": _add_polder_replay,
    "regency": _add_regency,
    "regency-demo": _add_regency_demo,
    "simulate": _add_simulate,
    "doctor": _add_doctor,
    "devices": _add_devices,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command``, the same with only that command in it."""
    parser = argparse.ArgumentParser(
        prog="garden-gateway",
        description="Park gateway: MQTT and serial sensors in, durable spool, InfluxDB out.",
    )
    parser.add_argument("--version", action="version", version=f"garden-gateway {_version()}",
                        help="print the version and exit")
    # The metavar names every command even when only one is built: the same usage line.
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, add in SUBCOMMANDS.items():
        if command is None or name == command:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Only the command given is built, so only its modules are imported. Anything else (no
    # command, an option first, a misspelt command) gets the whole parser: its help, its
    # --version and its list of choices.
    command = words[0] if words and words[0] in SUBCOMMANDS else None
    args = build_parser(command).parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
