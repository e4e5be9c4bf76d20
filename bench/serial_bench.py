"""CPU cost of a serial source: one core's share the gateway spends on a sensor printing lines.

    ./dev bench serial               # or: .venv/bin/python bench/serial_bench.py --runs 3

The target (from the issue): a serial source at 50 lines/s costs under 2% of one core.

One private Mosquitto and one private InfluxDB 1.6.7 (gateway/testing/stack.py) serve every run;
each run starts ``python -m gateway run`` as systemd would, with its own database, data_dir and
a ``serial:`` source on a pseudo-terminal (raw mode, behind a symlink as /dev/serial/by-id/...
would be). This process keeps the master end and writes to it, as an Arduino on USB would.

- lines: kv with an NMEA checksum, about 62 bytes, values varying from line to line::

      $soil_pct=41.2 temp_c=29.8 hum_pct=83 rain_mm=12.4 seq=17*5C

  written on a deadline schedule (line i at t0 + i/rate, monotonic clock; a late line is
  written at once and the schedule does not drift); the worst lateness is reported.
- CPU: utime + stime of the gateway process (all its threads) from /proc/<pid>/stat, read at
  the start and the end of a window; cpu seconds / wall seconds is the fraction of one core.
  The kernel reports ticks of 1/SC_CLK_TCK s (10 ms): +-0.05% of a core over 20 s. Their sum
  follows the scheduler's runtime (within a few per cent of /proc/<pid>/task/*/schedstat); the
  split between user and kernel is sampled, so it is kept in the JSON but not shown.
- each run, in one gateway process: start, wait for MQTT and the port (the status API is not
  polled after that, so it costs nothing in the windows), warm up (lines at ``--rate`` for
  2 s, until InfluxDB has them all), then three windows:
  idle (no lines: MQTT keepalive, the forwarder's idle wait, housekeeping) for ``--seconds``;
  busy at ``--rate`` for ``--seconds``; busy at ``--scale-rate`` for half as long. A busy
  window follows a 1 s lead-in at its rate, so it opens in steady state: work deferred out of
  the window (the spool commit, the 1 s InfluxDB flush) is matched by work deferred into it.
- reference, in the same run: a second gateway configured as before readings without an
  acknowledgement got their own commit interval (``spool.unacked_commit_interval_s: 0.05``,
  a commit every 50 ms as for MQTT QoS 1), warmed up the same way, one busy window at
  ``--rate``; its cost is taken against the first gateway's idle window.
- serial cost = busy - idle, in % of one core; CPU per line = that cost in CPU seconds over
  the lines written in the window. Figures are medians over ``--runs`` with min-max beside.
- correctness: at the end every line written in the run (warm-up, lead-ins, windows) must be
  in InfluxDB (``count("seq")``) and the gateway's serial statistics must show no error.

A pseudo-terminal delivers each write whole and ignores the baud rate: the 115200 baud in
the config carries 50 lines/s of this size (3 kB/s) but not 500 (31 kB/s), so the second rate
shows how the cost scales, not a wire a real adapter could carry. Mosquitto, InfluxDB and this
writer share the machine's cores with the gateway, as they do on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, StackError, free_port  # noqa: E402

SITE = "taman-bench"
BENCH_TOKEN = "bench-operator-token-0123456789"  # noqa: S105 - a private test gateway
SOURCE = "kebun"
DEVICE = "kebun-1"
MEASUREMENT = "garden_env"
TARGET_PCT = 2.0
WARMUP_S = 2.0
LEAD_IN_S = 1.0
POLL_S = 0.05
# The reference gateway commits serial lines as often as MQTT QoS 1 messages (the old default).
REFERENCE_COMMIT_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of every thread of ``pid``, living or exited, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields are counted after the last ')'.
    after = stat[stat.rindex(")") + 2:].split()
    return int(after[11]) / CLK_TCK, int(after[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def nmea(body: str) -> bytes:
    checksum = 0
    for b in body.encode():
        checksum ^= b
    return f"${body}*{checksum:02X}\r\n".encode()


def sensor_line(seq: int) -> bytes:
    """A soil and weather station's line; values wander so no two lines are alike."""
    return nmea(f"soil_pct={38 + (seq * 7) % 90 / 10:.1f} temp_c={26 + (seq * 3) % 70 / 10:.1f} "
                f"hum_pct={70 + seq % 25} rain_mm={(seq % 400) / 10:.1f} seq={seq}")


