"""End-to-end benchmark: the durable gateway against Node-RED and a minimal bridge, one workload.

    ./dev bench                      # or: .venv/bin/python bench/gateway_bench.py --runs 3

One private Mosquitto and one private InfluxDB 1.6.7 (gateway/testing/stack.py) serve every run;
each run gets its own database and a fresh data folder. Figures are medians over ``--runs`` with
min-max beside them. Broker, InfluxDB, publisher and the system under test share this machine's
cores, as they do on a Raspberry Pi. The systems, each run in turn within every round:

- the gateway, MQTT 5 and MQTT 3.1.1 (``mqtt.protocol``), with its guarantee on: a message is
  acknowledged only once committed to the spool;
- Node-RED 4.1 with node-red-contrib-influxdb, wired the batched way (bench/nodered/, installed
  once by bench/nodered_peer.py); it acknowledges on receipt. Skipped, saying so, without node;
- bench/minimal_bridge.py: paho → JSON → line protocol → /write, no spool, acks on receipt.

What is measured:
- throughput: N native telemetry messages (no "ts": the receiver stamps the receive time)
  published at QoS 1 with ``mosquitto_pub -l`` in runs of at most 10,000 lines; readings/s from
  the first publish to the last point visible in InfluxDB (polled every 20 ms).
- CPU-s per 100k: utime + stime of the process under test (/proc/<pid>/stat, all its threads)
  from just before the first publish to the last point visible, scaled to 100,000 readings.
- peak RSS: VmHWM after the throughput run; idle RSS: VmRSS once started and settled (the
  gateway after serving ``/`` and ``/api/v1/status`` once), before the load.
- load generator ceiling: the same publisher into the same broker with ``mosquitto_sub -q 1``
  (C, output to /dev/null) as the only consumer: what the workload can deliver at all.
- responsiveness: one more gateway run (MQTT 5) with ``/health`` fetched every 20 ms from a
  thread, p50/p99 of its answer time; not in the CPU figures, as the polling costs the gateway
  CPU the peers do not pay. ``garden_gateway_watchdog_skips_total`` is read after every run.
- latency: a paced paho publisher at ``--latency-rate`` msg/s; InfluxDB's ``max(seq)`` polled
  every 20 ms (the resolution); the gateway's ``flush_interval_s`` dominates, shown in the label.
- replay: a spool pre-filled with ``--replay`` lines is sent to InfluxDB by a starting gateway;
  points/s from process start to the last point visible.
- park load: ``--park-rate`` msg/s for ``--park-seconds`` from a paced paho publisher; the
  gateway's CPU-s over the window / the window, in % of one core.
- floor: VmRSS of a bare interpreter that sleeps, and of one that imported fastapi, pydantic
  and uvicorn (what any Python web service starts from).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nodered_peer  # noqa: E402 - bench/ is on the path as the script's folder

from gateway.store.spool import SpoolDB  # noqa: E402 - after the path is set for a bare checkout
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, find_executable, free_port  # noqa: E402

SITE = "taman-bench"
TOPIC = f"garden/{SITE}/polder-1/telemetry"
BENCH_TOKEN = "bench-operator-token-0123456789"  # noqa: S105 - a private test gateway
PUB_CHUNK = 10_000
POLL_S = 0.02
HEALTH_EVERY_S = 0.02
SETTLE_S = 2.0
KINDS = ("gateway-before", "gateway", "gateway-3.1.1", "node-red", "bridge")
TITLES = {"gateway-before": "gateway before (MQTT 5)", "gateway": "gateway (MQTT 5)",
          "gateway-3.1.1": "gateway (MQTT 3.1.1)", "node-red": "Node-RED 4.1",
          "bridge": "minimal bridge"}


@dataclass
class Run:
    rate: float
    cpu_100k: float
    peak_mb: float
    idle_mb: float
    start_s: float
    watchdog_skips: int | None = None


@dataclass
class Extra:
    """The figures that are not one per system and run."""

    ceiling: list[float] = field(default_factory=list)
    publisher_only: list[float] = field(default_factory=list)
    replay: list[float] = field(default_factory=list)
    watchdog_skips: list[int | None] = field(default_factory=list)
    health_rate: float = float("nan")
    health_ms: list[float] = field(default_factory=list)
    latency_bridge: str = "-"
    latency_gateway: str = "-"
    latency_gateway_fast: str = "-"
    park_pct: float = float("nan")
    floor_mb: float = float("nan")
    floor_web_mb: float = float("nan")
    # The machine's 1-min load average before each throughput run: other work on the same
    # cores shows here (the systems run in turn, so it weighs on all of them, unevenly).
    load_1min: list[float] = field(default_factory=list)
    when: str = ""


@dataclass
class Figures:
    runs: list[Run] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None

    def of(self, name: str) -> list[float]:
        return [float(getattr(r, name)) for r in self.runs]

    def median(self, name: str) -> float | None:
        values = self.of(name)
        return statistics.median(values) if values else None


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


def proc_mb(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (/proc/<pid>/stat)."""
    # The command name (field 2) may hold spaces: the fields that follow start after its ")".
    after = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after[11]) + int(after[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class System:
    """A system under test: the gateway, Node-RED or the reference bridge, as a child process."""

    def __init__(self, name: str, argv: list[str], log: Path,
                 ready: Callable[[subprocess.Popen[bytes]], bool], *,
                 env: dict[str, str] | None = None, api: int | None = None,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.ready = ready
        self.env = env
        self.api = api
        # The checkout whose code runs: `python -m gateway` imports it from the working folder.
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.start_s = float("nan")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            self.started = time.monotonic()
            # A session of its own: a stop signal reaches the profiler and the gateway alike.
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.cwd, start_new_session=True, env=self.env)
        deadline = time.monotonic() + timeout
        while not self.ready(self.proc):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log}")
            time.sleep(0.02)
        self.start_s = time.monotonic() - self.started

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.api}{path}", timeout=5,
                         headers={"Authorization": f"Bearer {BENCH_TOKEN}"})

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT: the gateway stops as on SIGTERM, and py-spy writes its profile.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class HealthPoller:
    """Fetches the gateway's ``/health`` every 20 ms from a thread; answer times in ms."""

    def __init__(self, api: int) -> None:
        self.url = f"http://127.0.0.1:{api}/health"
        self.ms: list[float] = []
        self.failed = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-poller", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._done.is_set():
                t = time.perf_counter()
                try:
                    client.get(self.url).raise_for_status()
                except httpx.HTTPError:
                    self.failed += 1
                elapsed = time.perf_counter() - t
                self.ms.append(elapsed * 1000)
                self._done.wait(max(0.0, HEALTH_EVERY_S - elapsed))

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def watchdog_skips(system: System) -> int | None:
    try:
        text = system.get("/metrics").raise_for_status().text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("garden_gateway_watchdog_skips_total"):
            return int(float(line.split()[-1]))
    return None


