"""The reference the benchmark compares the gateway with: a minimal MQTT → InfluxDB bridge.

No durability at all: paho subscribes at QoS 1 and acknowledges on arrival, each message is
parsed as JSON and turned into a line, and lines are POSTed to ``/write`` in batches of 5,000
or every second. What it loses on a crash is exactly what the gateway exists to keep; it is
here only to show what the gateway's guarantees cost.

    python bench/minimal_bridge.py --mqtt-port P --influx-url URL --db DB --topic 'garden/#'
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--influx-url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--topic", default="garden/+/+/telemetry")
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()

    lines: list[str] = []
    lock = threading.Lock()
    url = f"{args.influx_url}/write?db={args.db}&precision=ns"

    def flush() -> None:
        with lock:
            batch = lines[:]
            lines.clear()
        if batch:
            # Only ever the benchmark's private InfluxDB on 127.0.0.1.
            req = urllib.request.Request(url, data="\n".join(batch).encode(),  # noqa: S310
                                         method="POST")
            urllib.request.urlopen(req, timeout=30).close()  # noqa: S310

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        data = json.loads(msg.payload)
        fields = ",".join(f"{k}={v}" for k, v in data.items() if k != "ts")
        line = f"polder,site={parts[1]},device={parts[2]} {fields} {time.time_ns()}"
        with lock:
            lines.append(line)
            full = len(lines) >= args.batch
        if full:
            flush()

    def on_connect(client: paho.Client, *a: object) -> None:
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client: paho.Client, *a: object) -> None:
        # Ready once the broker acknowledged the subscription: with a clean session, anything
        # published before that is lost and the benchmark would wait for it in vain.
        print("ready", flush=True)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="minimal-bridge")
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", args.mqtt_port)
    client.loop_start()
    try:
        while True:
            time.sleep(1.0)
            flush()
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        flush()


if __name__ == "__main__":
    main()
