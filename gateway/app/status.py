"""The gateway's status: every part's ``statistics()``, put together once, typed.

:func:`build_status` is the one place where the parts' snapshots meet; what it returns is the
:class:`~gateway.core.status.Status` that ``/api/v1/status`` returns, ``/metrics`` renders and
the ``gateway_health`` point is made of. It reads snapshots and changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.core.status import Status, WatchdogStatus

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.core.disk import DiskHealth
    from gateway.park.alerts import Alerter
    from gateway.park.liveness import Liveness
    from gateway.park.wifi_usage import WifiUsage
    from gateway.pipeline import Committer, Pipeline
    from gateway.pipeline.timesync import TimeSync
    from gateway.sources.modbus import ModbusBus
    from gateway.sources.mqtt import MqttSource
    from gateway.sources.serial import SerialLineSource
    from gateway.store.forwarder import Forwarder
    from gateway.store.spool import Spool


@dataclasses.dataclass(frozen=True, slots=True)
class Parts:
    """What the status is read from (the composition root hands it over once)."""

    config: Config
    version: str
    spool: Spool
    forwarder: Forwarder
    mqtt: MqttSource
    pipeline: Pipeline
    committer: Committer
    liveness: Liveness
    wifi: WifiUsage
    timesync: TimeSync
    alerter: Alerter
    serial: Sequence[SerialLineSource]
    modbus: Sequence[ModbusBus]
    disk: DiskHealth


def build_status(parts: Parts, *, now_ns: int, uptime_s: float, own_points: int,
                 stopping: bool, watchdog: WatchdogStatus) -> Status:
    cfg = parts.config
    spool = parts.spool.statistics()
    fwd = parts.forwarder.statistics()
    mqtt = parts.mqtt.statistics()
    pipe = parts.pipeline.statistics()
    commit = parts.committer.statistics()
    oldest_age = None
    if spool.oldest_time_ns is not None:
        oldest_age = max(0.0, (now_ns - spool.oldest_time_ns) / 1e9)
    return Status.model_validate({
        "gateway": {"id": cfg.gateway.id, "site": cfg.gateway.site, "version": parts.version,
                    "uptime_s": round(uptime_s, 3), "stopping": stopping},
        "mqtt": {"broker": mqtt.broker, "state": mqtt.state, "connected": mqtt.connected,
                 "connects": mqtt.connects, "disconnects": mqtt.disconnects,
                 "session_present": mqtt.session_present, "last_error": mqtt.last_error,
                 "redeliveries": mqtt.redeliveries,
                 "redeliveries_matched": mqtt.redeliveries_matched,
                 "unacknowledged": mqtt.unacknowledged, "flow_pauses": mqtt.flow_pauses},
        "influx": {"url": cfg.influx.url, "api": cfg.influx.api,
                   "state": fwd.state, "connected": fwd.connected,
                   "last_error": fwd.last_error,
                   "last_success_ns": fwd.last_success_ns, "batches": fwd.batches,
                   "retries": fwd.retries, "next_attempt_in_s": fwd.next_attempt_in_s},
        "spool": {"rows": spool.rows, "bytes": spool.bytes, "max_bytes": spool.max_bytes,
                  "file_bytes": spool.file_bytes, "oldest_unsent_age_s": oldest_age,
                  "pending_commit": commit["pending_lines"],
                  "commit_failures": commit["failures"],
                  "quarantine_rows": spool.quarantine_rows,
                  "dead_letter_rows": spool.dead_letter_rows,
                  "evicted_for_reserve": spool.evicted_for_reserve,
                  "open_error": spool.open_error},
        "counts": {
            "received": mqtt.messages,
            "readings": pipe["readings"],
            "rejected": pipe["rejected"],
            "spooled": commit["committed_lines"],
            "own_points": own_points,
            "acknowledged": mqtt.acks,
            "written": fwd.written,
            "quarantined": fwd.quarantined,
            "dead_lettered": pipe["rejected"] - pipe["refused_not_kept"],
            "evicted": spool.totals["evicted"],
            "dropped_uncommitted": commit["dropped"],
            "presence_messages": pipe["presences"],
            "macs_redacted": pipe["redacted"],
            "own_topics_ignored": pipe["own_topics"],
        },
        "totals": spool.totals,
        "sources": pipe["sources"],
        "discovered_devices": pipe["discovered_devices"],
        "liveness": parts.liveness.statistics(),
        "wifi": parts.wifi.statistics(),
        "clock": parts.timesync.statistics(),
        "alerts": parts.alerter.statistics(),
        "serial": {s.name: s.describe() for s in parts.serial},
        "modbus": {b.name: b.describe() for b in parts.modbus},
        "watchdog": watchdog,
        "disk": parts.disk.snapshot(),
    })