class Bench:
    def __init__(self, workdir: Path, broker: PrivateMosquitto, influx: PrivateInfluxDB,
                 profile: bool, red: Path | None, before: Path | None = None) -> None:
        self.workdir = workdir
        self.broker = broker
        self.influx = influx
        self.profile = profile
        self.red = red
        self.before = before
        self.serial = 0

    def forget(self, client_id: str) -> None:
        """End a persistent session left by a run: connecting with a clean session discards it.

        Otherwise it keeps its subscription, and the broker queues every later run's readings
        for a client that never returns (unbounded here): the broker slows down run by run."""
        sub = find_executable("mosquitto_sub")
        subprocess.run([sub, "-p", str(self.broker.port), "-i", client_id, "-t",
                        f"garden/{SITE}/forget", "-E"], check=True, timeout=10)

    def _next(self, kind: str) -> tuple[str, Path]:
        self.serial += 1
        name = f"{kind.replace('-', '_').replace('.', '')}{self.serial}"
        folder = self.workdir / name
        folder.mkdir()
        self.influx.create_database(name)
        return name, folder

    def gateway(self, db: str, folder: Path, *, flush_interval_s: float = 1.0,
                profile: bool = False, protocol: str = "5", cwd: Path = ROOT) -> System:
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

        return System("gateway", argv, folder / "gateway.log", ready, api=api, cwd=cwd)

    def bridge(self, db: str, folder: Path) -> System:
        argv = [sys.executable, str(ROOT / "bench" / "minimal_bridge.py"),
                "--mqtt-port", str(self.broker.port), "--influx-url", self.influx.url,
                "--db", db, "--topic", f"garden/{SITE}/+/telemetry"]
        log = folder / "bridge.log"

        def ready(_: subprocess.Popen[bytes]) -> bool:
            return log.exists() and "ready" in log.read_text()

        return System("bridge", argv, log, ready)

    def nodered(self, db: str, folder: Path) -> System:
        assert self.red is not None
        argv, env = nodered_peer.prepare(folder, self.red, mqtt_port=self.broker.port,
                                         influx_port=self.influx.port, database=db, site=SITE,
                                         ui_port=free_port())
        log = folder / "node-red.log"

        def ready(_: subprocess.Popen[bytes]) -> bool:
            return log.exists() and "Connected to broker" in log.read_text()

        return System("node-red", argv, log, ready, env=env)

    def system(self, kind: str, db: str, folder: Path) -> System:
        if kind == "bridge":
            return self.bridge(db, folder)
        if kind == "node-red":
            return self.nodered(db, folder)
        if kind == "gateway-before":
            assert self.before is not None
            return self.gateway(db, folder, cwd=self.before)
        return self.gateway(db, folder, profile=self.profile,
                            protocol="3.1.1" if kind == "gateway-3.1.1" else "5")

    def probe(self, db: str, timeout: float = 30) -> int:
        """Publish probe readings until one is in InfluxDB: the subscription is in place.

        "Connected to broker" comes before Node-RED's SUBSCRIBE is acknowledged; messages
        published in between would be lost. Returns the count the run's readings add to."""
        pub = find_executable("mosquitto_pub")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            subprocess.run([pub, "-p", str(self.broker.port), "-q", "1", "-t",
                            f"garden/{SITE}/probe/telemetry", "-m",
                            '{"level_cm": 0.0, "seq": -1}'], check=True, timeout=10)
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                if count(self.influx, db) > 0:
                    time.sleep(0.5)  # a second probe may still be on its way
                    return count(self.influx, db)
                time.sleep(POLL_S)
        raise TimeoutError(f"no probe reading reached {db} in {timeout}s")

    @staticmethod
    def bodies(n: int) -> list[bytes]:
        """The publisher's input, built before the clock starts."""
        return ["".join(json.dumps({"level_cm": 182.5 + (i % 100) / 10, "seq": i}) + "\n"
                        for i in range(start, min(n, start + PUB_CHUNK))).encode()
                for start in range(0, n, PUB_CHUNK)]

    def publish(self, bodies: list[bytes]) -> None:
        pub = find_executable("mosquitto_pub")
        for body in bodies:
            subprocess.run([pub, "-p", str(self.broker.port), "-q", "1", "-t", TOPIC, "-l"],
                           input=body, check=True, timeout=120)

    def idle(self, system: System) -> float:
        """VmRSS once settled; the gateway's after it served its resident page and status."""
        time.sleep(SETTLE_S)
        if system.api is not None:
            system.get("/").raise_for_status()
            system.get("/api/v1/status").raise_for_status()
            time.sleep(0.5)
        return proc_mb(system.pid, "VmRSS")

    def throughput(self, kind: str, n: int, *, health: bool = False) -> tuple[Run, list[float]]:
        db, folder = self._next(kind)
        system = self.system(kind, db, folder)
        bodies = self.bodies(n)
        system.start()
        answer_ms: list[float] = []
        try:
            idle = self.idle(system)
            base = self.probe(db) if kind == "node-red" else 0
            poller = HealthPoller(system.api) if health and system.api else None
            if poller is not None:
                poller.__enter__()
            try:
                cpu0, t0 = cpu_s(system.pid), time.monotonic()
                self.publish(bodies)
                t1 = wait_count(self.influx, db, base + n, timeout=240)
                cpu1 = cpu_s(system.pid)
            finally:
                if poller is not None:
                    poller.__exit__()
                    answer_ms = poller.ms
            peak = proc_mb(system.pid, "VmHWM")
            skips = watchdog_skips(system) if system.api is not None else None
        finally:
            system.stop()
            if kind != "bridge":
                self.forget(f"gw-bench-{db}" if system.api else f"node-red-{db}")
        run = Run(rate=n / (t1 - t0), cpu_100k=(cpu1 - cpu0) * 100_000 / n, peak_mb=peak,
                  idle_mb=idle, start_s=system.start_s, watchdog_skips=skips)
        return run, answer_ms

    def ceiling(self, n: int) -> tuple[float, float]:
        """The load generator alone: readings/s into a C subscriber, and the publisher's own.

        ``mosquitto_sub -E`` first makes a persistent session with the subscription in place,
        so the counting subscriber (``-C n``) misses nothing when it resumes it."""
        sub = find_executable("mosquitto_sub")
        self.serial += 1
        common = [sub, "-p", str(self.broker.port), "-q", "1", "-c",
                  "-i", f"ceiling{self.serial}", "-t", f"garden/{SITE}/+/telemetry"]
        subprocess.run([*common, "-E"], check=True, timeout=10)
        bodies = self.bodies(n)
        consumer = subprocess.Popen([*common, "-C", str(n)], stdout=subprocess.DEVNULL)
        try:
            t0 = time.monotonic()
            self.publish(bodies)
            published = time.monotonic()
            consumer.wait(timeout=120)
            t1 = time.monotonic()
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
            self.forget(f"ceiling{self.serial}")
        return n / (t1 - t0), n / (published - t0)

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
            for i in range(n):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent[i] = time.monotonic()
                client.publish(TOPIC, json.dumps({"level_cm": 1.0, "seq": i}), qos=1)
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
            if kind == "gateway":
                self.forget(f"gw-bench-{db}")
        lat = [(s - p) * 1000 for s, p in zip(seen, sent, strict=True) if s is not None]
        return pct(lat, 0.5), pct(lat, 0.99)

    def park(self, rate: float, seconds: float) -> float:
        """% of one core the gateway spends at a park's load (a paced publisher)."""
        db, folder = self._next("park")
        system = self.gateway(db, folder)
        system.start()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"park-{db}")
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            self.idle(system)
            n = int(rate * seconds)
            cpu0, t0 = cpu_s(system.pid), time.monotonic()
            for i in range(n):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                client.publish(TOPIC, json.dumps({"level_cm": 182.5, "seq": i}), qos=1)
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))
            cpu1, t1 = cpu_s(system.pid), time.monotonic()
            wait_count(self.influx, db, n, timeout=30)
        finally:
            client.disconnect()
            client.loop_stop()
            system.stop()
            self.forget(f"gw-bench-{db}")
        return 100 * (cpu1 - cpu0) / (t1 - t0)

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
            self.forget(f"gw-bench-{db}")
        return n / (t1 - started)