def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class FakePort:
    """A pseudo-terminal pair: the gateway opens the slave by a symlink, we write the master."""

    def __init__(self, link: Path) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        name = os.ttyname(slave)
        # The gateway opens the path itself; our copy of the slave end is not needed.
        os.close(slave)
        self.master: int | None = master
        self.link = link
        link.symlink_to(name)
        self.seq = 0
        self.worst_late_s = 0.0

    def paced(self, rate: float, start: float, end: float) -> int:
        """Write lines due at start + i/rate for every such deadline before ``end``, then wait
        for ``end``. Returns how many lines were written."""
        assert self.master is not None
        written = 0
        while rate > 0:
            due = start + written / rate
            if due >= end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.worst_late_s = max(self.worst_late_s, -delay)
            os.write(self.master, sensor_line(self.seq))
            self.seq += 1
            written += 1
        sleep_until(end)
        return written

    def close(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if self.link.is_symlink():
            self.link.unlink()


class Gateway:
    """``python -m gateway run`` with one serial source, as a child in a session of its own."""

    def __init__(self, folder: Path, port: Path, broker: PrivateMosquitto,
                 influx: PrivateInfluxDB, db: str, spool: dict[str, Any] | None = None) -> None:
        self.api = f"http://127.0.0.1:{free_port()}"
        cfg = {
            "data_dir": str(folder / "data"),
            "gateway": {"id": "gw-bench", "site": SITE},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": f"gw-bench-{db}"},
            "influx": {"url": influx.url, "database": db},
            # No NTP on a bench machine or container: "auto" would hold what the gateway stamps.
            "clock": {"require_sync": "no"},
            "api": {"host": "127.0.0.1", "port": int(self.api.rsplit(":", 1)[1]),
                    "operator_token": BENCH_TOKEN},
            "log_level": "WARNING",
            "spool": spool or {},
            # A park gateway always has its MQTT subscription; here it receives nothing.
            "subscriptions": [{"topic": f"garden/{SITE}/+/telemetry", "format": "native",
                               "name": "native"}],
            "serial": [{"name": SOURCE, "port": str(port), "baudrate": 115200,
                        "max_line_bytes": 128,
                        "options": {"format": "kv", "device": DEVICE, "checksum": "nmea",
                                    "measurement": MEASUREMENT}}],
        }
        self.config = folder / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = folder / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=2, trust_env=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self._http.get(
            f"{self.api}/api/v1/status",
            headers={"Authorization": f"Bearer {BENCH_TOKEN}"}).json()
        return body

    def start(self, timeout: float = 30) -> None:
        with self.log.open("ab") as out:
            # A session of its own: a Ctrl-C reaches this script, which then stops the gateway.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status = self.status()
                if status["mqtt"]["connected"] and status["serial"][SOURCE]["open"]:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start; {self.log}:\n{self.log_tail()}")
            time.sleep(POLL_S)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        self._http.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def count(influx: PrivateInfluxDB, db: str) -> int:
    try:
        return influx.count(db, MEASUREMENT, "seq")
    except (StackError, httpx.HTTPError):
        return 0  # not created yet


def wait_count(influx: PrivateInfluxDB, db: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (got := count(influx, db)) < n and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return got


@dataclass
class Window:
    lines: int
    wall_s: float
    user_s: float
    sys_s: float

    @property
    def pct(self) -> float:
        return 100 * (self.user_s + self.sys_s) / self.wall_s

    @property
    def sys_pct(self) -> float:
        return 100 * self.sys_s / self.wall_s


def window(gw: Gateway, port: FakePort, rate: float, seconds: float) -> Window:
    """The gateway's CPU over ``seconds`` while lines arrive at ``rate`` (0: none)."""
    start = time.monotonic() + 0.01
    if rate > 0:
        port.paced(rate, start, start + LEAD_IN_S)
        start += LEAD_IN_S
    sleep_until(start)
    (user0, sys0), t0 = cpu_seconds(gw.pid), time.monotonic()
    lines = port.paced(rate, start, start + seconds)
    (user1, sys1), t1 = cpu_seconds(gw.pid), time.monotonic()
    return Window(lines, t1 - t0, user1 - user0, sys1 - sys0)


def profile(gw: Gateway, port: FakePort, rate: float, seconds: float, out: Path) -> None:
    """py-spy attached to the gateway during one more window at ``rate`` (not measured)."""
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(gw.pid),
         "--duration", f"{seconds:.0f}", "--rate", "1000", "--threads",
         "--format", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        start = time.monotonic() + 1.0  # py-spy attaches meanwhile
        port.paced(rate, start, start + seconds + 1.0)
        spy.wait(timeout=60)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait()


@dataclass
class Run:
    idle: Window
    busy: Window
    scale: Window | None
    reference: Window | None
    written: int
    delivered: int
    worst_late_ms: float
    serial: dict[str, Any] = field(default_factory=dict)

    def cost_pct(self, busy: Window) -> float:
        return busy.pct - self.idle.pct

    def per_line_us(self, busy: Window) -> float:
        return self.cost_pct(busy) / 100 * busy.wall_s / busy.lines * 1e6


def started(folder: Path, broker: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
            rate: float, spool: dict[str, Any] | None = None) -> tuple[Gateway, FakePort]:
    """A gateway on a fresh port and database, warmed up: every warm-up line delivered."""
    folder.mkdir()
    influx.create_database(db)
    port = FakePort(folder / "ttyKEBUN")
    gw = Gateway(folder, port.link, broker, influx, db, spool)
    try:
        gw.start()
        start = time.monotonic()
        port.paced(rate, start, start + WARMUP_S)
        if wait_count(influx, db, port.seq, timeout=30) < port.seq:
            raise RuntimeError(f"warm-up lines not delivered; {gw.log}:\n{gw.log_tail()}")
    except BaseException:
        gw.stop()
        port.close()
        raise
    return gw, port


def reference_window(workdir: Path, number: int, broker: PrivateMosquitto,
                     influx: PrivateInfluxDB, args: argparse.Namespace) -> tuple[Window, bool]:
    """The busy window of a gateway committing serial lines every 50 ms, as before."""
    db = f"serial{number}ref"
    gw, port = started(workdir / f"run{number}ref", broker, influx, db, args.rate,
                       {"unacked_commit_interval_s": REFERENCE_COMMIT_S})
    try:
        busy = window(gw, port, args.rate, args.seconds)
        return busy, wait_count(influx, db, port.seq, timeout=30) == port.seq
    finally:
        gw.stop()
        port.close()


def one_run(workdir: Path, number: int, broker: PrivateMosquitto, influx: PrivateInfluxDB,
            args: argparse.Namespace) -> Run:
    db = f"serial{number}"
    gw, port = started(workdir / f"run{number}", broker, influx, db, args.rate)
    try:
        idle = window(gw, port, 0, args.seconds)
        busy = window(gw, port, args.rate, args.seconds)
        scale = (window(gw, port, args.scale_rate, args.seconds / 2)
                 if args.scale_rate > 0 else None)
        if args.profile is not None and number == 1:
            profile(gw, port, args.rate, args.seconds, args.profile)
        delivered = wait_count(influx, db, port.seq, timeout=30)
        if gw.proc is not None and gw.proc.poll() is not None:
            raise RuntimeError(f"gateway exited; {gw.log}:\n{gw.log_tail()}")
        serial: dict[str, Any] = gw.status()["serial"][SOURCE]
    finally:
        gw.stop()
        port.close()
    reference = None
    if args.reference:
        reference, ref_delivered = reference_window(workdir, number, broker, influx, args)
        if not ref_delivered:
            raise RuntimeError("the reference gateway did not deliver every line")
    return Run(idle, busy, scale, reference, port.seq, delivered, port.worst_late_s * 1000,
               serial)


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{platform.machine()}, {os.cpu_count()} cores ({model}), "
            f"Python {platform.python_version()}")


def spread(values: list[float], fmt: str = ".2f") -> str:
    return (f"{statistics.median(values):{fmt}} "
            f"({min(values):{fmt}} to {max(values):{fmt}})")


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[PrivateMosquitto, PrivateInfluxDB]]:
    with PrivateMosquitto(workdir / "mosquitto") as broker, \
            PrivateInfluxDB(workdir / "influx") as influx:
        yield broker, influx


