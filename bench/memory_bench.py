"""Memory benchmark: what a running gateway holds, idle and under a burst, and what makes it.

    .venv/bin/python bench/memory_bench.py                  # writes bench/results/memory.md
    .venv/bin/python bench/memory_bench.py --env MALLOC_ARENA_MAX=2 --messages 20000

Public tools only: /proc/<pid>/status and smaps, ``tracemalloc``, and child interpreters that
import the same modules the gateway did. One private Mosquitto and one private InfluxDB 1.6.7
(gateway/testing/stack.py) on free ports in a temporary folder serve every run.

- floor: VmRSS of a bare interpreter, and of one that has done ``import fastapi, pydantic,
  uvicorn`` (what any FastAPI service on this Python pays before its own code).
- idle: the gateway of bench/gateway_bench.py (one native subscription, the API with its
  token), once MQTT is connected and ``/`` and ``/api/v1/status`` were fetched once; VmRSS
  after a settling pause, split into file-backed pages (the interpreter's and the extension
  modules' code) and anonymous ones (Python's heap, malloc arenas, thread stacks).
- burst: ``--messages`` native QoS 1 messages with ``mosquitto_pub -l`` (runs of 10,000, as
  the throughput benchmark does); VmHWM once InfluxDB has all of them, and VmRSS then.
- imports: the modules the gateway had in ``sys.modules`` when it stopped, imported again group
  by group in a fresh interpreter (standard library first, then the dependencies roughly in
  dependency order, then the gateway's packages bottom-up); each group's cost is the VmRSS it
  adds over the groups before it.
- SQLite: ``sqlite3_memory_used()`` and its high-water mark, read inside the gateway (ctypes,
  on SIGUSR1) at idle and after the burst: every connection's page cache and statements.
- Python heap: a second run under ``tracemalloc`` (1 frame): traced bytes at idle and their peak
  over the burst, and the source files that hold the most at idle. tracemalloc's own tables
  make that run's RSS larger: only its traced figures are shown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway_bench import BENCH_TOKEN, Bench, wait_count  # noqa: E402 - this script's folder

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "memory.md"
SETTLE_S = 3.0

# Runs ``python -m gateway run`` with two additions: at exit it writes the names in
# sys.modules to argv[1]; SIGUSR1 writes SQLite's own memory figures (sqlite3_memory_used and
# its high-water mark: every connection's page cache and statements) and, under
# PYTHONTRACEMALLOC, tracemalloc's, to argv[1] + ".probe.<n>.json". asyncio's signal handling
# sets a wakeup fd, so the handler runs promptly even while the loop waits. What the handler
# imports (ctypes) comes after the figures it is asked for.
WRAPPER = r"""
import atexit, json, runpy, signal, sys
out = sys.argv[1]
def dump_modules():
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump_modules)
taken = [0]
def probe(signum, frame):
    import ctypes, ctypes.util, tracemalloc
    taken[0] += 1
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
    lib.sqlite3_memory_used.restype = lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    figures = {"sqlite_used": lib.sqlite3_memory_used(),
               "sqlite_peak": lib.sqlite3_memory_highwater(0)}
    if tracemalloc.is_tracing():
        figures["current"], figures["peak"] = tracemalloc.get_traced_memory()
        top = tracemalloc.take_snapshot().statistics("filename")[:15]
        figures["top"] = [[str(s.traceback[0].filename), s.size] for s in top]
    with open(f"{out}.probe.{taken[0]}.json", "w") as f:
        json.dump(figures, f)
signal.signal(signal.SIGUSR1, probe)
sys.argv = ["gateway", "run", "--config", sys.argv[2]]
runpy.run_module("gateway", run_name="__main__", alter_sys=True)
"""

# Imports the groups given as JSON on stdin, one after the other, printing VmRSS (kB) after each.
IMPORTER = r"""
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
groups = json.load(sys.stdin)
print(json.dumps(["(interpreter)", rss()]), flush=True)
for name, modules in groups:
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception:  # noqa: BLE001 - a module that only imports inside the gateway
            pass
    print(json.dumps([name, rss()]), flush=True)
"""

# Dependencies first, so that each group's figure is its own and not its dependencies'.
THIRD_PARTY_ORDER = [
    "typing_extensions", "annotated_types", "typing_inspection", "pydantic_core", "pydantic",
    "idna", "sniffio", "anyio", "h11", "starlette", "fastapi", "click", "uvicorn", "certifi",
    "httpcore", "httpx", "paho", "yaml", "serial",
]
GATEWAY_ORDER = ["devices", "devices.simulators", "gateway.core", "gateway.config",
                 "gateway.store", "gateway.park", "gateway.pipeline", "gateway.sources",
                 "gateway.web", "gateway.app", "gateway.regency", "gateway.testing",
                 "gateway.ops"]


def status(pid: int) -> dict[str, int]:
    """The kB figures (and thread count) of /proc/<pid>/status."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            figures[key] = int(value.split()[0])
    return figures


