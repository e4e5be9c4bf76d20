"""Conventions the users' tools expect (issue 14, part 6): ``--version``, a ``--config`` default,
help on every option, a taken API port named with the option to change, and log lines that
journald files by priority under systemd."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.config import DEFAULT_CONFIG_PATH
from gateway.ops.cli import build_parser
from gateway.testing.stack import free_port

ROOT = Path(__file__).resolve().parent.parent


def gateway(*args: str, env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})}, check=False)


def test_version_is_printed() -> None:
    done = gateway("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == "garden-gateway 0.1.0"


def test_every_option_of_every_command_has_help() -> None:
    def options(parser: argparse.ArgumentParser, where: str) -> list[tuple[str, str | None]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += options(sub, f"{where} {name}")
            elif action.option_strings and action.dest != "help":
                found.append((f"{where} {action.option_strings[-1]}", action.help))
        return found

    missing = [name for name, text in options(build_parser(), "garden-gateway")
               if not text or text == argparse.SUPPRESS]
    assert missing == []


def test_config_defaults_to_the_installed_path() -> None:
    assert str(DEFAULT_CONFIG_PATH) == "/etc/garden-gateway/config.yaml"
    for command in ("run", "check-config", "doctor"):
        args = build_parser().parse_args([command])
        assert args.config == DEFAULT_CONFIG_PATH, command


def test_a_taken_api_port_names_the_option_and_exits_1(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "gateway": {"id": "gw-busy", "site": "taman-uji"},
        "mqtt": {"host": "127.0.0.1", "port": 1}, "influx": {"url": "http://127.0.0.1:1"},
        "clock": {"require_sync": "no"}, "api": {"host": "127.0.0.1", "port": port}}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = gateway("run", "--config", str(config))
    assert done.returncode == 1
    assert "the API's port is in use by another program" in done.stderr
    assert f"set api.port (now {port})" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


_LOG = ("from gateway.ops.run import setup_logging; import logging; setup_logging('INFO'); "
        "log = logging.getLogger('gateway.test'); log.warning('w'); log.info('i'); "
        "log.error('e'); log.debug('d')")


def test_under_systemd_log_lines_carry_a_priority_and_no_timestamp(tmp_path: Path) -> None:
    out = tmp_path / "journal-stream"
    with out.open("w") as stream:
        st = os.fstat(stream.fileno())
        subprocess.run([sys.executable, "-c", _LOG], stdout=stream, cwd=ROOT, check=True,
                       env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert out.read_text().splitlines() == [
        "<4>WARNING gateway.test: w", "<6>INFO gateway.test: i", "<3>ERROR gateway.test: e"]


def test_elsewhere_log_lines_keep_their_timestamp(tmp_path: Path) -> None:
    out = tmp_path / "a-file"
    with out.open("w") as stream:
        # JOURNAL_STREAM inherited from a shell under systemd, but stdout is a file.
        subprocess.run([sys.executable, "-c", _LOG], stdout=stream, cwd=ROOT, check=True,
                       env={**os.environ, "JOURNAL_STREAM": "8:12345"})
    lines = out.read_text().splitlines()
    assert len(lines) == 3
    assert all(not line.startswith("<") and line[:4].isdigit() for line in lines)


def test_api_times_carry_iso_8601_beside_their_nanoseconds() -> None:
    from gateway.core.status import DeadLetterView, Latest, ResidentGarden

    ns = 1_796_345_610_374_706_501
    assert Latest.model_validate({"time_ns": ns, "fields": {}}).time == "2026-12-04T00:53:30.374Z"
    dead = DeadLetterView.model_validate({"id": 1, "at_ns": ns, "source": "s", "topic": "t",
                                          "kind": "k", "error": "e", "payload": "p"})
    assert dead.model_dump()["at"] == "2026-12-04T00:53:30.374Z"
    from pydantic import BaseModel

    import gateway.core.status as shapes

    # Every *_ns time of every shape has its ISO twin (``since_ns`` and ``since``).
    every = [m for m in (getattr(shapes, n) for n in dir(shapes))
             if isinstance(m, type) and issubclass(m, BaseModel) and m is not BaseModel]
    assert shapes.Status in every
    missing = [f"{m.__name__}.{name}" for m in every for name in m.model_fields
               if name.endswith("_ns") and name[:-3] not in m.model_fields]
    assert missing == []
    garden = ResidentGarden.model_validate({"temperature_c": None, "humidity_pct": None,
                                            "time_ns": None, "stale": True, "state": "unknown"})
    assert garden.time is None
