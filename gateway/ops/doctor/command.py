"""The ``doctor`` command: which checks run, with what time limit, and its arguments."""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.config import DEFAULT_CONFIG_PATH
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.ops.doctor.accounts import check_accounts
from gateway.ops.doctor.api import check_api
from gateway.ops.doctor.broker import check_broker
from gateway.ops.doctor.clock import ClockSources, check_clock
from gateway.ops.doctor.config import SECRETS_ENV, check_config, doctor_env
from gateway.ops.doctor.disk import check_disk, check_files, check_spool
from gateway.ops.doctor.influx import check_influx
from gateway.ops.doctor.ports import check_modbus_bus, check_serial_source
from gateway.ops.doctor.runner import (
    DEFAULT_UNIT,
    SKIPPABLE,
    CommandRunner,
    Job,
    Options,
    Report,
    Result,
    in_report_order,
    run_command,
    run_jobs,
)
from gateway.ops.doctor.systemd import check_systemd

_DEFAULT_OPTIONS = Options()


async def run_doctor(
    config_path: Path,
    options: Options = _DEFAULT_OPTIONS,
    *,
    env: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    clock: Clock = SYSTEM_CLOCK,
    clock_sources: ClockSources | None = None,
    run: CommandRunner = run_command,
) -> Report:
    """Every check not skipped, at once; the report in the documented order.

    ``clock`` is the time the spool's age is measured against, and, unless ``clock_sources``
    says otherwise, the time the clock check shows.
    """
    environ = os.environ if env is None else env
    notes: list[str] = []
    full_env = doctor_env(env_file, environ, notes)
    config_result, loaded = check_config(config_path, full_env, notes)
    t = options.timeout_s
    skip = options.skip
    jobs: list[Job] = []

    def add(check: str, name: str, budget: float, fn: Callable[[], list[Result]]) -> None:
        if check not in skip:
            jobs.append(Job(check, name, budget, fn))

    if loaded is not None:
        cfg = loaded.config
        # A little over the check's own timeouts, so they speak first.
        add("broker", "broker", 2 * t + 1, lambda: check_broker(cfg, t))
        add("accounts", "accounts", t + 1, lambda: check_accounts(cfg))
        add("influx", "influx", 2 * t + 1, lambda: check_influx(cfg, t))
        for i in range(len(cfg.serial)):
            add("serial", f"serial {cfg.serial[i].name}", t + options.line_wait_s + 1,
                functools.partial(check_serial_source, cfg, i, options.line_wait_s))
        for i, bus in enumerate(cfg.modbus):
            polls = sum(min(bus.timeout_s, t) + bus.turnaround_s + 0.05 for _ in bus.slaves)
            add("serial", f"modbus {bus.name}", t + polls + 1,
                functools.partial(check_modbus_bus, cfg, i, t))
    sources = clock_sources or ClockSources(clock=clock)
    add("clock", "clock", t + 1, lambda: check_clock(sources, t))
    if loaded is not None:
        add("disk", "disk", t, lambda: check_disk(cfg))
        add("disk", "spool", t, lambda: check_spool(cfg, clock))
        add("disk", "files", t, lambda: check_files(cfg))
    add("systemd", f"systemd {options.unit}", t + 1,
        lambda: check_systemd(options.unit, run, t))
    if loaded is not None:
        add("api", "api", t + 1, lambda: check_api(cfg, t))
    checked = await run_jobs(jobs)
    results = [config_result]
    if loaded is None:
        results += [Result(c, c, "SKIP", "not checked: it needs a valid config (see above)")
                    for c in ("broker", "accounts", "influx", "serial", "disk", "api")
                    if c not in skip]
    results.extend(checked)
    return Report(tuple(in_report_order(results)), loaded is not None)


# -- command line ----------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds, 0 or more")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds, more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                        help=f"YAML config file (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--timeout", type=_positive_seconds, default=5.0, metavar="S",
                        help="time limit of each network check, in seconds (default 5)")
    parser.add_argument("--line-wait", type=_seconds, default=3.0, metavar="S",
                        help="how long to wait for a line from each line sensor (default 3; "
                             "0: only open the port)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                        help="leave a check out (repeatable); 'serial' covers Modbus buses")
    parser.add_argument("--unit", default=DEFAULT_UNIT,
                        help=f"the systemd unit to ask about (default {DEFAULT_UNIT})")
    parser.add_argument("--env-file", type=Path, default=None,
                        help=f"secrets as KEY=VALUE lines (default {SECRETS_ENV}, "
                             "when it exists); the shell's variables win")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to ``garden-gateway``'s subcommands."""
    parser = subparsers.add_parser(
        "doctor", help="check this park's gateway: config, broker, InfluxDB, serial ports, "
        "clock, disk, service (exit 1 when something fails)",
        description="Check everything the gateway needs, one line each: OK, WARN or FAIL, "
        "what was found and how to fix it. Exit 0 when nothing failed, 1 when something "
        "did, 2 when the config is not valid.")
    add_arguments(parser)
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    options = Options(timeout_s=args.timeout, line_wait_s=args.line_wait, unit=args.unit,
                      skip=frozenset(args.skip))
    report = asyncio.run(run_doctor(args.config, options, env_file=args.env_file))
    print(report.as_json() if args.json else report.text(), flush=True)
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="garden-gateway doctor")
    add_arguments(parser)
    args = parser.parse_args(argv)
    code = cmd_doctor(args)
    return code
