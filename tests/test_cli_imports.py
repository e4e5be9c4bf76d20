"""A command imports only its own modules: ``run`` (a park's Pi, all day) never loads the doctor,
the simulators, the accounts' tools or the demo, and each command's parser, built alone, is the
same as its part of the whole command line (gateway/ops/cli.py, bench/memory_bench.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ops import cli

ROOT = Path(__file__).resolve().parent.parent

# What `run` has no use for: other commands, their simulators and servers, test tools.
NOT_FOR_RUN = (
    "gateway.ops.doctor", "gateway.ops.simulate", "gateway.ops.accounts", "gateway.ops.demo",
    "gateway.ops.regency_demo", "gateway.ops.polder_replay", "gateway.ops.docgen",
    "gateway.regency", "gateway.testing", "devices.simulators", "hypothesis", "pytest",
)


def test_run_imports_no_other_command(tmp_path: Path) -> None:
    # `run` with a config that cannot load stops after the parser and before the gateway, so
    # the gateway's own modules are imported by hand, as serve() would.
    probe = (
        "import json, sys\n"
        "from gateway.ops import cli\n"
        f"code = cli.main(['run', '--config', {str(tmp_path / 'missing.yaml')!r}])\n"
        "import gateway.app.gateway\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=60)
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code == 2
    assert "gateway.app.gateway" in modules
    loaded = [m for m in modules
              if any(m == bad or m.startswith(bad + ".") for bad in NOT_FOR_RUN)]
    assert loaded == []


def _part(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            part: argparse.ArgumentParser = action.choices[name]
            return part
    raise AssertionError(f"no subcommands in {parser.prog}")


def _helps(parser: argparse.ArgumentParser) -> list[str]:
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                texts += _helps(sub)
    return texts


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_a_command_alone_parses_as_in_the_whole_line(name: str) -> None:
    whole, alone = cli.build_parser(), cli.build_parser(name)
    assert _helps(_part(alone, name)) == _helps(_part(whole, name))
    assert alone.format_usage() == whole.format_usage()