def floor_mb() -> tuple[float, float]:
    """VmRSS of a bare interpreter, and of one with the web stack imported, both asleep."""
    out = []
    for imports in ("", "import fastapi, pydantic, uvicorn; "):
        code = f"{imports}import time; print('ready', flush=True); time.sleep(30)"
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as proc:
            try:
                assert proc.stdout is not None
                proc.stdout.readline()
                time.sleep(0.5)
                out.append(proc_mb(proc.pid, "VmRSS"))
            finally:
                proc.kill()
    return out[0], out[1]


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{platform.machine()}, {os.cpu_count()} cores ({model}), "
            f"Python {platform.python_version()}")


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    return (f"{statistics.median(values):,.{digits}f} "
            f"({min(values):,.{digits}f}-{max(values):,.{digits}f})")


@contextmanager
def servers(workdir: Path) -> Iterator[tuple[PrivateMosquitto, PrivateInfluxDB]]:
    # MQTT 3.1.1 clients get Mosquitto's max_inflight_messages (20 by default) as their window;
    # MQTT 5 clients ask for theirs (receive_maximum). Raised here as a park's broker should be.
    # Beyond the window Mosquitto queues at most max_queued_messages (1,000) per client and
    # drops the rest: a 100k burst outruns every consumer here, so the queue is unbounded.
    conf = "max_inflight_messages 4000\nmax_queued_messages 0"
    with PrivateMosquitto(workdir / "mosquitto", extra_conf=conf) as broker, \
            PrivateInfluxDB(workdir / "influx") as influx:
        yield broker, influx


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "MISS")


