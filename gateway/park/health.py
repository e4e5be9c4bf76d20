"""The gateway's own health as a ``gateway_health`` point, for the regency's InfluxDB.

One point a minute (with the summary log line), through the spool like every reading, so a
park whose link was down still shows afterwards how its gateway fared meanwhile: spool depth,
the oldest unsent reading's age, what came in and went out, the connections' state, memory.
Counters are totals since the gateway started (``uptime_s`` tells a restart); the central
side takes differences.
"""

from __future__ import annotations

import resource

from devices.reading import FieldValue, Reading
from gateway.core.status import Status
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


def health_point(status: Status, *, now_ns: int, rss_bytes: int | None = None) -> str:
    """One line of line protocol from a ``Gateway.status()`` snapshot."""
    gw, counts, spool = status.gateway, status.counts, status.spool
    fields: dict[str, FieldValue] = {
        "uptime_s": float(gw.uptime_s),
        "received": counts.received,
        "readings": counts.readings,
        "rejected": counts.rejected,
        "spooled": counts.spooled,
        "written": counts.written,
        "quarantined": counts.quarantined,
        "evicted": counts.evicted,
        "spool_rows": spool.rows,
        "spool_bytes": spool.bytes,
        "spool_max_bytes": spool.max_bytes,
        "dead_letter_rows": spool.dead_letter_rows,
        "quarantine_rows": spool.quarantine_rows,
        "mqtt_connected": status.mqtt.connected,
        "mqtt_state": status.mqtt.state,
        "influx_state": status.influx.state,
        "rss_bytes": _rss_bytes() if rss_bytes is None else rss_bytes,
    }
    if spool.oldest_unsent_age_s is not None:
        fields["oldest_unsent_age_s"] = float(spool.oldest_unsent_age_s)
    fields["serial_errors"] = sum(sum(s.errors.values()) for s in status.serial.values())
    fields["modbus_errors"] = sum(
        sum(b.errors.values()) + sum(sum(sl.errors.values()) for sl in b.slaves.values())
        for b in status.modbus.values())
    tags = {"site": gw.site, "gateway": gw.id, "device": gw.id}
    return encode(Reading.build(MEASUREMENT, tags, fields, now_ns))