def smaps_split(pid: int) -> dict[str, int]:
    """RSS kB by kind of mapping: code and data of files, [heap], thread stacks, other anon."""
    split = {"file": 0, "heap": 0, "stack": 0, "anon": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            kind = ("heap" if name == "[heap]" else "stack" if name.startswith("[stack")
                    else "file" if name.startswith("/") else "anon")
        elif head[0] == "Rss:":
            split[kind] += int(head[1])
    return split


def rss_of(python: str, code: str) -> int:
    """VmRSS (kB) of a fresh interpreter that ran ``code``."""
    probe = (code + "\nfor line in open('/proc/self/status'):\n"
             "    if line.startswith('VmRSS:'): print(line.split()[1])")
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return int(out.stdout.split()[-1])


def group_of(module: str) -> str | None:
    top = module.split(".")[0]
    if top in ("gateway", "devices"):
        if module.startswith("devices.simulators"):
            return "devices.simulators"
        parts = module.split(".")
        if top == "devices":
            return "devices"
        if len(parts) >= 3 and parts[1] == "ops":
            return ".".join(parts[:3])  # each command apart: cli, doctor, simulate, ...
        return ".".join(parts[:2]) if len(parts) > 1 else "gateway"
    if top in sys.stdlib_module_names or top.startswith("_") or top == "__main__":
        return "stdlib" if top != "__main__" else None
    return top


def order_key(name: str) -> tuple[int, int, str]:
    if name == "stdlib":
        return (0, 0, name)
    if name in THIRD_PARTY_ORDER:
        return (1, THIRD_PARTY_ORDER.index(name), name)
    if name.split(".")[0] in ("gateway", "devices"):
        base = next((i for i, g in enumerate(GATEWAY_ORDER)
                     if name == g or name.startswith(g + ".")), len(GATEWAY_ORDER))
        return (3, base, name)
    return (2, 0, name)


def import_costs(python: str, modules: list[str]) -> list[tuple[str, int, int]]:
    """(group, modules, kB it adds) in import order, for the modules a gateway had loaded."""
    groups: dict[str, list[str]] = {}
    for m in modules:
        g = group_of(m)
        if g is not None:
            groups.setdefault(g, []).append(m)
    # The FastAPI floor first, as one row: every other row is then what the gateway adds.
    ordered = ["floor: fastapi, pydantic, uvicorn", *sorted(groups, key=order_key)]
    groups[ordered[0]] = ["fastapi", "pydantic", "uvicorn"]
    payload = json.dumps([[g, sorted(groups[g])] for g in ordered])
    out = subprocess.run([python, "-c", IMPORTER], input=payload, capture_output=True,
                         text=True, check=True, cwd=ROOT)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    costs = []
    for (_, before), (name, after) in itertools.pairwise(rows):
        costs.append((name, len(groups[name]), after - before))
    return costs


@dataclass
class Run:
    idle: dict[str, int] = field(default_factory=dict)
    idle_split: dict[str, int] = field(default_factory=dict)
    burst: dict[str, int] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    heap: list[dict[str, Any]] = field(default_factory=list)
    burst_s: float = 0.0


def fetch_pages(port: int) -> None:
    headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as c:
        c.get("/").raise_for_status()
        c.get("/api/v1/status", headers=headers).raise_for_status()


def run_gateway(bench: Bench, python: str, messages: int, env: dict[str, str],
                traced: bool) -> Run:
    db, folder = bench._next("traced" if traced else "gateway")
    system = bench.gateway(db, folder)
    modules_out = folder / "modules.json"
    config = system.argv[-1]
    system.argv = [python, "-c", WRAPPER, str(modules_out), config]
    api_port = int(yaml.safe_load(Path(config).read_text())["api"]["port"])
    extra = dict(env)
    if traced:
        extra["PYTHONTRACEMALLOC"] = "1"
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        system.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result = Run()
    try:
        assert system.proc is not None
        pid = system.proc.pid
        fetch_pages(api_port)
        time.sleep(SETTLE_S)
        result.idle = status(pid)
        result.idle_split = smaps_split(pid)
        result.heap.append(take_heap(pid, modules_out, 1))
        t0 = time.monotonic()
        bench.publish(bench.bodies(messages))
        wait_count(bench.influx, db, messages, timeout=300)
        result.burst_s = time.monotonic() - t0
        result.burst = status(pid)
        result.heap.append(take_heap(pid, modules_out, 2))
    finally:
        system.stop()
    if modules_out.exists():
        result.modules = json.loads(modules_out.read_text())
    return result


def take_heap(pid: int, modules_out: Path, n: int) -> dict[str, Any]:
    path = Path(f"{modules_out}.probe.{n}.json")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            time.sleep(0.2)
            heap: dict[str, Any] = json.loads(path.read_text())
            return heap
        time.sleep(0.05)
    raise TimeoutError(f"no tracemalloc snapshot from {pid}")


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def short(path: str) -> str:
    for base in (str(ROOT) + "/", sys.prefix + "/", sys.base_prefix + "/"):
        if path.startswith(base):
            return path[len(base):]
    return path


def report(args: argparse.Namespace, floor: tuple[int, int], run: Run, traced: Run | None,
           costs: list[tuple[str, int, int]]) -> str:
    bare, web = floor
    env = " ".join(f"{k}={v}" for k, v in args.env.items()) or "none"
    lines = [
        f"Memory of `garden-gateway run` (bench/memory_bench.py); {args.messages:,} native QoS 1 "
        f"messages; extra environment: {env}; interpreter {short(args.python)}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| figure | MB |",
        "| --- | --- |",
        f"| floor: bare interpreter, VmRSS | {mb(bare)} |",
        f"| floor: interpreter + `import fastapi, pydantic, uvicorn`, VmRSS | {mb(web)} |",
        f"| idle, `/` and `/api/v1/status` served once, VmRSS | {mb(run.idle['VmRSS'])} |",
        f"| idle above the FastAPI floor | {mb(run.idle['VmRSS'] - web)} |",
        f"| idle: file-backed (code of python and extension modules) | "
        f"{mb(run.idle_split['file'])} |",
        f"| idle: [heap] (brk: the main arena) | {mb(run.idle_split['heap'])} |",
        f"| idle: other anonymous (mmap'd arenas, thread stacks, pymalloc) | "
        f"{mb(run.idle_split['anon'] + run.idle_split['stack'])} |",
        f"| idle: threads | {run.idle['Threads']} |",
        f"| burst: peak, VmHWM | {mb(run.burst['VmHWM'])} |",
        f"| burst: VmRSS once InfluxDB has every point | {mb(run.burst['VmRSS'])} |",
        f"| burst: threads then | {run.burst['Threads']} |",
        f"| burst: published to all in InfluxDB, s | {run.burst_s:.1f} |",
        f"| SQLite (sqlite3_memory_used: page caches, statements) at idle | "
        f"{mb(run.heap[0]['sqlite_used'] / 1024)} |",
        f"| SQLite high-water mark through the burst | "
        f"{mb(run.heap[1]['sqlite_peak'] / 1024)} |",
    ]
    if traced is not None:
        idle_heap, burst_heap = traced.heap
        lines += [
            f"| Python heap (tracemalloc) at idle | {mb(idle_heap['current'] / 1024)} |",
            f"| Python heap (tracemalloc) peak through the burst | "
            f"{mb(burst_heap['peak'] / 1024)} |",
        ]
    floor_row, *above = costs
    total = sum(c for _, _, c in above)
    lines += [
        "",
        f"Imports: the gateway's {len(run.modules)} modules again in a fresh interpreter: first "
        "the FastAPI floor, then group by group; each row is the VmRSS it adds to the rows above "
        f"it (the groups add {mb(total)} MB to the floor's {mb(floor_row[2])}).",
        "",
        "| group | modules | MB |",
        "| --- | --- | --- |",
        f"| {floor_row[0]} | - | {mb(floor_row[2])} |",
    ]
    ranked = sorted(above, key=lambda c: -c[2])
    for name, n, kb in ranked[: args.top]:
        lines.append(f"| {name} | {n} | {mb(kb)} |")
    rest = ranked[args.top:]
    if rest:
        lines.append(f"| {len(rest)} more groups | {sum(n for _, n, _ in rest)} | "
                     f"{mb(sum(kb for _, _, kb in rest))} |")
    if traced is not None and traced.heap:
        top = traced.heap[0]["top"]
        assert isinstance(top, list)
        lines += ["", "Python heap at idle by source file (tracemalloc, top 10):", "",
                  "| file | MB |", "| --- | --- |"]
        lines += [f"| {short(name)} | {size / 2**20:.2f} |" for name, size in top[:10]]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=value")
    return key, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--env", type=parse_env, action="append", default=[],
                        help="NAME=value for the gateway's environment (repeatable)")
    parser.add_argument("--python", default=sys.executable,
                        help="the gateway's interpreter, e.g. a venv with only the gateway's "
                        "own dependencies as on a Pi (default: this one)")
    parser.add_argument("--no-traced", action="store_true",
                        help="skip the tracemalloc run (the Python heap figures)")
    parser.add_argument("--top", type=int, default=15, help="import groups shown")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--modules-out", type=Path,
                        help="also write the names the gateway had in sys.modules here")
    args = parser.parse_args()
    args.env = dict(args.env)
    floor = (rss_of(args.python, "pass"), rss_of(args.python, "import fastapi, pydantic, uvicorn"))
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        work = Path(tmp)
        (work / "mqtt").mkdir()
        (work / "influx").mkdir()
        with PrivateMosquitto(work / "mqtt") as broker, PrivateInfluxDB(work / "influx") as db:
            bench = Bench(work, broker, db, profile=False, red=None)
            run = run_gateway(bench, args.python, args.messages, args.env, traced=False)
            traced = None if args.no_traced else run_gateway(
                bench, args.python, args.messages, args.env, traced=True)
    if args.modules_out is not None:
        args.modules_out.write_text("\n".join(run.modules) + "\n")
    costs = import_costs(args.python, run.modules)
    text = report(args, floor, run, traced, costs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
