"""Node-RED as the benchmark's peer: install it once into a cache, and lay out one run's files.

Node-RED 4.1 (Node-RED 5 needs Node.js 22.9+; Debian's ``nodejs`` is older) and
node-red-contrib-influxdb come from the npm registry with ``npm install --prefix`` into
``${XDG_CACHE_HOME:-~/.cache}/garden-gateway/bench/node-red-4.1``, once; later runs reuse them.
The flow (``bench/nodered/flow.template.json``) is the batched way a Node-RED user would wire
MQTT → InfluxDB: mqtt in → function → join (1000 or 0.2 s) → influxdb batch. Its comment node
says what Node-RED gives up: MQTT.js acknowledges a QoS 1 message on receipt.

Why not a container image: the bench runs where the parks' Debian runs, with Debian's Node.js,
and an npm prefix is removed with one ``rm -rf``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent / "nodered"
PACKAGES = ("node-red@~4.1", "node-red-contrib-influxdb")


class Unavailable(RuntimeError):
    """Node-RED cannot run here (no node or npm, or the install failed); the column is skipped."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "garden-gateway" / "bench" / "node-red-4.1"


def install(timeout: float = 600) -> Path:
    """Return the path of Node-RED's ``red.js``, installing it into the cache the first time."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("node/npm not found (Debian: apt-get install nodejs npm); "
                          "the Node-RED column is skipped")
    prefix = cache_dir()
    modules = prefix / "node_modules"
    red = modules / "node-red" / "red.js"
    if red.is_file() and (modules / "node-red-contrib-influxdb" / "influxdb.js").is_file():
        return red
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"  installing {' '.join(PACKAGES)} into {prefix} (once)", flush=True)
    try:
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        "--loglevel", "error", *PACKAGES],
                       check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"npm install of Node-RED failed: {exc}") from exc
    if not red.is_file():
        raise Unavailable(f"npm install finished but {red} is missing")
    return red


def flow(*, mqtt_port: int, influx_port: int, database: str, site: str, client_id: str) -> str:
    """The flow file's text for one run (the template with its @...@ placeholders filled)."""
    text = (HERE / "flow.template.json").read_text()
    for key, value in (("@MQTT_PORT@", str(mqtt_port)), ("@INFLUX_PORT@", str(influx_port)),
                       ("@DATABASE@", database), ("@SITE@", site),
                       ("@CLIENT_ID@", client_id)):
        text = text.replace(key, value)
    return text


def prepare(folder: Path, red: Path, *, mqtt_port: int, influx_port: int, database: str,
            site: str, ui_port: int) -> tuple[list[str], dict[str, str]]:
    """Write one run's user directory and flow; return Node-RED's argv and environment."""
    user_dir = folder / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    flow_file = user_dir / "flows.json"
    flow_file.write_text(flow(mqtt_port=mqtt_port, influx_port=influx_port, database=database,
                              site=site, client_id=f"node-red-{database}"))
    node = shutil.which("node")
    if node is None:
        raise Unavailable("node not found")
    env = dict(os.environ, BENCH_NODE_RED_PORT=str(ui_port), BENCH_NODE_RED_FLOW=str(flow_file))
    argv = [node, str(red), "--userDir", str(user_dir), "--settings",
            str(HERE / "settings.js")]
    return argv, env