def report(args: argparse.Namespace, figs: dict[str, Figures], extra: Extra,
           red_note: str | None) -> list[str]:
    """The markdown: one table of the systems side by side, the other figures, the targets."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    extra.when = when
    cols = [k for k in KINDS if figs[k].runs or k == "node-red"]

    def row(name: str, cells: list[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    def cells(attr: str, digits: int = 0) -> list[str]:
        return [spread(figs[k].of(attr), digits) if figs[k].runs else "skipped" for k in cols]

    lines = [f"Garden Gateway benchmark, {when}; {machine()}",
             f"{args.messages:,} QoS 1 readings per throughput run (mosquitto_pub -l), "
             f"{args.runs} runs, medians (min-max); 1-min load average before a run "
             f"{spread(extra.load_1min, 1)}", ""]
    if red_note:
        lines += [f"Node-RED: {red_note}", ""]
    if args.before is not None:
        commit = subprocess.run([find_executable("git"), "-C", str(args.before), "log", "-1",
                                 "--format=%h %cs"],
                                capture_output=True, text=True, check=False).stdout.strip()
        lines += [f"gateway before: commit {commit or args.before}, same machine, same run", ""]
    lines += [row("figure", [TITLES[k] for k in cols]), row("---", ["---"] * len(cols)),
              row("CPU-s per 100k readings", cells("cpu_100k", 2)),
              row("readings/s end to end", cells("rate")),
              row("peak RSS, MB (VmHWM)", cells("peak_mb", 1)),
              row("idle RSS, MB", cells("idle_mb", 1)),
              row("start to ready, s", cells("start_s", 1)),
              row("acknowledges a message", ["after the spool commit"
                                             if k.startswith("gateway") else "on receipt"
                                             for k in cols])]
    ceil = extra.ceiling
    health = extra.health_ms or [float("nan")]
    gw, gw3, red = figs["gateway"], figs["gateway-3.1.1"], figs["node-red"]
    floor, floor_web = extra.floor_mb, extra.floor_web_mb
    idle_max = max(gw.of("idle_mb") + gw3.of("idle_mb"))
    peak_max = max(gw.of("peak_mb") + gw3.of("peak_mb"))
    replay = statistics.median(extra.replay)
    park = extra.park_pct
    lines += [
        "",
        f"- load generator ceiling (same publisher, `mosquitto_sub -q 1` consumer): "
        f"{spread(ceil)} readings/s; the publisher alone finishes at "
        f"{spread(extra.publisher_only)}/s",
        f"- gateway `/health` every 20 ms during a {args.messages:,} burst (MQTT 5, an extra "
        f"run at {extra.health_rate:,.0f} readings/s): {len(health)} answers, p50 "
        f"{gw.p50_ms:.1f} ms, p90 {pct(health, 0.9):.1f} ms, p99 {gw.p99_ms:.1f} ms, max "
        f"{max(health):.1f} ms, {sum(ms > 500 for ms in health)} over 500 ms; watchdog skips "
        f"after every gateway run: {extra.watchdog_skips}",
        f"- latency p50 / p99 at {args.latency_rate:.0f} msg/s, ms: gateway "
        f"{extra.latency_gateway} (flush 1 s), {extra.latency_gateway_fast} (flush 0.1 s);"
        f" minimal bridge {extra.latency_bridge}",
        f"- replay of {args.replay:,} spooled points: {spread(extra.replay)} points/s",
        f"- park load ({args.park_rate:g} msg/s for {args.park_seconds:g} s): gateway "
        f"{park:.2f} % of one core",
        f"- RSS floor: bare interpreter {floor:.1f} MB, with fastapi + pydantic + uvicorn "
        f"imported {floor_web:.1f} MB; the gateway idles {idle_max - floor_web:+.1f} MB and "
        f"peaks {peak_max - floor_web:+.1f} MB above the second",
        "",
    ]
    red_cpu, red_rate = red.median("cpu_100k"), red.median("rate")
    targets: list[tuple[str, bool | None, str]] = []
    for label, f in (("MQTT 5", gw), ("MQTT 3.1.1", gw3)):
        cpu, rate = f.median("cpu_100k"), f.median("rate")
        assert cpu is not None
        assert rate is not None
        if red_cpu is None or red_rate is None:
            targets += [(f"CPU-s per 100k <= Node-RED's ({label})", None, f"{cpu:.2f}"),
                        (f"throughput >= Node-RED's ({label})", None, f"{rate:,.0f}")]
            continue
        targets += [
            (f"CPU-s per 100k <= Node-RED's ({label})", cpu <= red_cpu,
             f"{cpu:.2f} vs {red_cpu:.2f}, ratio {cpu / red_cpu:.2f}"),
            (f"CPU-s per 100k <= Node-RED's / 1.5, the aim ({label})", cpu <= red_cpu / 1.5,
             f"{cpu:.2f} vs {red_cpu / 1.5:.2f}"),
            (f"throughput >= Node-RED's ({label})", rate >= red_rate,
             f"{rate:,.0f} vs {red_rate:,.0f}, ratio {rate / red_rate:.2f}; "
             f"ceiling {statistics.median(ceil):,.0f}"),
        ]
    skips = extra.watchdog_skips
    targets += [
        ("peak RSS <= 60 MB under load", peak_max <= 60, f"{peak_max:.1f} MB, max over runs"),
        ("idle RSS <= 55 MB, pages and API served", idle_max <= 55,
         f"{idle_max:.1f} MB, max over runs"),
        ("replay >= 150,000 points/s", replay >= 150_000, f"{replay:,.0f}"),
        ("park load < 0.5 % of one core", park < 0.5, f"{park:.2f} %"),
        ("/health p99 < 100 ms during the burst", (gw.p99_ms or 1e9) < 100,
         f"{gw.p99_ms:.1f} ms"),
        ("watchdog skips = 0", all(s == 0 for s in skips), f"{skips}"),
    ]
    lines += [f"- target {name}: **{verdict(ok)}** ({got})" for name, ok, got in targets]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-rate", type=float, default=500.0)
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    ap.add_argument("--replay", type=int, default=200_000)
    ap.add_argument("--park-rate", type=float, default=5.0)
    ap.add_argument("--park-seconds", type=float, default=30.0)
    ap.add_argument("--no-node-red", action="store_true", help="skip the Node-RED column")
    ap.add_argument("--before", type=Path, help="a checkout of an earlier commit (git worktree "
                    "add DIR COMMIT): its gateway, MQTT 5, as a column of the same run")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "last.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "bench" / "results" / "peers.md")
    ap.add_argument("--profile", action="store_true",
                    help="profile one more gateway throughput run with py-spy")
    args = ap.parse_args()

    red: Path | None = None
    red_note: str | None = "skipped (--no-node-red)" if args.no_node_red else None
    if not args.no_node_red:
        try:
            red = nodered_peer.install()
        except nodered_peer.Unavailable as exc:
            red_note = str(exc)
            print(f"  Node-RED: {red_note}", flush=True)
    kinds = [k for k in KINDS if (k != "node-red" or red is not None)
             and (k != "gateway-before" or args.before is not None)]
    figs = {k: Figures() for k in KINDS}
    extra = Extra()
    skips = extra.watchdog_skips
    with tempfile.TemporaryDirectory(prefix="garden-bench-") as tmp, \
            servers(Path(tmp)) as (broker, influx):
        bench = Bench(Path(tmp), broker, influx, profile=False, red=red, before=args.before)
        for run in range(args.runs):
            ceil, pub_only = bench.ceiling(args.messages)
            extra.ceiling.append(ceil)
            extra.publisher_only.append(pub_only)
            print(f"  run {run + 1} load generator {ceil:8,.0f} readings/s "
                  f"(publisher alone {pub_only:,.0f}/s)", flush=True)
            for kind in kinds:
                extra.load_1min.append(os.getloadavg()[0])
                result, _ = bench.throughput(kind, args.messages)
                figs[kind].runs.append(result)
                if result.watchdog_skips is not None or kind.startswith("gateway"):
                    skips.append(result.watchdog_skips)
                print(f"  run {run + 1} {kind:14s} {result.rate:8,.0f} readings/s  "
                      f"{result.cpu_100k:5.2f} CPU-s/100k  peak RSS {result.peak_mb:5.1f} MB  "
                      f"idle {result.idle_mb:5.1f} MB", flush=True)
        result, answer_ms = bench.throughput("gateway", args.messages, health=True)
        skips.append(result.watchdog_skips)
        gw = figs["gateway"]
        gw.p50_ms, gw.p99_ms = pct(answer_ms, 0.5), pct(answer_ms, 0.99)
        extra.health_rate = result.rate
        extra.health_ms = answer_ms
        print(f"  /health during a burst: p50 {gw.p50_ms:.1f} ms p99 {gw.p99_ms:.1f} ms "
              f"({len(answer_ms)} answers, {result.rate:,.0f} readings/s)", flush=True)
        extra.latency_bridge = "{:.0f} / {:.0f}".format(
            *bench.latency("bridge", args.latency_rate, args.latency_seconds))
        extra.latency_gateway = "{:.0f} / {:.0f}".format(
            *bench.latency("gateway", args.latency_rate, args.latency_seconds))
        extra.latency_gateway_fast = "{:.0f} / {:.0f}".format(
            *bench.latency("gateway", args.latency_rate, args.latency_seconds,
                           flush_interval_s=0.1))
        for _ in range(max(1, args.runs - 1)):
            extra.replay.append(bench.replay(args.replay))
            print(f"  replay {extra.replay[-1]:,.0f} points/s", flush=True)
        extra.park_pct = bench.park(args.park_rate, args.park_seconds)
        print(f"  park load {extra.park_pct:.2f} % of one core", flush=True)
        extra.floor_mb, extra.floor_web_mb = floor_mb()
        if args.profile:
            (ROOT / "bench" / "results").mkdir(exist_ok=True)
            bench.profile = True
            bench.throughput("gateway", args.messages)

    lines = report(args, figs, extra, red_note)
    print("\n" + "\n".join(lines))
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("# Gateway against its peers\n\nWritten by "
                             "`bench/gateway_bench.py` (`./dev bench`).\n\n"
                             + "\n".join(lines) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": machine(), "messages": args.messages, "runs": args.runs,
        "node_red": red_note or "ran",
        **{k: {"runs": [asdict(r) for r in f.runs], "health_p50_ms": f.p50_ms,
               "health_p99_ms": f.p99_ms} for k, f in figs.items()},
        **asdict(extra),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
