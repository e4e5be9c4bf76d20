"""How much SD card a day of readings takes in the spool, and what the file bound costs.

    .venv/bin/python bench/spool_disk_bench.py                      # this tree
    .venv/bin/python bench/spool_disk_bench.py --baseline /tmp/old  # and a checkout before

1. A day of the example park (docs/operator.md, "How many days of outage the spool holds"):
   one AP's collectd (8 messages / 10 s), a polder and a garden sensor, device_status for 4
   devices and a Wi-Fi usage report every 60 s: 78,048 lines of the lengths measured there,
   appended in commits of 10 lines (more commits than the gateway makes at this rate, so the
   WAL is exercised at least as much). Measured: the database and WAL files' sizes after the
   day, bytes per line on the card, and the days of outage that spool.max_bytes holds.
2. The bound: 40,000 lines into spool.max_bytes = 2 MiB in commits of 100; the largest the file
   (database + WAL) got, and the time per commit, for this tree and ``--baseline``.

Each figure is the median of ``--runs`` runs (min-max beside it); the trees alternate, in
separate processes, so neither warms the page cache for the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
DAY_S = 86_400
T0 = 1_800_000_000_000_000_000

# (what, line length, lines per day), the example park of docs/operator.md.
DAY = (
    ("ap collectd", 170, 8 * DAY_S // 10),
    ("sensors", 130, DAY_S // 60 + DAY_S // 300),
    ("device_status", 205, 4 * DAY_S // 60),
    ("wifi usage", 220, DAY_S // 60),
)
# The same park with 4 APs: 4x the collectd lines, device_status for 7 devices, 4 usage reports.
DAY_4_APS = (
    ("ap collectd", 170, 4 * 8 * DAY_S // 10),
    ("sensors", 130, DAY_S // 60 + DAY_S // 300),
    ("device_status", 205, 7 * DAY_S // 60),
    ("wifi usage", 220, 4 * DAY_S // 60),
)
PARKS = {"1 AP": DAY, "4 APs": DAY_4_APS}

_CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from gateway.store.spool import SpoolDB, spool_file_bytes
mode, path = sys.argv[2], Path(sys.argv[3])
spec = json.loads(sys.argv[4])

def padded(what, n, i):
    head = f"{what},device=d{i % 7},gateway=gw-taman-01,site=taman-suropati "
    tail = f" {spec['t0'] + i}"
    body = "v=" + "1" * max(1, n - len(head) - len(tail) - 2)
    return head + body + tail

if mode == "day":
    lines = []
    for what, n, per_day in spec["day"]:
        lines += [padded(what.replace(" ", "_"), n, i) for i in range(per_day)]
    lines.sort(key=lambda s: s[-6:])  # interleaved, as they arrive
    db = SpoolDB(path, max_bytes=512 * 1024 * 1024)
    for i in range(0, len(lines), 10):
        db.append(lines[i:i + 10])
    open_bytes = spool_file_bytes(path)
    rows, chars = db.rows, sum(len(s) for s in lines)
    db.close()
    print(json.dumps({"rows": rows, "line_bytes": chars, "open_file_bytes": open_bytes,
                      "closed_file_bytes": spool_file_bytes(path)}))
else:
    db = SpoolDB(path, max_bytes=2 * 1024 * 1024)
    peak, took = 0, []
    for b in range(400):
        batch = [padded("polder", 130, b * 100 + i) for i in range(100)]
        t = time.perf_counter()
        db.append(batch)
        took.append(time.perf_counter() - t)
        peak = max(peak, spool_file_bytes(path))
    took.sort()
    print(json.dumps({"peak_file_bytes": peak, "commit_ms": 1000 * took[len(took) // 2],
                      "evicted": db.statistics().totals["evicted"]}))
    db.close()
"""


def run(tree: Path, mode: str, park: tuple[tuple[str, int, int], ...] = DAY
        ) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="spool-bench-") as tmp:
        spec = json.dumps({"day": park, "t0": T0})
        out = subprocess.run([sys.executable, "-c", _CHILD, str(tree), mode,
                              str(Path(tmp) / "spool.sqlite3"), spec],
                             capture_output=True, text=True, check=True, cwd=tree)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def med(values: list[float]) -> str:
    return f"{statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with")
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees = {"baseline": args.baseline, **trees}
    day: dict[tuple[str, str], list[dict[str, float]]] = {
        (park, name): [] for park in PARKS for name in trees}
    bound: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, tree in trees.items():
            for park, lines in PARKS.items():
                day[(park, name)].append(run(tree, "day", lines))
            bound[name].append(run(tree, "bound"))
    print(f"## A day of the example park, median of {args.runs}\n")
    print("| park | tree | lines | file bytes (open) | file bytes (closed) | bytes per line on "
          "the card | MB a day | days in 512 MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (park, name), runs in day.items():
        per_day = sum(n for _, _, n in PARKS[park])
        open_b = [r["open_file_bytes"] for r in runs]
        closed = [r["closed_file_bytes"] for r in runs]
        per_line = [r["closed_file_bytes"] / r["rows"] for r in runs]
        mb_day = [r["closed_file_bytes"] / 1e6 for r in runs]
        days = [512 * MiB / r["closed_file_bytes"] for r in runs]
        print(f"| {park} | {name} | {per_day:,} | {med(open_b)} | {med(closed)} "
              f"| {med(per_line)} | {med(mb_day)} | {med(days)} |")
    print(f"\n## 40,000 lines into spool.max_bytes = 2 MiB, median of {args.runs}\n")
    print("| tree | largest file (db + WAL), bytes | x max_bytes | commit of 100 lines, ms "
          "| evicted |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runs in bound.items():
        peak = [r["peak_file_bytes"] for r in runs]
        print(f"| {name} | {med(peak)} | {med([p / (2 * MiB) for p in peak])} "
              f"| {med([r['commit_ms'] for r in runs])} | {med([r['evicted'] for r in runs])} |")
    print(f"\n{os.cpu_count()} cores; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
