"""``garden-gateway``: run, check-config, demo.

Exit codes: 0 ok; 1 the gateway failed while running; 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from gateway.config import LoadedConfig, load_config
from gateway.errors import ConfigError, GatewayError, StackError

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
        assert stack.mosquitto is not None
        assert stack.influx is not None
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
        os.environ.update(env)
        loaded = _load(args.config)
        if loaded is None:
            return EXIT_USAGE
        _setup_logging(loaded.config.log_level)
        cfg = loaded.config
        banner = "\n".join([
            "",
            "Garden Gateway demo is running. Where to look:",
            f"  status API   http://127.0.0.1:{api_port}/api/v1/status",
            f"  API docs     http://127.0.0.1:{api_port}/docs",
            f"  broker       mqtt://127.0.0.1:{stack.mosquitto.port}  (private, in {workdir})",
            f"  InfluxDB     {stack.influx.url}  database {cfg.influx.database}",
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
            return asyncio.run(_serve(loaded, on_started=banner))
        except KeyboardInterrupt:
            return EXIT_OK
    finally:
        stack.__exit__(None, None, None)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
