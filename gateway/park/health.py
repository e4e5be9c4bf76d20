"""The gateway's own health as a ``gateway_health`` point, for the regency's InfluxDB.

One point a minute (with the summary log line), through the spool like every reading, so a
park whose link was down still shows afterwards how its gateway fared meanwhile: spool depth,
the oldest unsent reading's age, what came in and went out, the connections' state, memory.
Counters are totals since the gateway started (``uptime_s`` tells a restart); the central
side takes differences.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping
from typing import Any

from devices.reading import FieldValue, Reading
from gateway.store.lineproto import encode

MEASUREMENT = "gateway_health"


def _rss_bytes() -> int:
    # ru_maxrss is the peak, in KiB on Linux; the current RSS is in /proc, read when there.
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def health_point(status: Mapping[str, Any], *, now_ns: int,
                 rss_bytes: int | None = None) -> str:
    """One line of line protocol from a ``Gateway.status()`` snapshot."""
    gw, counts, spool = status["gateway"], status["counts"], status["spool"]
    mqtt, influx = status["mqtt"], status["influx"]
    fields: dict[str, FieldValue] = {
        "uptime_s": float(gw["uptime_s"]),
        "received": int(counts["received"]),
        "readings": int(counts["readings"]),
        "rejected": int(counts["rejected"]),
        "spooled": int(counts["spooled"]),
        "written": int(counts["written"]),
        "quarantined": int(counts["quarantined"]),
        "evicted": int(counts["evicted"]),
        "spool_rows": int(spool["rows"]),
        "spool_bytes": int(spool["bytes"]),
        "spool_max_bytes": int(spool["max_bytes"]),
        "dead_letter_rows": int(spool["dead_letter_rows"]),
        "quarantine_rows": int(spool["quarantine_rows"]),
        "mqtt_connected": bool(mqtt["connected"]),
        "mqtt_state": str(mqtt["state"]),
        "influx_state": str(influx["state"]),
        "rss_bytes": _rss_bytes() if rss_bytes is None else rss_bytes,
    }
    if spool["oldest_unsent_age_s"] is not None:
        fields["oldest_unsent_age_s"] = float(spool["oldest_unsent_age_s"])
    serial_errors = sum(sum(s["errors"].values()) for s in status.get("serial", {}).values())
    modbus_errors = sum(sum(b["errors"].values()) + sum(
        sum(sl["errors"].values()) for sl in b["slaves"].values())
        for b in status.get("modbus", {}).values())
    fields["serial_errors"] = serial_errors
    fields["modbus_errors"] = modbus_errors
    tags = {"site": gw["site"], "gateway": gw["id"], "device": gw["id"]}
    return encode(Reading.build(MEASUREMENT, tags, fields, now_ns))
