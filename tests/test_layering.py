"""The folder tree is the architecture, and this test keeps the picture true.

Every ``import`` in ``gateway/`` and ``devices/`` (at the top of a module or inside a function)
is read with :mod:`ast` and held against the layers of docs/architecture.md, top to bottom::

    gateway.ops                       the CLI, doctor, demo, simulators: nothing imports them
    gateway.app | gateway.regency     the composition root; the regency service
    gateway.web | gateway.sources     independent of each other, even indirectly
    gateway.pipeline                  route, decode, enrich, encode, commit
    gateway.park                      devices, liveness, outages, Wi-Fi, history, alerts
    gateway.store                     spool, forwarder, InfluxDB, line protocol
    gateway.config                    the one typed config
    gateway.core                      errors, clock, backoff, waiting: below everything
    devices                           pure decoders: nothing of gateway

A module may import its own package and any layer below its own, never one above. Inside
``gateway.ops`` nothing imports the CLI, the demo or the doctor but the CLI (and the entry
point, and the man-page generator reading the parser). Beside the layers: ``gateway.testing``
(private servers, FakeClock) is imported by ``gateway.ops`` only (the demo) and itself imports
only ``gateway.core``; the sources hand their messages to the pipeline and never import the
store directly.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, ...]] = [
    ("gateway.ops",),
    ("gateway.app", "gateway.regency"),
    ("gateway.web", "gateway.sources"),
    ("gateway.pipeline",),
    ("gateway.park",),
    ("gateway.store",),
    ("gateway.config",),
    ("gateway.core",),
    ("devices",),
]
# Packages every layer must be independent of in both directions, directly or not.
INDEPENDENT = ("gateway.web", "gateway.sources")
TESTING = "gateway.testing"
# The entry points above everything: ``python -m gateway`` and the package's own __init__.
ENTRY = {"gateway", "gateway.__main__"}
# The commands themselves: only the CLI dispatches to them, and only the entry point and the
# man-page generator (which reads its parser) import the CLI. What they share is ops.run.
COMMANDS: dict[str, set[str]] = {
    "gateway.ops.cli": {"gateway.__main__", "gateway.ops.docgen"},
    "gateway.ops.demo": {"gateway.ops.cli"},
    "gateway.ops.doctor": {"gateway.ops.cli"},
    "gateway.ops.polder_replay": {"gateway.ops.cli"},
    "gateway.ops.regency_demo": {"gateway.ops.cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import of ``gateway`` or ``devices``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from gateway.ops import doctor`` imports gateway.ops.doctor
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"
    # (module names outside the project are filtered by the caller)


def layer_of(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return i
    return None


def package_of(module: str) -> str | None:
    for layer in LAYERS:
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return pkg
    if module == TESTING or module.startswith(TESTING + "."):
        return TESTING
    return None


def in_project(name: str) -> bool:
    return name.split(".")[0] in ("gateway", "devices")


def resolve(name: str, known: set[str]) -> str:
    """``gateway.ops.doctor`` stays; ``gateway.core.clock.Clock`` becomes its module."""
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def collect() -> dict[str, list[tuple[int, str]]]:
    files = [*ROOT.glob("gateway/**/*.py"), *ROOT.glob("devices/**/*.py")]
    names = {module_name(f): f for f in files}
    known = set(names)
    graph: dict[str, list[tuple[int, str]]] = {}
    for name, path in names.items():
        found = project_imports(path.read_text(encoding="utf-8"), name,
                                path.name == "__init__.py")
        graph[name] = [(line, resolve(target, known)) for line, target in found
                       if in_project(target)]
    return graph


def violations(graph: dict[str, list[tuple[int, str]]]) -> list[str]:
    problems: list[str] = []
    for module, imports in sorted(graph.items()):
        mine = package_of(module)
        if module in ENTRY:
            continue
        if mine is None:
            problems.append(f"{module}: in no layer; give it a folder in LAYERS")
            continue
        for line, target in imports:
            for command, allowed in COMMANDS.items():
                inside = module == command or module.startswith(command + ".")
                if ((target == command or target.startswith(command + "."))
                        and not inside and module not in allowed):
                    problems.append(f"{module}:{line} imports {target}: nothing imports the "
                                    "CLI, the demo or the doctor")
            theirs = package_of(target)
            if target in ENTRY or theirs is None:
                problems.append(f"{module}:{line} imports {target}, which is in no layer")
                continue
            if theirs == mine:
                continue
            where = f"{module}:{line} imports {target}"
            if theirs == TESTING:
                if mine != "gateway.ops":
                    problems.append(f"{where}: test support is for tests and the demo only")
                continue
            if mine == TESTING:
                if theirs != "gateway.core":
                    problems.append(f"{where}: test support may lean on gateway.core only")
                continue
            if mine == "gateway.sources" and theirs == "gateway.store":
                problems.append(f"{where}: sources hand messages to the pipeline, "
                                "never to the store")
            mine_at, theirs_at = layer_of(module), layer_of(target)
            assert mine_at is not None
            assert theirs_at is not None
            if theirs_at < mine_at:
                problems.append(f"{where}: {theirs} is above {mine}")
            elif theirs_at == mine_at:
                problems.append(f"{where}: {mine} and {theirs} must stay independent")
    return problems


def reachable(graph: dict[str, list[tuple[int, str]]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [m for m in graph if m == start or m.startswith(start + ".")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(t for _, t in graph.get(m, []))
    return seen


def test_every_import_goes_down_the_layers() -> None:
    graph = collect()
    assert len(graph) > 40, "the walk found too few modules: is ROOT right?"
    assert violations(graph) == []


def test_web_and_sources_do_not_reach_each_other_even_indirectly() -> None:
    graph = collect()
    a, b = INDEPENDENT
    assert not {m for m in reachable(graph, a) if package_of(m) == b}
    assert not {m for m in reachable(graph, b) if package_of(m) == a}


def test_devices_import_nothing_of_the_gateway() -> None:
    graph = collect()
    offenders = [f"{m}:{line} imports {t}" for m, imports in graph.items()
                 if m.startswith("devices") for line, t in imports if t.startswith("gateway")]
    assert offenders == []


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("gateway.store.spool", "from gateway.park.registry import Registry",
     "gateway.park is above gateway.store"),
    ("gateway.web.api", "import gateway.sources.mqtt",
     "gateway.web and gateway.sources must stay independent"),
    ("gateway.sources.mqtt", "from gateway.store.spool import Spool",
     "sources hand messages to the pipeline"),
    ("gateway.core.clock", "def f():\n    from gateway.config import Config\n",
     "gateway.config is above gateway.core"),
    ("gateway.park.alerts", "from gateway.testing.stack import Stack",
     "test support is for tests and the demo only"),
    ("gateway.app.gateway", "from gateway.ops import cli",
     "gateway.ops is above gateway.app"),
    ("gateway.ops.demo", "from gateway.ops.cli import main",
     "nothing imports the CLI, the demo or the doctor"),
    ("gateway.ops.simulate", "from gateway.ops.doctor.runner import Result",
     "nothing imports the CLI, the demo or the doctor"),
    ("gateway.pipeline.ingest", "from ..web import api",
     "gateway.web is above gateway.pipeline"),
])
def test_the_check_catches_a_planted_import(module: str, source: str, expected: str) -> None:
    graph = collect()
    known = set(graph)
    graph[module] = [(line, resolve(t, known))
                     for line, t in project_imports(source, module, False) if in_project(t)]
    assert any(expected in p for p in violations(graph)), violations(graph)