def _terminated(signum: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through every finally: the gateway and both servers are stopped.
    raise SystemExit(128 + signum)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50.0, help="lines/s (default 50)")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="length of the idle and busy windows (default 20)")
    ap.add_argument("--scale-rate", type=float, default=500.0,
                    help="a second rate, for half as long, to show scaling; 0 skips it")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the reference gateway (commits every 50 ms) in each run")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "serial.json")
    ap.add_argument("--profile", type=Path, metavar="PATH",
                    help="after the first run's windows, py-spy attached to the gateway for "
                         "--seconds more at --rate; raw stacks written to PATH")
    args = ap.parse_args()
    if args.runs < 1 or args.rate <= 0 or args.seconds <= 0 or args.scale_rate < 0:
        ap.error("--runs, --rate and --seconds must be positive, --scale-rate not negative")
    signal.signal(signal.SIGTERM, _terminated)

    runs: list[Run] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="garden-serial-bench-") as tmp, \
            servers(Path(tmp)) as (broker, influx):
        for number in range(1, args.runs + 1):
            run = one_run(Path(tmp), number, broker, influx, args)
            runs.append(run)
            scaled = (f"  {args.scale_rate:.0f}/s {run.scale.pct:5.2f}%"
                      if run.scale is not None else "")
            if run.reference is not None:
                scaled += f"  reference {args.rate:.0f}/s {run.reference.pct:5.2f}%"
            print(f"  run {number}  idle {run.idle.pct:5.2f}%  {args.rate:.0f}/s "
                  f"{run.busy.pct:5.2f}%{scaled}  delivered {run.delivered:,}/{run.written:,}",
                  flush=True)
    elapsed = time.monotonic() - began

    idle = [r.idle.pct for r in runs]
    busy = [r.busy.pct for r in runs]
    cost = [r.cost_pct(r.busy) for r in runs]
    per_line = [r.per_line_us(r.busy) for r in runs]
    rows = [
        ("gateway CPU, idle (no lines), % of one core", spread(idle)),
        (f"gateway CPU at {args.rate:g} lines/s, % of one core", spread(busy)),
        (f"serial cost at {args.rate:g} lines/s (busy - idle), % of one core", spread(cost)),
        (f"CPU per line at {args.rate:g} lines/s, us", spread(per_line, ".0f")),
    ]
    scale_runs = [r for r in runs if r.scale is not None]
    scale_cost: list[float] = []
    scale_per_line: list[float] = []
    if scale_runs:
        scale_busy = [r.scale.pct for r in scale_runs if r.scale is not None]
        scale_cost = [r.cost_pct(r.scale) for r in scale_runs if r.scale is not None]
        scale_per_line = [r.per_line_us(r.scale) for r in scale_runs if r.scale is not None]
        rows += [
            (f"gateway CPU at {args.scale_rate:g} lines/s, % of one core", spread(scale_busy)),
            (f"serial cost at {args.scale_rate:g} lines/s, % of one core", spread(scale_cost)),
            (f"CPU per line at {args.scale_rate:g} lines/s, us", spread(scale_per_line, ".0f")),
        ]
    ref_runs = [r for r in runs if r.reference is not None]
    ref_cost: list[float] = []
    if ref_runs:
        ref_cost = [r.cost_pct(r.reference) for r in ref_runs if r.reference is not None]
        ref_per_line = [r.per_line_us(r.reference) for r in ref_runs if r.reference is not None]
        rows += [
            (f"reference (commit every {REFERENCE_COMMIT_S * 1000:g} ms): serial cost at "
             f"{args.rate:g} lines/s, %", spread(ref_cost)),
            (f"reference: CPU per line at {args.rate:g} lines/s, us", spread(ref_per_line, ".0f")),
        ]
    all_delivered = all(r.delivered == r.written for r in runs)
    errors = [r.serial.get("errors", {}) for r in runs]
    clean = all_delivered and not any(errors) and all(
        r.serial.get("lines") == r.serial.get("readings") == r.written for r in runs)
    rows += [
        ("lines in InfluxDB / lines written (each run)",
         ", ".join(f"{r.delivered:,}/{r.written:,}" for r in runs)),
        ("serial errors in the gateway's statistics",
         "none" if not any(errors) else "; ".join(map(str, errors))),
        ("pacing: latest line behind its deadline, ms (worst run)",
         f"{max(r.worst_late_ms for r in runs):.1f}"),
    ]
    median_cost = statistics.median(cost)
    ok = median_cost < TARGET_PCT
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    line = sensor_line(1234)
    print(f"\nGarden Gateway serial benchmark, {when}; {machine()}")
    scaled = (f" ({args.seconds / 2:g} s at {args.scale_rate:g} lines/s)"
              if args.scale_rate > 0 else "")
    print(f"kv lines with NMEA checksum ({len(line)} bytes, e.g. {line.strip().decode()}) on a "
          f"pseudo-terminal;\n{args.seconds:g} s windows{scaled}, {args.runs} runs, medians "
          f"(min to max); CPU = utime+stime of the gateway process; {elapsed:.0f} s in all\n")
    width = max(len(name) for name, _ in rows)
    vwidth = max(len(value) for _, value in rows)
    print(f"| {'figure':{width}s} | {'value':{vwidth}s} |")
    print(f"| {'-' * width} | {'-' * vwidth} |")
    for name, value in rows:
        print(f"| {name:{width}s} | {value:{vwidth}s} |")
    print()
    print(f"target serial source at {args.rate:g} lines/s < {TARGET_PCT:g}% of one core: "
          f"{'PASS' if ok else 'MISS'} ({median_cost:.2f}%, worst run "
          f"{max(cost):.2f}%)")
    print(f"every line delivered, no serial errors: {'PASS' if clean else 'MISS'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "when": when, "machine": machine(), "runs": args.runs, "rate": args.rate,
            "seconds": args.seconds, "scale_rate": args.scale_rate,
            "line_example": line.strip().decode(), "clk_tck": CLK_TCK,
            "target_pct": TARGET_PCT, "pass": ok, "all_delivered": clean,
            "idle_pct": summary(idle), "busy_pct": summary(busy), "cost_pct": summary(cost),
            "per_line_us": summary(per_line),
            "scale_cost_pct": summary(scale_cost) if scale_cost else None,
            "scale_per_line_us": summary(scale_per_line) if scale_per_line else None,
            "reference_commit_s": REFERENCE_COMMIT_S,
            "reference_cost_pct": summary(ref_cost) if ref_cost else None,
            "per_run": [{**asdict(r), "idle_pct": r.idle.pct, "busy_pct": r.busy.pct,
                         "cost_pct": r.cost_pct(r.busy)} for r in runs],
        }, indent=2))
        print(f"wrote {args.json}")
    # A missed target is a figure to report; a lost line is a failure.
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
