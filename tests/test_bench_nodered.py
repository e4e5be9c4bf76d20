"""The benchmark's Node-RED peer (bench/nodered/, issue 18) is wired as the bench says: QoS 1
with a persistent session → parsed JSON → one point per reading → join 1000 or 0.2 s → influxdb
batch over the 1.x API; and its function node gives every reading its own timestamp, so no
point overwrites another in InfluxDB."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def peer() -> ModuleType:
    path = ROOT / "bench" / "nodered_peer.py"
    spec = importlib.util.spec_from_file_location("nodered_peer", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flow() -> dict[str, dict[str, Any]]:
    text = peer().flow(mqtt_port=1884, influx_port=8087, database="run1", site="taman-x",
                       client_id="node-red-run1")
    assert re.search(r"@[A-Z_]+@", text) is None, "a placeholder left unfilled"
    return {node["id"]: node for node in json.loads(text)}


def test_the_nodes_are_wired_the_batched_way() -> None:
    nodes = flow()
    by_type = {node["type"]: node for node in nodes.values()}
    broker, inp = by_type["mqtt-broker"], by_type["mqtt in"]
    func, join, out = by_type["function"], by_type["join"], by_type["influxdb batch"]
    assert inp["wires"] == [[func["id"]]]
    assert func["wires"] == [[join["id"]]]
    assert join["wires"] == [[out["id"]]]
    assert inp["broker"] == broker["id"]
    assert (inp["topic"], inp["qos"], inp["datatype"]) == ("garden/taman-x/+/telemetry", "1",
                                                           "json")
    assert (broker["port"], broker["clientid"], broker["cleansession"]) == (
        "1884", "node-red-run1", False)
    assert (join["mode"], join["build"], join["count"], join["timeout"]) == (
        "custom", "array", "1000", "0.2")
    influx = nodes[out["influxdb"]]
    assert (influx["influxdbVersion"], influx["hostname"], influx["port"], influx["database"]) \
        == ("1.x", "127.0.0.1", "8087", "run1")


def test_the_function_node_stamps_distinct_points() -> None:
    node = shutil.which("node")
    assert node is not None, "node not installed (./dev test installs Debian's nodejs)"
    func = next(n for n in flow().values() if n["type"] == "function")["func"]
    script = f"""
const store = {{}};
const context = {{ get: (k) => store[k], set: (k, v) => {{ store[k] = v; }} }};
const point = (msg) => {{ {func} }};
const out = [];
for (let i = 0; i < 500; i++) {{
  out.push(point({{ topic: "garden/taman-x/polder-1/telemetry",
                   payload: {{ level_cm: 182.5, seq: i }} }}).payload);
}}
console.log(JSON.stringify(out));
"""
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30,
                          check=True)
    points = json.loads(done.stdout)
    assert points[0]["measurement"] == "polder"
    assert points[0]["tags"] == {"device": "polder-1", "gateway": "node-red", "site": "taman-x"}
    assert [p["fields"]["seq"] for p in points] == list(range(500))
    stamps = [int(p["timestamp"]) for p in points]
    assert len(set(stamps)) == 500
    assert all(len(p["timestamp"]) == 19 for p in points)  # nanoseconds since 1970
