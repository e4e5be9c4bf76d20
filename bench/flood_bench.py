"""A flood of made-up device ids against the gateway, and against an older tree in the same run.

    .venv/bin/python bench/flood_bench.py --runs 3
    .venv/bin/python bench/flood_bench.py --baseline /tmp/gg-old     # the same flood, both trees

One private Mosquitto and one private InfluxDB 1.6.7 (gateway/testing/stack.py) serve every run;
each run starts ``python -m gateway run`` with a fresh data_dir, one configured device
(``polder-1``, a reading every 0.2 s on its own connection) and discovery on (the default).
Warm-up: the configured device online, 300 made-up ids. Then ``--flood`` more made-up ids, one
QoS 1 message each, as fast as the broker takes them. Measured per run:

- RSS (VmRSS) after the warm-up and once the gateway has received the whole flood;
- the log lines the gateway wrote from the flood's start to that moment;
- how long the gateway took to receive the flood;
- ``GET /api/v1/devices`` as an operator would call it (no parameters): bytes and seconds
  (median of three);
- whether the configured device is still online with a reading newer than the flood;
- how many seconds after the flood a device new to the gateway, publishing every 0.5 s,
  appears in ``/api/v1/devices`` (``refused`` when it has not after ``--accept-timeout``).

With ``--baseline DIR`` (an older checkout, e.g. ``git archive <commit> | tar -x -C DIR``) each
run floods the old tree and then the current one, alternately, so both meet the same machine
state. Figures are medians over ``--runs`` with min-max beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, free_port  # noqa: E402

SITE = "taman-bench"
TOKEN = "bench-operator-token-0123456789"  # noqa: S105 - a private test gateway
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WARM_IDS = 300


@dataclass
class Run:
    rss_before_mb: float
    rss_after_mb: float
    log_lines: int
    receive_s: float
    devices_bytes: int
    devices_s: float
    configured_ok: bool
    accept_s: float | None


@dataclass
class Tree:
    name: str
    source: Path
    runs: list[Run] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def steady(port: int, device: str, every_s: float) -> Iterator[list[int]]:
    sent: list[int] = []
    stop = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"steady-{device}")
    client.connect("127.0.0.1", port)
    client.loop_start()

    def run() -> None:
        while not stop.wait(every_s):
            sent.append(len(sent) + 1)
            client.publish(f"garden/{SITE}/{device}/telemetry",
                           f'{{"level_cm": {sent[-1]}}}', qos=1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(timeout=5)
        client.disconnect()
        client.loop_stop()


def flood(port: int, first: int, count: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flooder-{first}")
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(f"garden/{SITE}/made-up-{i:06d}/telemetry", f'{{"x": {i}}}',
                                qos=1) for i in range(first, first + count)]
        for info in infos:
            info.wait_for_publish(timeout=120)
    finally:
        client.disconnect()
        client.loop_stop()


def wait(condition: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(what)


class Gateway:
    def __init__(self, source: Path, folder: Path, broker: PrivateMosquitto,
                 influx: PrivateInfluxDB, db: str) -> None:
        self.api = f"http://127.0.0.1:{free_port()}"
        cfg = {
            "data_dir": str(folder / "data"),
            "gateway": {"id": "gw-bench", "site": SITE},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": f"gw-{db}"},
            "influx": {"url": influx.url, "database": db},
            "api": {"host": "127.0.0.1", "port": int(self.api.rsplit(":", 1)[1]),
                    "operator_token": TOKEN},
            "clock": {"require_sync": "no"},
            "subscriptions": [{"topic": f"garden/{SITE}/+/telemetry", "format": "native",
                               "name": "native"}],
            "devices": [{"id": "polder-1", "kind": "polder", "interval_s": 1}],
        }
        path = folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        self.log = folder / "gateway.log"
        env = {**os.environ, "PYTHONPATH": str(source)}
        with self.log.open("wb") as out:
            # cwd first on sys.path with -m: the tree under test, not the installed one.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(path)],
                stdout=out, stderr=subprocess.STDOUT, cwd=source, env=env)
        wait(self._up, 30, "gateway /health")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.api}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", headers=AUTH, timeout=30)

    def received(self) -> int:
        return int(self.get("/api/v1/status").json()["counts"]["received"])

    def devices(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/devices").json())

    def lines(self) -> int:
        return len(self.log.read_bytes().splitlines())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def one_run(tree: Tree, n: int, workdir: Path, broker: PrivateMosquitto,
            influx: PrivateInfluxDB, args: argparse.Namespace) -> Run:
    db = f"flood_{tree.name}_{n}"
    folder = workdir / db
    folder.mkdir()
    influx.create_database(db)
    gw = Gateway(tree.source, folder, broker, influx, db)
    try:
        def polder() -> dict[str, Any]:
            return next(d for d in gw.devices() if d["id"] == "polder-1")

        with steady(broker.port, "polder-1", 0.2) as sent:
            wait(lambda: polder()["state"] == "online", 30, "polder-1 online")
            flood(broker.port, 0, WARM_IDS)
            wait(lambda: gw.received() >= WARM_IDS, 60, "warm-up received")
            time.sleep(1.0)  # the warm-up's discoveries settle (registry writes, GC)
            before, lines, got = rss_mb(gw.proc.pid), gw.lines(), gw.received()
            started = time.monotonic()
            flood(broker.port, WARM_IDS, args.flood)
            wait(lambda: gw.received() >= got + args.flood, 600, "the flood received")
            receive_s = time.monotonic() - started
            after, lines_after = rss_mb(gw.proc.pid), gw.lines()
            timings, size = [], 0
            for _ in range(3):
                t0 = time.perf_counter()
                answer = gw.get("/api/v1/devices")
                timings.append(time.perf_counter() - t0)
                size = len(answer.content)
            mark = len(sent)
            try:
                wait(lambda: (polder().get("latest") or {}).get("fields", {})
                     .get("level_cm", 0) > mark and polder()["state"] == "online", 20,
                     "polder-1 fresh")
                ok = True
            except TimeoutError:
                ok = False
            accept: float | None
            with steady(broker.port, "kebun-baru", 0.5):
                try:
                    accept = wait(lambda: any(d["id"] == "kebun-baru" for d in gw.devices()),
                                  args.accept_timeout, "the new device")
                except TimeoutError:
                    accept = None
        return Run(before, after, lines_after - lines, receive_s, size,
                   statistics.median(timings), ok, accept)
    finally:
        gw.stop()


def spread(values: list[float], fmt: str = "{:,.1f}") -> str:
    if not values:
        return "-"
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}-{fmt.format(max(values))})")


def report(trees: list[Tree], args: argparse.Namespace) -> str:
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, pick: Any, fmt: str = "{:,.1f}") -> None:
        rows.append((name, [spread([pick(r) for r in t.runs], fmt) for t in trees]))

    row("RSS after warm-up, MB", lambda r: r.rss_before_mb)
    row("RSS after the flood, MB", lambda r: r.rss_after_mb)
    row("RSS growth, MB", lambda r: r.rss_after_mb - r.rss_before_mb)
    row("log lines during the flood", lambda r: float(r.log_lines), "{:,.0f}")
    row("flood received in, s", lambda r: r.receive_s)
    row("GET /api/v1/devices, kB", lambda r: r.devices_bytes / 1024, "{:,.0f}")
    row("GET /api/v1/devices, s", lambda r: r.devices_s, "{:.3f}")
    rows.append(("configured device online and fresh after",
                 [f"{sum(r.configured_ok for r in t.runs)}/{len(t.runs)} runs"
                  for t in trees]))
    rows.append(("new device accepted after the flood, s",
                 [spread([r.accept_s for r in t.runs if r.accept_s is not None], "{:.1f}")
                  + (f", refused in {sum(r.accept_s is None for r in t.runs)} runs"
                     if any(r.accept_s is None for r in t.runs) else "")
                  for t in trees]))
    head = " | ".join(f"{t.name} ({t.source})" for t in trees)
    out = [f"Flood of {args.flood:,} made-up ids after {WARM_IDS} warm-up ids; "
           f"{args.runs} runs, medians (min-max); {time.strftime('%Y-%m-%d %H:%M UTC')}",
           "", f"| figure | {head} |", "| --- |" + " --- |" * len(trees)]
    out += [f"| {name} | {' | '.join(cells)} |" for name, cells in rows]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flood", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="an older tree to flood in the same run")
    ap.add_argument("--accept-timeout", type=float, default=60.0)
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args()
    trees = ([Tree("baseline", args.baseline.resolve())] if args.baseline else [])
    trees.append(Tree("current", ROOT))
    with tempfile.TemporaryDirectory(prefix="garden-flood-") as tmp, \
            PrivateMosquitto(Path(tmp) / "mosquitto",
                             extra_conf="max_inflight_messages 4000") as broker, \
            PrivateInfluxDB(Path(tmp) / "influx") as influx:
        for n in range(args.runs):
            for tree in trees:
                run = one_run(tree, n, Path(tmp), broker, influx, args)
                tree.runs.append(run)
                print(f"  run {n + 1} {tree.name}: {run}", flush=True)
    table = report(trees, args)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
