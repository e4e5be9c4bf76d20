"""The gateway process: one TaskGroup owning every long-lived task, and an orderly shutdown.

Tasks (named as they appear in tracebacks):
``spool.commit`` batches readings into spool transactions and then acknowledges them;
``mqtt[<host>:<port>].receive`` keeps the broker connection;
``influx[<url>].forward`` sends the spool to InfluxDB;
``clock.watch`` asks whether the wall clock can be believed (NTP) and, once it can, releases
the readings held meanwhile with corrected times;
``health.report`` writes a ``gateway_health`` point at ``liveness.report_interval_s``;
``gateway.housekeeping`` prunes redelivery keys and logs one summary line a minute;
``serial[<name>].read`` reads a line-printing sensor on a serial port;
``modbus[<name>].poll`` polls the Modbus RTU slaves on one RS485 bus;
``liveness.watch`` turns silence into offline devices, writes ``device_status`` points and
the gateway's heartbeat;
``alerts.deliver`` sends the down/recovered notifications (webhooks, Telegram);
``history.flush`` writes the charts' rollups to ``history.sqlite3``;
``events.pump`` turns new readings and the park's summary into the pages' live events;
``api.serve`` is the status API and the pages;
``systemd.notify`` (only under systemd, see :mod:`gateway.app.sdnotify`) sends READY=1 once the
API listens, a STATUS line at the summary's rate, and WATCHDOG=1 only while :meth:`Gateway.alive`.

Shutdown (SIGTERM, SIGINT): stop reading MQTT, commit what was received and acknowledge it,
say goodbye to the broker (the session stays), deliver what InfluxDB accepts within
``shutdown_grace_s``, and stop. Whatever is not delivered stays in the spool for next time.
systemd hears STOPPING=1 first, with how long the stop may take.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from devices.reading import Reading
from gateway.app.sdnotify import Notifier
from gateway.config import Config
from gateway.core.clock import Clock, SystemClock
from gateway.park.alerts import Alerter, Subject
from gateway.park.health import health_point
from gateway.park.history import History, Tier
from gateway.park.liveness import Liveness, Transition
from gateway.park.registry import Registry
from gateway.park.state_topics import StatePublisher, gateway_status_topic, iso
from gateway.park.wifi_usage import WifiUsage
from gateway.pipeline import Committer, Pipeline
from gateway.pipeline.timesync import ClockTimeSource, TimeSource, TimeSync
from gateway.sources.modbus import ModbusBus, SlaveSpec
from gateway.sources.mqtt import MqttSource
from gateway.sources.serial import SerialLineSource
from gateway.store.forwarder import Forwarder
from gateway.store.influx import InfluxWriter
from gateway.store.spool import SeenLookup, Spool
from gateway.web.api import create_app
from gateway.web.auth import OperatorAuth
from gateway.web.events import EventHub
from gateway.web.metrics import render as render_metrics
from gateway.web.resident import CLIENTS_FIELD, public_series, resident_view

log = logging.getLogger(__name__)

__version__ = "0.1.0"

SEEN_KEEP_NS = 3600 * 10**9
HOUSEKEEPING_S = 60.0
# How often the pages' live events go out: bursts of readings become one event per device.
PUMP_S = 0.5
# How often the site's connected-clients count goes into the local history.
CLIENTS_SAMPLE_S = 60.0
# How often systemd's STATUS line (systemctl status) is refreshed: the summary's rate.
STATUS_S = HOUSEKEEPING_S
# What a stop may take beyond shutdown_grace_s (MQTT goodbye, the API, the spool's checkpoint):
# sent as EXTEND_TIMEOUT_USEC, so a grace longer than the unit's TimeoutStopSec still fits.
STOP_MARGIN_S = 20.0


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway handles signals in one place.

    ``listening`` is set once its sockets accept connections (READY=1 waits for it).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    def __init__(self, config: Config, *, clock: Clock | None = None,
                 notifier: Notifier | None = None,
                 time_source: TimeSource | None = None) -> None:
        # First, before any thread starts: it takes NOTIFY_SOCKET & co. out of os.environ.
        self.notifier = notifier if notifier is not None else Notifier.from_environment(unset=True)
        self.config = config
        self.clock = clock or SystemClock()
        self.started_ns = time.time_ns()
        self._started_mono = time.monotonic()
        spool_path = config.data_dir / "spool.sqlite3"
        self.spool = Spool.open(
            spool_path,
            max_bytes=config.spool.max_bytes,
            dead_letter_max_rows=config.spool.dead_letter_max_rows,
            quarantine_max_rows=config.spool.quarantine_max_rows,
            held_max_rows=config.clock.held_max_rows,
            unsynced_max_rows=config.clock.unsynced_max_rows,
        )
        self.seen = SeenLookup(spool_path)
        if time_source is None and clock is not None:
            time_source = ClockTimeSource(self.clock)
        self.timesync = TimeSync.from_config(config.clock, source=time_source, spool=self.spool,
                                             clock=self.clock)
        self.pipeline = Pipeline.from_config(config, time_sync=self.timesync)
        self.committer = Committer(
            spool=self.spool,
            interval_s=config.spool.commit_interval_s,
            unacked_interval_s=config.spool.unacked_commit_interval_s,
            max_readings=config.spool.commit_max_readings,
            max_pending_acks=max(1, config.mqtt.receive_maximum // 2),
        )
        influx = config.influx
        self.writer = InfluxWriter(
            url=influx.url,
            api=influx.api,
            database=influx.database,
            retention_policy=influx.retention_policy,
            username=influx.username,
            password=influx.password.get_secret_value() if influx.password else None,
            org=influx.org,
            bucket=influx.bucket,
            token=influx.token.get_secret_value() if influx.token else None,
            use_gzip=influx.gzip,
            timeout_s=influx.timeout_s,
        )
        self.forwarder = Forwarder(
            spool=self.spool,
            writer=self.writer,
            batch_size=influx.batch_size,
            flush_interval_s=influx.flush_interval_s,
            quiet_flush_s=influx.quiet_flush_s,
            backoff_min_s=influx.backoff_min_s,
            backoff_max_s=influx.backoff_max_s,
            auth_retry_s=influx.auth_retry_s,
            create_database=influx.create_database and influx.api == "v1",
            time_guard=self.timesync.refuse_reason,
        )
        self.registry = Registry(config.data_dir / "state.sqlite3")
        self.liveness = Liveness(
            registry=self.registry, config=config.liveness, devices=config.devices,
            gateway_id=config.gateway.id, site=config.gateway.site, clock=self.clock,
            emit=self._emit,
        )
        self.pipeline.on_readings.append(self.liveness.readings)
        self.wifi = WifiUsage(config=config.wifi, devices=config.devices,
                              gateway_id=config.gateway.id, site=config.gateway.site,
                              registry=self.registry, clock=self.clock, emit=self._emit)
        self.pipeline.on_readings.append(self.wifi.readings)
        self.pipeline.on_macs.append(self.wifi.macs)
        self.pipeline.on_presence.append(
            lambda said, source: self.liveness.presence(said.device, said.site, said.online,
                                                        said.said))
        publish_states = config.liveness.publish_mqtt
        self.mqtt = MqttSource(
            config=config.mqtt,
            client_id=config.mqtt_client_id,
            topics=[s.topic for s in config.subscriptions],
            pipeline=self.pipeline,
            committer=self.committer,
            seen=self.seen,
            status_topic=(gateway_status_topic(config.gateway.site, config.gateway.id)
                          if publish_states else None),
            on_connected=self._connected if publish_states else None,
        )
        self.states = StatePublisher(liveness=self.liveness, publish=self.mqtt.publish)
        if publish_states:
            self.liveness.listeners.append(self.states.transition)
        self.alerter = Alerter(config.alerts, clock=self.clock, gateway_id=config.gateway.id,
                               site=config.gateway.site)
        self.liveness.listeners.append(self._alert)
        self.serial = [
            SerialLineSource(
                name=s.name, port=s.port, baudrate=s.baudrate,
                options=config.serial_options(i), max_line_bytes=s.max_line_bytes,
                pipeline=self.pipeline, committer=self.committer,
                reopen_min_s=s.reopen_min_s, reopen_max_s=s.reopen_max_s,
            )
            for i, s in enumerate(config.serial)
        ]
        self.modbus = [
            ModbusBus(
                name=b.name, port=b.port, baudrate=b.baudrate, bytesize=b.bytesize,
                parity=b.parity, stopbits=b.stopbits, timeout_s=b.timeout_s,
                turnaround_s=b.turnaround_s, echo=b.echo, offline_after=b.offline_after,
                offline_retry_s=b.offline_retry_s, reopen_min_s=b.reopen_min_s,
                reopen_max_s=b.reopen_max_s, pipeline=self.pipeline, committer=self.committer,
                slaves=[SlaveSpec(device=s.device, unit=s.unit, interval_s=s.interval_s,
                                  measurement=s.measurement, blocks=s.blocks)
                        for s in b.slaves],
            )
            for b in config.modbus
        ]
        self.history: History | None = None
        if config.history.enabled:
            self.history = History(
                config.data_dir / "history.sqlite3", clock=self.clock,
                tiers=[Tier(t.step_s, t.keep_s) for t in config.history.tiers],
                max_series=config.history.max_series)
            self.pipeline.on_readings.append(self.history.readings)
        self._public_series = public_series(config.pages, config.gateway.site)
        self.events = EventHub(max_clients=config.api.sse_max_clients,
                               keepalive_s=config.api.sse_keepalive_s)
        self._fresh: dict[str, tuple[int, dict[str, Any]]] = {}
        self.pipeline.on_readings.append(self._fresh_readings)
        self.liveness.listeners.append(self._state_event)
        token = config.api.operator_token
        self.auth = OperatorAuth(token.get_secret_value() if token else None,
                                 max_age_s=config.api.session_max_age_s)
        self.own_points = 0
        self.app = create_app(self, config=config.api, auth=self.auth, events=self.events)
        self.api_port: int | None = None
        self.stopping = False
        # The watchdog's view (see alive()): the long-lived tasks, and the committer's progress.
        # A committer that neither commits nor fails for this long while lines wait is stuck.
        spool_cfg = config.spool
        self.commit_stall_s = max(30.0, 10 * max(spool_cfg.commit_interval_s,
                                                 spool_cfg.unacked_commit_interval_s))
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._commit_mark = (0, 0)
        self._commit_moved = time.monotonic()
        self._loop_late_s = 0.0
        self._loop_late_limit_s = float("inf")
        self._not_alive: str | None = None
        self.watchdog_pings = 0
        self.watchdog_skips = 0

    def _emit(self, lines: list[str]) -> None:
        """Points the gateway makes itself (device_status) take the readings' path."""
        if lines:
            self.own_points += len(lines)
            self.committer.add(self.pipeline.own(lines))

    def _connected(self) -> None:
        self.states.republish()

    # -- live events (SSE) -----------------------------------------------------------------

    def _fresh_readings(self, readings: Sequence[Reading]) -> None:
        # Cheap on the ingest path: remember the newest fields per device; events.pump sends.
        # Nobody watching, nothing kept: a page fetches the whole state when it connects.
        if not self.events.operators_listening:
            return
        for r in readings:
            device = r.tag("device")
            if device is None:
                continue
            at, fields = self._fresh.get(device) or (0, {})
            fields.update(r.fields)
            self._fresh[device] = (max(at, r.time_ns), fields)

    def _state_event(self, t: Transition) -> None:
        d = self.liveness.devices.get(t.device)
        self.events.publish("state", {
            "device": t.device, "state": t.new, "old": t.old, "since_ns": t.at_ns,
            "cause": t.cause, "last_seen_ns": d.last_seen_ns if d is not None else None,
        }, public=False)

    async def _pump(self) -> None:
        last_resident: dict[str, Any] | None = None
        last_sample_ns: int | None = None
        while True:
            await asyncio.sleep(PUMP_S)
            fresh, self._fresh = self._fresh, {}
            for device, (at, fields) in fresh.items():
                self.events.publish("reading", {"device": device, "time_ns": at,
                                                "fields": fields}, public=False)
            now = self.clock.now_ns()
            sample = self.history is not None and (
                last_sample_ns is None or now - last_sample_ns >= CLIENTS_SAMPLE_S * 1e9)
            if not (sample or self.events.listening):
                last_resident = None  # the next page to connect gets a fresh summary
                continue
            view = self.resident_view()
            comparable = {k: v for k, v in view.items() if k != "time_ns"}
            if comparable != last_resident and self.events.listening:
                last_resident = comparable
                self.events.publish("resident", view, public=True)
            clients = view["wifi"]["clients_now"]
            if sample and self.history is not None:
                last_sample_ns = now
                if clients is not None:
                    self.history.record(self.config.gateway.site, CLIENTS_FIELD, now, clients)

    # -- the pages' views ------------------------------------------------------------------

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def resident_view(self) -> dict[str, Any]:
        site = self.config.gateway.site
        aps = [d for d in self.liveness.devices.values()
               if d.site == site and d.kind == self.config.wifi.kind and d.origin != "removed"]
        return resident_view(site=site, pages=self.config.pages, wifi_kind=self.config.wifi.kind,
                             devices=self.liveness.devices, clients_now=self._clients_now(aps),
                             now_ns=self.clock.now_ns())

    def history_is_public(self, device: str, field: str) -> bool:
        return (device, field) in self._public_series

    def history_view(self, device: str, field: str, start_ns: int, end_ns: int
                     ) -> tuple[int, list[tuple[int, float, float, float]]]:
        if self.history is None:
            return self.config.history.tiers[0].step_s, []
        answer = self.history.query(device, field, start_ns, end_ns)
        return answer.step_s, answer.points

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return await self.spool.dead_letters(limit)

    async def quarantined(self, limit: int) -> list[dict[str, Any]]:
        return await self.spool.quarantined(limit)

    def metrics_text(self) -> str:
        status = self.status()
        extra: dict[str, Any] = {
            "clock": status["clock"], "events": self.events.statistics(),
            "api": {"operator_refused": self.auth.refused},
            "watchdog": {"alive": status["watchdog"]["alive"],
                         "skips": status["watchdog"]["skips"]}}
        if self.history is not None:
            extra["history"] = self.history.statistics()
        return render_metrics(status, self.devices_view(), extra)

    def _alert(self, t: Transition) -> None:
        subject = Subject(t.device, t.name, t.kind, t.site, t.zone)
        if t.new == "offline":
            self.alerter.down(subject, t.at_ns, _cause_id(t.cause, self.config.liveness))
        elif t.new == "online" and t.old == "offline":
            self.alerter.up(subject, t.at_ns)

    # -- devices, outages, sites (the API's views) ---------------------------------------

    def devices_view(self, *, site: str | None = None, kind: str | None = None,
                     state: str | None = None, include_removed: bool = False
                     ) -> list[dict[str, Any]]:
        now = self.clock.now_ns()
        chosen = [d for d in self.liveness.devices.values()
                  if (include_removed or d.origin != "removed")
                  and (site is None or d.site == site) and (kind is None or d.kind == kind)
                  and (state is None or d.state == state)]
        chosen.sort(key=lambda d: (d.site, d.kind or "", d.id))
        uptime = self.liveness.uptime(now, chosen)
        return [{**self.liveness.view(d, uptime[d.id]), "wifi": self.wifi.ap_view(d.id)}
                for d in chosen]

    def outages_view(self, *, device: str | None = None, site: str | None = None,
                     since_ns: int | None = None, ongoing: bool | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        now = self.clock.now_ns()
        return [{"id": o.id, "device": o.device, "site": o.site, "kind": o.kind,
                 "start_ns": o.start_ns, "end_ns": o.end_ns, "start": iso(o.start_ns),
                 "end": iso(o.end_ns), "duration_s": round(o.duration_s(now), 3),
                 "ongoing": o.end_ns is None, "cause": o.cause, "end_cause": o.end_cause}
                for o in self.registry.outages(device=device, site=site, since_ns=since_ns,
                                               ongoing=ongoing, limit=limit)]

    def sites(self) -> list[str]:
        return sorted({d.site for d in self.liveness.devices.values() if d.origin != "removed"})

    def site_view(self, site: str) -> dict[str, Any] | None:
        now = self.clock.now_ns()
        members = [d for d in self.liveness.devices.values()
                   if d.site == site and d.origin != "removed"]
        if not members:
            return None

        def tally(ds: list[Any]) -> dict[str, int]:
            return {"up": sum(d.state == "online" for d in ds), "total": len(ds),
                    "down": sum(d.state == "offline" for d in ds),
                    "unknown": sum(d.state == "unknown" for d in ds)}

        aps = [d for d in members if d.kind == "wifi_ap"]
        sensors = [d for d in members if d.kind not in ("wifi_ap", "gateway")]
        gateways = [d for d in members if d.kind == "gateway"]
        return {
            "site": site,
            "time_ns": now,
            "gateways": [{"id": g.id, "state": g.state, "since_ns": g.since_ns}
                         for g in gateways],
            "aps": tally(aps),
            "sensors": tally(sensors),
            "clients_now": self._clients_now(aps),
            "wifi": self.wifi.site_view(site),
            "uptime_pct": self.liveness.site_uptime(site, now),
            "open_outages": len(self.registry.outages(site=site, ongoing=True, limit=10_000)),
        }

    def _clients_now(self, aps: list[Any]) -> int | None:
        counts = [self.wifi.ap_view(d.id) for d in aps if d.state == "online"]
        found = [c["clients"] for c in counts if c is not None and c["clients"] is not None]
        return sum(found) if found else None

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot for the API; reads statistics() of each component, nothing more."""
        now = time.time_ns()
        spool = self.spool.statistics()
        fwd = self.forwarder.statistics()
        mqtt = self.mqtt.statistics()
        pipe = self.pipeline.statistics()
        commit = self.committer.statistics()
        why_not = self.why_not_alive()
        oldest_age = None
        if spool.oldest_time_ns is not None:
            oldest_age = max(0.0, (now - spool.oldest_time_ns) / 1e9)
        return {
            "gateway": {"id": self.config.gateway.id, "site": self.config.gateway.site,
                        "version": __version__,
                        "uptime_s": round(time.monotonic() - self._started_mono, 3),
                        "stopping": self.stopping},
            "mqtt": {"broker": mqtt.broker, "state": mqtt.state, "connected": mqtt.connected,
                     "connects": mqtt.connects, "disconnects": mqtt.disconnects,
                     "session_present": mqtt.session_present, "last_error": mqtt.last_error,
                     "redeliveries": mqtt.redeliveries,
                     "redeliveries_matched": mqtt.redeliveries_matched,
                     "unacknowledged": mqtt.unacknowledged, "flow_pauses": mqtt.flow_pauses},
            "influx": {"url": self.config.influx.url, "api": self.config.influx.api,
                       "state": fwd.state, "connected": fwd.connected,
                       "last_error": fwd.last_error,
                       "last_success_ns": fwd.last_success_ns, "batches": fwd.batches,
                       "retries": fwd.retries, "next_attempt_in_s": fwd.next_attempt_in_s},
            "spool": {"rows": spool.rows, "bytes": spool.bytes, "max_bytes": spool.max_bytes,
                      "file_bytes": spool.file_bytes, "oldest_unsent_age_s": oldest_age,
                      "pending_commit": commit["pending_lines"],
                      "commit_failures": commit["failures"],
                      "quarantine_rows": spool.quarantine_rows,
                      "dead_letter_rows": spool.dead_letter_rows},
            "counts": {
                "received": mqtt.messages,
                "readings": pipe["readings"],
                "rejected": pipe["rejected"],
                "spooled": commit["committed_lines"],
                "own_points": self.own_points,
                "acknowledged": mqtt.acks,
                "written": fwd.written,
                "quarantined": fwd.quarantined,
                "dead_lettered": pipe["rejected"],
                "evicted": spool.totals["evicted"],
                "dropped_uncommitted": commit["dropped"],
                "presence_messages": pipe["presences"],
                "macs_redacted": pipe["redacted"],
                "own_topics_ignored": pipe["own_topics"],
            },
            "totals": spool.totals,
            "sources": pipe["sources"],
            "discovered_devices": pipe["discovered_devices"],
            "liveness": self.liveness.statistics(),
            "wifi": self.wifi.statistics(),
            "clock": self.timesync.statistics(),
            "alerts": dataclasses.asdict(self.alerter.statistics()),
            "serial": {s.name: s.describe() for s in self.serial},
            "modbus": {b.name: b.describe() for b in self.modbus},
            "watchdog": {"alive": why_not is None, "why_not": why_not,
                         "pings": self.watchdog_pings, "skips": self.watchdog_skips},
        }

    # -- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        server: _QuietServer | None = None
        gateway_down = self.liveness.start()
        self.wifi.restore()
        if gateway_down is not None and gateway_down.end_ns is not None:
            gw = self.liveness.devices[cfg.gateway.id]
            self.alerter.gateway_was_down(Subject(gw.id, gw.name, gw.kind, gw.site, gw.zone),
                                          gateway_down.start_ns, gateway_down.end_ns)
        async with asyncio.TaskGroup() as tg:
            commit = tg.create_task(self.committer.run(), name="spool.commit")
            forward: asyncio.Task[None] | None = None
            if cfg.influx.enabled:
                forward = tg.create_task(self.forwarder.run(),
                                         name=f"influx[{cfg.influx.url}].forward")
            else:
                self.forwarder.disable()
                log.warning("influx.enabled is false: readings stay in the spool (%s) and the "
                            "local history; nothing goes to InfluxDB", cfg.data_dir)
            receive = tg.create_task(self.mqtt.run(), name=f"mqtt[{self.mqtt.broker}].receive")
            house = tg.create_task(self._housekeeping(), name="gateway.housekeeping")
            clock_watch = tg.create_task(self.timesync.run(), name="clock.watch")
            watch = tg.create_task(self.liveness.run(), name="liveness.watch")
            alerts = tg.create_task(self.alerter.run(), name="alerts.deliver")
            wifi = tg.create_task(self.wifi.run(), name="wifi.report")
            pump = tg.create_task(self._pump(), name="events.pump")
            health = tg.create_task(self._health_report(), name="health.report")
            history = (tg.create_task(self.history.run(cfg.history.flush_interval_s),
                                      name="history.flush")
                       if self.history is not None else None)
            serial = [tg.create_task(s.run(), name=f"serial[{s.name}].read")
                      for s in self.serial]
            serial += [tg.create_task(b.run(), name=f"modbus[{b.name}].poll")
                       for b in self.modbus]
            if cfg.api.enabled:
                server = _QuietServer(uvicorn.Config(
                    self.app, host=cfg.api.host, port=cfg.api.port, log_level="warning",
                    access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                ))
                api = tg.create_task(server.serve(), name="api.serve")
                self._tasks[api.get_name()] = api
            for task in (commit, forward, receive, house, clock_watch, watch, alerts, wifi,
                         pump, history, health, *serial):
                if task is not None:
                    self._tasks[task.get_name()] = task
            notify = (tg.create_task(self._notify(server), name="systemd.notify")
                      if self.notifier.enabled else None)
            log.info("gateway started id=%s site=%s data_dir=%s", cfg.gateway.id,
                     cfg.gateway.site, cfg.data_dir)
            await stop.wait()
            self.stopping = True
            deadline = time.monotonic() + cfg.shutdown_grace_s
            log.info("gateway stopping: grace=%.1fs", cfg.shutdown_grace_s)
            self.notifier.stopping(f"stopping: delivering for up to {cfg.shutdown_grace_s:g}s",
                                   extend_timeout_s=cfg.shutdown_grace_s + STOP_MARGIN_S)
            if notify is not None:
                await _cancel(notify)
            self.mqtt.pause()
            for task in serial:
                await _cancel(task)
            await _cancel(watch)
            await _cancel(wifi)
            await _cancel(health)
            self.wifi.save()
            await _cancel(commit)
            await self.committer.flush()
            await self.mqtt.close(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            await _cancel(receive)
            left = self.spool.rows
            if forward is not None:
                await _cancel(forward)
                left = await self.forwarder.drain(deadline)
            await _cancel(house)
            await _cancel(clock_watch)
            await _cancel(alerts)
            await _cancel(pump)
            if history is not None:
                await _cancel(history)  # it writes what it holds once more
            self.events.close()  # open pages' streams end; their browsers come back later
            if server is not None:
                server.should_exit = True
        self.liveness.stop()
        self.registry.close()
        if self.history is not None:
            self.history.close()
        await self.spool.close()
        self.seen.close()
        await self.writer.aclose()
        await self.alerter.aclose()
        st = self.spool.statistics()
        log.info("gateway stopped: spool rows=%d left for next start (written=%d)", left,
                 st.totals["written"])
        self.notifier.close()

    # -- systemd: readiness, status, watchdog ----------------------------------------------

    def alive(self) -> bool:
        """What WATCHDOG=1 vouches for: every long-lived task still runs, the event loop
        answered the watchdog's last wake-up in time, and the committer is not stuck."""
        return self.why_not_alive() is None

    def why_not_alive(self) -> str | None:
        """None while alive; else the first check that failed, in words for the journal."""
        for name, task in self._tasks.items():
            if task.done():
                if task.cancelled():
                    return f"task {name} was cancelled"
                exc = task.exception()
                return f"task {name} ended" + (f": {exc!r}" if exc is not None else "")
        if self._loop_late_s > self._loop_late_limit_s:
            return (f"event loop blocked: the watchdog woke {self._loop_late_s:.2f}s late "
                    f"(limit {self._loop_late_limit_s:.2f}s)")
        # Stuck is neither a commit nor a failed one finishing while lines wait. A disk that
        # refuses commits (full, read-only) counts failures: that gateway is alive, says so in
        # its status, and a restart would not mend the disk (it would lose what waits in RAM).
        c = self.committer.statistics()
        mark = (c["commits"], c["failures"])
        now = time.monotonic()
        if c["pending_lines"] == 0 or mark != self._commit_mark:
            self._commit_mark, self._commit_moved = mark, now
        elif now - self._commit_moved > self.commit_stall_s:
            return (f"spool.commit stuck: {c['pending_lines']} lines waiting and no commit "
                    f"finished for {now - self._commit_moved:.0f}s")
        return None

    def _status_line(self) -> str:
        s = self.status()
        line = (f"mqtt={s['mqtt']['state']} influx={s['influx']['state']} "
                f"spool_rows={s['spool']['rows']} received={s['counts']['received']} "
                f"written={s['counts']['written']}")
        failures = s["spool"]["commit_failures"]
        return f"{line} commit_failures={failures}" if failures else line

    async def _notify(self, server: _QuietServer | None) -> None:
        """READY=1 once the tasks run and the API listens; then STATUS every STATUS_S and,
        when systemd watches (WatchdogSec=), WATCHDOG=1 every half interval while alive()."""
        notifier = self.notifier
        if server is not None:
            await server.listening.wait()
        notifier.ready(self._status_line())
        watchdog_s = notifier.watchdog_s
        log.info("systemd: ready, watchdog=%s", f"{watchdog_s:g}s" if watchdog_s else "off")
        loop = asyncio.get_running_loop()
        period = watchdog_s / 2 if watchdog_s else STATUS_S
        self._loop_late_limit_s = period
        next_status = loop.time() + STATUS_S
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            now = loop.time()
            # A wake-up this late means the loop did nothing else for that long either.
            self._loop_late_s = now - due
            if watchdog_s:
                self._watchdog_tick()
            if now >= next_status:
                next_status = now + STATUS_S
                notifier.status(self._status_line() if self._not_alive is None
                                else f"not alive: {self._not_alive}")

    def _watchdog_tick(self) -> None:
        problem = self.why_not_alive()
        if problem is not None:
            self.watchdog_skips += 1
            if self._not_alive is None:
                log.error("watchdog: not alive, WATCHDOG=1 withheld (systemd restarts the "
                          "gateway after WatchdogSec): %s", problem)
                self.notifier.status(f"not alive: {problem}")
            self._not_alive = problem
            return
        if self._not_alive is not None:
            log.warning("watchdog: alive again (was: %s)", self._not_alive)
            self._not_alive = None
        self.notifier.watchdog()
        self.watchdog_pings += 1

    async def _health_report(self) -> None:
        """A ``gateway_health`` point at liveness's report rate, through the spool."""
        while True:
            await self.clock.sleep(self.config.liveness.report_interval_s)
            self._emit([health_point(self.status(), now_ns=self.clock.now_ns())])

    async def _housekeeping(self) -> None:
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            if time.monotonic() - last_prune > 600:
                await self.spool.prune_seen(time.time_ns() - SEEN_KEEP_NS)
                last_prune = time.monotonic()
            s = self.status()
            log.info(
                "summary received=%d readings=%d rejected=%d spooled=%d written=%d "
                "spool_rows=%d mqtt=%s influx=%s",
                s["counts"]["received"], s["counts"]["readings"], s["counts"]["rejected"],
                s["counts"]["spooled"], s["counts"]["written"], s["spool"]["rows"],
                s["mqtt"]["state"], s["influx"]["state"],
            )


def _cause_id(cause: str | None, cfg: Any) -> str | None:
    """The outage's cause in Bahasa Indonesia, for the people who read the alerts."""
    if cause is None:
        return None
    if cause.startswith("no reading for"):
        return f"tidak ada data selama {cfg.missed_intervals:g} kali interval laporan"
    if "offline" in cause.lower():
        return f"perangkat melaporkan dirinya offline ({cause})"
    return cause


async def _cancel(task: asyncio.Task[Any]) -> None:
    # asyncio.wait does not raise the task's CancelledError, so our own cancellation (if any)
    # still propagates; a real failure of the task surfaces through the TaskGroup.
    task.cancel()
    await asyncio.wait([task])
