"""End-to-end benchmark: the durable gateway against a minimal bridge, on the same workload.

    ./dev bench                      # or: .venv/bin/python bench/gateway_bench.py --runs 3

One private Mosquitto and one private InfluxDB 1.6.7 (gateway/testing/stack.py) serve every run;
each run gets its own database and a fresh gateway data_dir. Figures are medians over ``--runs``
with min-max beside them. Broker, InfluxDB, publisher and the system under test share this
machine's cores, as they do on a Raspberry Pi.

- throughput: N native telemetry messages (no "ts": the gateway stamps the receive time, the
  hard case) published at QoS 1 with ``mosquitto_pub -l`` in runs of at most 10,000 lines;
  readings/s from the first publish to the last point visible in InfluxDB (polled every 20 ms).
- latency: a paced paho publisher at ``--latency-rate`` msg/s; InfluxDB's ``max(seq)`` is polled
  every 20 ms, so the resolution is the poll interval; the gateway's ``flush_interval_s`` (how
  long a partial batch waits) dominates and is shown in the label.
- peak RSS: VmHWM of the process under test after the throughput run.
- replay: a spool pre-filled with ``--replay`` lines is sent to InfluxDB by a starting gateway;
  points/s from process start to the last point visible.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.store.spool import SpoolDB  # noqa: E402 - after the path is set for a bare checkout
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, find_executable, free_port  # noqa: E402

SITE = "taman-bench"
BENCH_TOKEN = "bench-operator-token-0123456789"  # noqa: S105 - a private test gateway
PUB_CHUNK = 10_000
POLL_S = 0.02


@dataclass
class Figures:
    throughput: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None
    replay: list[float] = field(default_factory=list)


def count(influx: PrivateInfluxDB, db: str, what: str = 'count("seq")') -> int:
    try:
        rows = influx.points(db, f'SELECT {what} AS n FROM "polder"')
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return int(rows[0]["n"] or 0) if rows else 0


def wait_count(influx: PrivateInfluxDB, db: str, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count(influx, db) >= n:
            return time.monotonic()
        time.sleep(POLL_S)
    raise TimeoutError(f"only {count(influx, db)} of {n} points in {db} after {timeout}s")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class System:
    """A system under test: the gateway or the reference bridge, as a child process."""

    def __init__(self, name: str, argv: list[str], log: Path,
                 ready: Callable[[subprocess.Popen[bytes]], bool]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            self.started = time.monotonic()
            # A session of its own: a stop signal reaches the profiler and the gateway alike.
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.ready(self.proc):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: the gateway stops as on SIGTERM, and py-spy writes its profile.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Bench:
    def __init__(self, workdir: Path, broker: PrivateMosquitto, influx: PrivateInfluxDB,
                 profile: bool) -> None:
        self.workdir = workdir
        self.broker = broker
        self.influx = influx
        self.profile = profile
        self.serial = 0

    def _next(self, kind: str) -> tuple[str, Path]:
        self.serial += 1
        name = f"{kind}{self.serial}"
        folder = self.workdir / name
        folder.mkdir()
        self.influx.create_database(name)
        return name, folder

    def gateway(self, db: str, folder: Path, *, flush_interval_s: float = 1.0,
                profile: bool = False, protocol: str = "5") -> System:
        api = free_port()
        cfg = {
            "data_dir": str(folder / "data"),
            "gateway": {"id": "gw-bench", "site": SITE},
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port,
                     "client_id": f"gw-bench-{db}", "protocol": protocol},
            "influx": {"url": self.influx.url, "database": db,
                       "flush_interval_s": flush_interval_s},
            "api": {"host": "127.0.0.1", "port": api, "operator_token": BENCH_TOKEN},
            # No NTP on a bench machine or container: "auto" would hold what the gateway stamps.
            "clock": {"require_sync": "no"},
            "log_level": "WARNING",
            "subscriptions": [{"topic": f"garden/{SITE}/+/telemetry", "format": "native",
                               "name": "native"}],
            "devices": [{"id": "polder-1", "kind": "polder"}],
        }
        path = folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(cfg))
        argv = [sys.executable, "-m", "gateway", "run", "--config", str(path)]
        if profile:
            # py-spy samples every thread (the spool's too) at a low cost, unlike pyinstrument.
            argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                    "--rate", "500", "--threads", "-o",
                    str(ROOT / "bench" / "results" / "profile.txt"), "--", *argv]

        def ready(_: subprocess.Popen[bytes]) -> bool:
            try:
                status = httpx.get(f"http://127.0.0.1:{api}/api/v1/status", timeout=1,
                                   headers={"Authorization": f"Bearer {BENCH_TOKEN}"}).json()
            except (httpx.HTTPError, ValueError):
                return False
            return bool(status["mqtt"]["connected"])

        return System("gateway", argv, folder / "gateway.log", ready)

    def bridge(self, db: str, folder: Path) -> System:
        argv = [sys.executable, str(ROOT / "bench" / "minimal_bridge.py"),
                "--mqtt-port", str(self.broker.port), "--influx-url", self.influx.url,
                "--db", db, "--topic", f"garden/{SITE}/+/telemetry"]
        log = folder / "bridge.log"

        def ready(_: subprocess.Popen[bytes]) -> bool:
            return log.exists() and "ready" in log.read_text()

        return System("bridge", argv, log, ready)

    def publish_lines(self, n: int) -> None:
        pub = find_executable("mosquitto_pub")
        topic = f"garden/{SITE}/polder-1/telemetry"
        for start in range(0, n, PUB_CHUNK):
            body = "".join(json.dumps({"level_cm": 182.5 + (i % 100) / 10, "seq": i}) + "\n"
                           for i in range(start, min(n, start + PUB_CHUNK)))
            subprocess.run([pub, "-p", str(self.broker.port), "-q", "1", "-t", topic, "-l"],
                           input=body.encode(), check=True, timeout=120)

    def throughput(self, kind: str, n: int) -> tuple[float, float]:
        db, folder = self._next(kind)
        system = (self.bridge(db, folder) if kind == "bridge" else
                  self.gateway(db, folder, profile=self.profile,
                               protocol="3.1.1" if kind == "gateway-3.1.1" else "5"))
        system.start()
        try:
            assert system.proc is not None
            t0 = time.monotonic()
            self.publish_lines(n)
            t1 = wait_count(self.influx, db, n, timeout=300)
            rss = vm_hwm_mb(system.proc.pid)
        finally:
            system.stop()
        return n / (t1 - t0), rss

    def latency(self, kind: str, rate: float, seconds: float,
                flush_interval_s: float = 1.0) -> tuple[float, float]:
        db, folder = self._next(kind)
        system = (self.gateway(db, folder, flush_interval_s=flush_interval_s)
                  if kind == "gateway" else self.bridge(db, folder))
        system.start()
        n = int(rate * seconds)
        sent: list[float] = [0.0] * n
        seen: list[float | None] = [None] * n
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                top = count(self.influx, db, 'max("seq")') if count(self.influx, db) else -1
                now = time.monotonic()
                for i in range(max(0, top + 1)):
                    if seen[i] is None:
                        seen[i] = now
                time.sleep(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lat-{db}")
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            poller.start()
            start = time.monotonic()
            topic = f"garden/{SITE}/polder-1/telemetry"
            for i in range(n):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent[i] = time.monotonic()
                client.publish(topic, json.dumps({"level_cm": 1.0, "seq": i}), qos=1)
            wait_count(self.influx, db, n, timeout=60)
            deadline = time.monotonic() + 5
            while any(s is None for s in seen) and time.monotonic() < deadline:
                time.sleep(POLL_S)
        finally:
            done.set()
            poller.join(timeout=5)
            client.disconnect()
            client.loop_stop()
            system.stop()
        lat = sorted((s - p) * 1000 for s, p in zip(seen, sent, strict=True) if s is not None)
        return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]

    def replay(self, n: int) -> float:
        db, folder = self._next("replay")
        spool = SpoolDB(folder / "data" / "spool.sqlite3", max_bytes=2**31)
        t0_ns = time.time_ns() - n * 1000
        lines = [f"polder,device=polder-1,gateway=gw-bench,site={SITE} "
                 f"level_cm={182.5 + (i % 100) / 10},seq={i}i {t0_ns + i * 1000}"
                 for i in range(n)]
        for start in range(0, n, 50_000):
            spool.append(lines[start:start + 50_000])
        spool.close()
        system = self.gateway(db, folder)
        started = time.monotonic()
        system.start()
        try:
            t1 = wait_count(self.influx, db, n, timeout=300)
        finally:
            system.stop()
        return n / (t1 - started)


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{platform.machine()}, {os.cpu_count()} cores ({model}), "
            f"Python {platform.python_version()}")


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


@contextmanager
def servers(workdir: Path) -> Iterator[tuple[PrivateMosquitto, PrivateInfluxDB]]:
    # MQTT 3.1.1 clients get Mosquitto's max_inflight_messages (20 by default) as their window;
    # MQTT 5 clients ask for theirs (receive_maximum). Raised here as a park's broker should be.
    conf = "max_inflight_messages 4000"
    with PrivateMosquitto(workdir / "mosquitto", extra_conf=conf) as broker, \
            PrivateInfluxDB(workdir / "influx") as influx:
        yield broker, influx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-rate", type=float, default=500.0)
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    ap.add_argument("--replay", type=int, default=200_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", action="store_true",
                    help="profile one gateway throughput run with pyinstrument")
    args = ap.parse_args()

    gw, gw3, ref = Figures(), Figures(), Figures()
    lat_fast: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory(prefix="garden-bench-") as tmp, \
            servers(Path(tmp)) as (broker, influx):
        bench = Bench(Path(tmp), broker, influx, profile=False)
        for run in range(args.runs):
            for kind, figs in (("bridge", ref), ("gateway", gw), ("gateway-3.1.1", gw3)):
                rate, rss = bench.throughput(kind, args.messages)
                figs.throughput.append(rate)
                figs.rss_mb.append(rss)
                print(f"  run {run + 1} {kind:14s} {rate:8,.0f} readings/s  "
                      f"peak RSS {rss:5.1f} MB", flush=True)
        ref.p50_ms, ref.p99_ms = bench.latency("bridge", args.latency_rate,
                                               args.latency_seconds)
        gw.p50_ms, gw.p99_ms = bench.latency("gateway", args.latency_rate,
                                             args.latency_seconds)
        lat_fast = bench.latency("gateway", args.latency_rate, args.latency_seconds,
                                 flush_interval_s=0.1)
        for _ in range(max(1, args.runs - 1)):
            gw.replay.append(bench.replay(args.replay))
            print(f"  replay {gw.replay[-1]:,.0f} points/s", flush=True)
        if args.profile:
            (ROOT / "bench" / "results").mkdir(exist_ok=True)
            bench.profile = True
            bench.throughput("gateway-3.1.1", args.messages)

    ratio = statistics.median(gw.throughput) / statistics.median(ref.throughput)
    ratio3 = statistics.median(gw3.throughput) / statistics.median(ref.throughput)
    rss = max(gw.rss_mb + gw3.rss_mb)
    replay = statistics.median(gw.replay)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = [
        ("end-to-end throughput, readings/s (MQTT 5, the default)", spread(gw.throughput),
         spread(ref.throughput)),
        ("ratio gateway / bridge (MQTT 5)", f"{ratio:.2f}", "1.00"),
        ("end-to-end throughput, readings/s (MQTT 3.1.1)", spread(gw3.throughput),
         spread(ref.throughput)),
        ("ratio gateway / bridge (MQTT 3.1.1, as the bridge)", f"{ratio3:.2f}", "1.00"),
        (f"latency p50 / p99 at {args.latency_rate:.0f} msg/s, ms (flush 1 s)",
         f"{gw.p50_ms:.0f} / {gw.p99_ms:.0f}", f"{ref.p50_ms:.0f} / {ref.p99_ms:.0f}"),
        (f"latency p50 / p99 at {args.latency_rate:.0f} msg/s, ms (flush 0.1 s)",
         f"{lat_fast[0]:.0f} / {lat_fast[1]:.0f}", "-"),
        ("peak RSS, MB (max over runs)", f"{rss:.1f}", f"{max(ref.rss_mb):.1f}"),
        (f"replay of {args.replay:,} spooled points, points/s", spread(gw.replay), "-"),
    ]
    print(f"\nGarden Gateway benchmark, {when}; {machine()}")
    print(f"{args.messages:,} messages per throughput run, {args.runs} runs, medians "
          "(min-max)\n")
    print(f"| {'figure':58s} | {'gateway':24s} | {'minimal bridge':24s} |")
    print(f"| {'-' * 58} | {'-' * 24} | {'-' * 24} |")
    for name, a, b in rows:
        print(f"| {name:58s} | {a:24s} | {b:24s} |")
    targets = [
        ("throughput ratio >= 1.0 (MQTT 5)", ratio >= 1.0, f"{ratio:.2f}"),
        ("throughput ratio >= 1.0 (MQTT 3.1.1)", ratio3 >= 1.0, f"{ratio3:.2f}"),
        ("replay >= 50,000 points/s", replay >= 50_000, f"{replay:,.0f}"),
        ("peak RSS < 80 MB", rss < 80, f"{rss:.1f} MB"),
    ]
    print()
    for name, ok, got in targets:
        print(f"target {name}: {'PASS' if ok else 'MISS'} ({got})")
    if args.json:
        args.json.write_text(json.dumps({
            "when": when, "machine": machine(), "messages": args.messages, "runs": args.runs,
            "gateway": gw.__dict__, "gateway_mqtt311": gw3.__dict__, "bridge": ref.__dict__,
            "ratio": ratio, "ratio_mqtt311": ratio3,
            "latency_flush_0_1": lat_fast,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
