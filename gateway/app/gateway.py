"""The composition root: the parts built from the config, one TaskGroup, an orderly shutdown.

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
``alerts.deliver`` sends the notifications (webhooks, Telegram) from the durable outbox;
``flood.watch`` says when a polder's sensor has gone quiet (the flood watch judges every
polder reading on the ingest path, :mod:`gateway.park.flood`);
``history.flush`` writes the charts' rollups to ``history.sqlite3``;
``events.pump`` turns new readings and the park's summary into the pages' live events;
``api.serve`` is the status API and the pages on plain HTTP, ``api.serve_https`` on HTTPS
(api.tls; gateway/web/server.py holds the caps and timeouts);
``systemd.notify`` (only under systemd, :mod:`gateway.app.watchdog`) sends READY=1 once the API
listens, a STATUS line at the summary's rate, and WATCHDOG=1 only while the gateway is alive.

Shutdown (SIGTERM, SIGINT): stop reading MQTT, commit what was received and acknowledge it,
say goodbye to the broker (the session stays), deliver what InfluxDB accepts within
``shutdown_grace_s``, and stop. Whatever is not delivered stays in the spool for next time.
systemd hears STOPPING=1 first, with how long the stop may take. Files are closed by
``__aexit__``, whether the run ended by a stop or by a failed task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.app.sdnotify import Notifier
from gateway.app.status import Parts, build_status
from gateway.app.watchdog import Watchdog
from gateway.config import Config
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.core.disk import DiskHealth
from gateway.core.disk import Transition as DiskTransition
from gateway.core.errors import SpoolError
from gateway.core.salvage import TableSalvage, set_aside
from gateway.core.salvage import check as check_file
from gateway.core.status import (
    DeviceView,
    OutageView,
    ParkSummary,
    PolderList,
    PolderView,
    ResidentView,
    SiteView,
    Status,
    SummaryGateway,
    SummarySpool,
)
from gateway.park.alerts import Alerter, Subject
from gateway.park.flood import FloodWatch, PolderEvent, PolderState
from gateway.park.health import health_point
from gateway.park.history import History, Tier
from gateway.park.liveness import (
    BROKER_DOWN,
    DEFAULT_INTERVAL_S,
    PORT_GONE,
    ComponentTransition,
    Liveness,
    Polled,
    Transition,
)
from gateway.park.outbox import FILE_NAME as OUTBOX_FILE
from gateway.park.outbox import Outbox
from gateway.park.registry import Device, Registry
from gateway.park.resident import public_series
from gateway.park.siren import GpioLine, Siren, Switch
from gateway.park.state_topics import StatePublisher, gateway_status_topic
from gateway.park.summary import SummaryPublisher
from gateway.park.views import ParkViews
from gateway.park.wifi_usage import WifiUsage
from gateway.pipeline import Committer, Pipeline
from gateway.pipeline.timesync import ClockTimeSource, TimeSource, TimeSync
from gateway.sources.modbus import ModbusBus, SlaveSpec
from gateway.sources.mqtt import MqttSource
from gateway.sources.port import PortState
from gateway.sources.serial import SerialLineSource
from gateway.store.forwarder import Forwarder
from gateway.store.influx import InfluxWriter
from gateway.store.spool import FILE_NAME as SPOOL_FILE
from gateway.store.spool import SeenLookup, Spool
from gateway.web.api import create_app
from gateway.web.auth import OperatorAuth, file_store
from gateway.web.events import EventHub
from gateway.web.live import LiveFeed
from gateway.web.metrics import render as render_metrics
from gateway.web.server import ApiServers, QuietServer, raise_file_limit

log = logging.getLogger(__name__)

__version__ = "0.1.0"

STATE_FILE = "state.sqlite3"
HISTORY_FILE = "history.sqlite3"
SEEN_KEEP_NS = 3600 * 10**9
HOUSEKEEPING_S = 60.0
# What a stop may take beyond shutdown_grace_s (MQTT goodbye, the API, the spool's checkpoint):
# sent as EXTEND_TIMEOUT_USEC, so a grace longer than the unit's TimeoutStopSec still fits.
STOP_MARGIN_S = 20.0
_QuietServer = QuietServer  # the API's server class (gateway/web/server.py); tests patch it here


class Gateway:
    """The composition root: the parts built from the config, run in one TaskGroup.

    ``async with Gateway(config) as gateway: await gateway.run(stop)``. Entering opens the
    files (spool, state, history) and builds every part; leaving closes all of them in reverse
    order, also when a task failed or the start did. The views, live events, status and
    watchdog live in their parts; this class only wires them and runs them.
    """

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 notifier: Notifier | None = None,
                 time_source: TimeSource | None = None) -> None:
        # First, before any thread starts: it takes NOTIFY_SOCKET & co. out of os.environ.
        self.notifier = notifier if notifier is not None else Notifier.from_environment(unset=True)
        self.config = config
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._time_source = time_source
        if time_source is None and clock is not None:
            self._time_source = ClockTimeSource(self.clock)
        self.started_ns = self.clock.now_ns()
        self._started_mono = SYSTEM_CLOCK.monotonic()
        self._exit = contextlib.AsyncExitStack()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self.own_points = 0
        self.stopping = False

    # -- wiring --------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        try:
            self._build(self._exit)
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exit.aclose()

    def _build(self, exit: contextlib.AsyncExitStack) -> None:
        """Every part, from the config; each file registered for closing as it is opened."""
        config, clock = self.config, self.clock
        exit.callback(self.notifier.close)
        with contextlib.suppress(OSError):  # a card that refuses even this: DiskHealth says so
            config.data_dir.mkdir(parents=True, exist_ok=True)
        self.disk = DiskHealth(config.data_dir, min_free_bytes=config.spool.min_free_bytes,
                               clock=clock)
        damaged = self._set_aside_damaged()
        spool_path = config.data_dir / SPOOL_FILE
        self.spool = Spool.open(
            spool_path,
            disk=self.disk,
            min_free_bytes=config.spool.min_free_bytes,
            max_bytes=config.spool.max_bytes,
            dead_letter_max_rows=config.spool.dead_letter_max_rows,
            quarantine_max_rows=config.spool.quarantine_max_rows,
            held_max_rows=config.clock.held_max_rows,
            unsynced_max_rows=config.clock.unsynced_max_rows,
        )
        exit.push_async_callback(self._close_spool)
        if SPOOL_FILE in damaged:
            self._salvaged(SPOOL_FILE, damaged[SPOOL_FILE], "spool", self.spool.db.salvage_from)
        self.seen = SeenLookup(spool_path)
        exit.callback(self.seen.close)
        self.timesync = TimeSync.from_config(config.clock, source=self._time_source,
                                             spool=self.spool, clock=clock)
        self.pipeline = Pipeline.from_config(config, time_sync=self.timesync, clock=clock)
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
        exit.push_async_callback(self.writer.aclose)
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
        self.registry = Registry(config.data_dir / STATE_FILE, disk=self.disk)
        exit.callback(self.registry.close)
        if STATE_FILE in damaged:
            self._salvaged(STATE_FILE, damaged[STATE_FILE], None, self.registry.salvage_from)
        self.liveness = Liveness(
            registry=self.registry, config=config.liveness, devices=config.devices,
            gateway_id=config.gateway.id, site=config.gateway.site, clock=clock,
            emit=self._emit, discovery=self.pipeline.discovery,
            log_interval_s=config.ingest.log_interval_s,
        )
        self.pipeline.on_readings.append(self.liveness.readings)
        self.wifi = WifiUsage(config=config.wifi, devices=config.devices,
                              gateway_id=config.gateway.id, site=config.gateway.site,
                              registry=self.registry, clock=clock, emit=self._emit)
        self.pipeline.on_readings.append(self.wifi.readings)
        self.liveness.forget_listeners.append(lambda d, why: self.wifi.forget(d.id))
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
            on_link=self._broker_link,
        )
        self.states = StatePublisher(liveness=self.liveness, publish=self.mqtt.publish)
        self.summary = SummaryPublisher(
            site=config.gateway.site, build=self.park_summary, publish=self.mqtt.publish,
            clock=clock, min_interval_s=config.liveness.summary_min_interval_s,
            every_s=config.liveness.report_interval_s)
        if publish_states:
            self.liveness.listeners.append(self.states.transition)
            self.liveness.forget_listeners.append(self.states.forgotten)
        self.outbox = Outbox(config.data_dir / OUTBOX_FILE, disk=self.disk)
        exit.callback(self.outbox.close)
        if OUTBOX_FILE in damaged:  # before the alerter reads it back
            self._salvaged(OUTBOX_FILE, damaged[OUTBOX_FILE], None, self.outbox.salvage_from)
        self.alerter = Alerter(config.alerts, clock=clock, gateway_id=config.gateway.id,
                               site=config.gateway.site, outbox=self.outbox)
        exit.push_async_callback(self.alerter.aclose)
        self.flood = FloodWatch(config.polder, clock=clock, site=config.gateway.site,
                                gateway_id=config.gateway.id, notify=self._polder_alert,
                                emit=self._emit,
                                save=lambda state: self.registry.put_json("polder", state))
        self.flood.restore(self.registry.get_json("polder"))
        self.pipeline.on_readings.append(self.flood.readings)
        self.disk.listeners.append(self._disk_alert)
        if self.disk.state != "ok":  # already full while the files were opened
            self._disk_alert(DiskTransition(old="ok", new=self.disk.state,
                                            at_ns=clock.now_ns(), detail="at start"))
        self.liveness.listeners.append(self._alert)
        self.liveness.forget_listeners.append(lambda d, why: self.alerter.forget(d.id))
        self.serial = [
            SerialLineSource(
                name=s.name, port=s.port, baudrate=s.baudrate,
                options=config.serial_options(i), max_line_bytes=s.max_line_bytes,
                pipeline=self.pipeline, committer=self.committer,
                reopen_min_s=s.reopen_min_s, reopen_max_s=s.reopen_max_s,
                on_port_state=self._port_state(f"serial:{s.name}"),
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
                on_port_state=self._port_state(f"bus:{b.name}"),
            )
            for b in config.modbus
        ]
        self._watch_polled(config)
        self.sirens = self._sirens(config, exit)
        self.liveness.add_link("broker", self._fed_over_mqtt)
        self.liveness.component_listeners.append(self._component_alert)
        self.history: History | None = None
        if config.history.enabled:
            self.history = History(
                config.data_dir / HISTORY_FILE, clock=clock,
                tiers=[Tier(t.step_s, t.keep_s) for t in config.history.tiers],
                max_series=config.history.max_series, disk=self.disk)
            exit.callback(self.history.close)
            self.pipeline.on_readings.append(self.history.readings)
            history = self.history
            self.liveness.forget_listeners.append(lambda d, why: history.forget(d.id))
        self.views = ParkViews(config=config, liveness=self.liveness, registry=self.registry,
                               wifi=self.wifi, clock=clock, flood=self.flood,
                               sirens=self.sirens)
        self._public_series = public_series(config.pages, config.gateway.site,
                                            config.polder[0] if config.polder else None)
        self.events = EventHub(max_clients=config.api.sse_max_clients,
                               keepalive_s=config.api.sse_keepalive_s)
        self.live = LiveFeed(events=self.events, liveness=self.liveness, history=self.history,
                             resident=self.views.resident, site=config.gateway.site,
                             clock=clock)
        self.pipeline.on_readings.append(self.live.readings)
        self.liveness.listeners.append(self.live.transition)
        token = config.api.operator_token
        load_sessions, save_sessions = file_store(config.data_dir / "sessions.json")
        self.auth = OperatorAuth(token.get_secret_value() if token else None,
                                 max_age_s=config.api.session_max_age_s,
                                 attempts=config.api.token_attempts,
                                 window_s=config.api.token_window_s,
                                 load=load_sessions, save=save_sessions)
        self.app = create_app(self, config=config.api, auth=self.auth, events=self.events)
        self.api_servers: ApiServers | None = None
        # A committer that neither commits nor fails for this long while lines wait is stuck.
        spool_cfg = config.spool
        # Real time even under a test's FakeClock: a stuck disk or loop is a real-time matter.
        self.watchdog = Watchdog(
            notifier=self.notifier, tasks=self._tasks, committer=self.committer,
            commit_stall_s=max(30.0, 10 * max(spool_cfg.commit_interval_s,
                                              spool_cfg.unacked_commit_interval_s)),
            status_line=self._status_line, clock=SYSTEM_CLOCK)
        self._parts = Parts(
            config=config, version=__version__, spool=self.spool, forwarder=self.forwarder,
            mqtt=self.mqtt, pipeline=self.pipeline, committer=self.committer,
            liveness=self.liveness, wifi=self.wifi, timesync=self.timesync,
            alerter=self.alerter, serial=self.serial, modbus=self.modbus, disk=self.disk)

    def _set_aside_damaged(self) -> dict[str, tuple[Path, str]]:
        """Each SQLite file checked before it is opened; a damaged one is moved aside (its
        name, where it went, what SQLite said). The history is derived: it starts fresh here.
        The spool, the state and the alerts' outbox are salvaged into their fresh files once
        those are open."""
        damaged: dict[str, tuple[Path, str]] = {}
        for name in (SPOOL_FILE, STATE_FILE, HISTORY_FILE, OUTBOX_FILE):
            path = self.config.data_dir / name
            problem = check_file(path)
            if problem is None:
                continue
            aside = set_aside(path, now=datetime.now(UTC))
            damaged[name] = (aside, problem)
            if name == HISTORY_FILE:
                log.error("damaged file %s (%s): set aside as %s; the charts start fresh (the "
                          "readings themselves are in InfluxDB)", path, problem, aside.name)
                self.disk.damaged(file="history", action="set_aside", detail=problem,
                                  set_aside_as=aside.name)
        return damaged

    def _salvaged(self, name: str, damaged: tuple[Path, str], main: str | None,
                  salvage_from: Callable[[Path], list[TableSalvage]]) -> None:
        """What could be read of a damaged file, copied into its fresh one: logged, noticed.
        The counts are ``main``'s (the spool's unsent lines), or all tables' together."""
        aside, problem = damaged
        path = self.config.data_dir / name
        try:
            tables = salvage_from(aside)
        except sqlite3.Error as exc:  # the fresh file refused (a full card): nothing copied
            tables = [TableSalvage(main or "all", 0, None, f"copy failed: {exc}")]
        counted = [t for t in tables if main is None or t.table == main]
        copied = sum(t.copied for t in counted)
        known = [t.lost for t in counted if t.lost is not None]
        lost = sum(known) if known else None
        counts = ", ".join(f"{t.table}={t.copied}" for t in tables if t.copied)
        log.error("damaged file %s (%s): set aside as %s; salvaged %s rows=%d lost=%s "
                  "(all tables: %s)", path, problem, aside.name, main or "all", copied,
                  "unknown" if lost is None else lost, counts or "none")
        self.disk.damaged(file=name.removesuffix(".sqlite3"), action="salvaged",
                          detail=problem, set_aside_as=aside.name, salvaged=copied, lost=lost)

    async def _close_spool(self) -> None:
        st = self.spool.statistics()
        await self.spool.close()
        log.info("gateway stopped: spool rows=%d left for next start (written=%d)", st.rows,
                 st.totals["written"])

    def _emit(self, lines: list[str]) -> None:
        """Points the gateway makes itself (device_status) take the readings' path."""
        if lines:
            self.own_points += len(lines)
            self.committer.add(self.pipeline.own(lines))

    def _connected(self) -> None:
        self.states.republish()
        self.summary.republish()

    def _alert(self, t: Transition) -> None:
        subject = Subject(t.device, t.name, t.kind, t.site, t.zone)
        if t.new == "offline":
            self.alerter.down(subject, t.at_ns, _cause_id(t.cause, self.config.liveness))
        elif t.new == "online" and t.old == "offline":
            self.alerter.up(subject, t.at_ns)
        elif t.new == "unmonitored" and t.old == "offline":
            # Nobody knows any more whether it recovered: its component's alert speaks now.
            self.alerter.forget(t.device)

    def _sirens(self, config: Config, exit: contextlib.AsyncExitStack) -> dict[str, Siren]:
        """Each polder's siren, switched through its Modbus bus or a GPIO line, following the
        flood watch's trusted levels."""
        buses = {b.name: b for b in self.modbus}
        sirens: dict[str, Siren] = {}
        for p in config.polder:
            cfg = p.siren
            if cfg is None:
                continue
            if cfg.kind == "modbus_coil":
                assert cfg.bus is not None
                assert cfg.unit is not None
                switch = _coil_switch(buses[cfg.bus], cfg.unit, cfg.coil)
            else:
                assert cfg.line is not None
                line = GpioLine(cfg.chip, cfg.line, active_low=cfg.active_low)
                exit.callback(line.close)
                switch = line.switch
            sirens[p.device] = Siren(p.device, cfg, switch=switch, clock=self.clock)
        if sirens:
            def levels(state: PolderState, trusted: bool) -> None:
                siren = sirens.get(state.id)
                if siren is not None:
                    siren.level(state.alert_level, trusted=trusted and not state.fault)
            self.flood.listeners.append(levels)
        return sirens

    def siren_command(self, polder: str, action: str, for_s: float) -> PolderView | None:
        """An operator's word to a polder's siren: silence (for ``for_s``), resume, test."""
        siren = self.sirens.get(polder)
        if siren is None:
            return None
        if action == "silence":
            siren.silence(for_s)
        elif action == "test":
            siren.test()
        else:
            siren.resume()
        return next(v for v in self.views.polders(operator=True).polders if v.id == polder)

    def _polder_alert(self, event: PolderEvent) -> None:
        """A polder's level, rise or sensor changed: to the alerts, with the people in the park
        now (the connected Wi-Fi clients)."""
        self.alerter.polder(event, wifi_clients=self.views.park_clients_now())

    def _watch_polled(self, config: Config) -> None:
        """Polled devices' expected intervals, and the links (ports) they are read through.

        A Modbus slave is expected every ``interval_s`` of its own and offline after its
        bus's ``offline_after`` missed polls, plus one round of the bus's answer timeouts
        (the bus asks its slaves in turn, so a silent neighbour delays the next poll).
        """
        for b in config.modbus:
            blocks = sum(len(s.blocks) for s in b.slaves)
            grace = blocks * (b.timeout_s + b.turnaround_s)
            for s in b.slaves:
                self.liveness.poll(s.device, Polled(
                    interval_s=s.interval_s, missed=b.offline_after, grace_s=grace,
                    kind=s.measurement, source=f"modbus {b.name} unit {s.unit}"))
            self.liveness.add_link(f"bus:{b.name}", [s.device for s in b.slaves])
        for i, (src, source) in enumerate(zip(config.serial, self.serial, strict=True)):
            opts = config.serial_options(i)
            if opts.device and not opts.device_key:
                self.liveness.poll(opts.device, Polled(
                    interval_s=src.interval_s or DEFAULT_INTERVAL_S, kind=opts.measurement,
                    source=f"serial {src.name}"))
            self.liveness.add_link(f"serial:{src.name}", _reads(source.devices))

    def _fed_over_mqtt(self, d: Device) -> bool:
        """Heard through the park's broker: every device but the gateway and those a serial or
        Modbus source reads."""
        if d.origin == "gateway" or self.liveness.is_polled(d.id):
            return False
        return not any(d.id in source.devices for source in self.serial)

    def _broker_link(self, up: bool, reason: str | None) -> None:
        """The gateway's own link to the broker: while it is down nobody can see the devices
        behind it, so they are unmonitored (not offline) and the broker has the outage."""
        if up:
            self.liveness.link_up("broker", "connected")
        else:
            self.liveness.link_down("broker", BROKER_DOWN, reason)

    def _port_state(self, component: str) -> Callable[[PortState, str | None], None]:
        """What a serial port's changes mean for liveness: gone → its devices unmonitored."""
        def changed(state: PortState, reason: str | None) -> None:
            if state == "open":
                self.liveness.link_up(component, "port_open")
            elif state in ("port_gone", "reopening"):
                self.liveness.link_down(component, PORT_GONE, reason)
        return changed

    def _disk_alert(self, t: DiskTransition) -> None:
        """The card refusing writes is an outage of the gateway's own part ``disk``."""
        cfg = self.config
        subject = Subject("disk", "SD card (data_dir)", "component", cfg.gateway.site, None)
        bad = ("disk_full", "io_error")
        if t.new in bad and t.old not in bad:
            cause = ("kartu SD penuh: data baru tidak bisa disimpan" if t.new == "disk_full"
                     else "kartu SD bermasalah (I/O error)")
            self.alerter.down(subject, t.at_ns, f"{cause} ({t.detail})")
        elif t.old in bad and t.new not in bad:
            self.alerter.up(subject, t.at_ns)

    def _component_alert(self, t: ComponentTransition) -> None:
        kind, _, name = t.component.partition(":")
        subject = Subject(t.component, name or t.component, kind, t.site, None)
        if t.up:
            self.alerter.up(subject, t.at_ns)
        else:
            self.alerter.down(subject, t.at_ns, _component_cause_id(t.cause, t.detail))

    # -- what the API reads (web.api.StatusProvider) ---------------------------------------

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def resident_view(self) -> ResidentView:
        return self.views.resident()

    def park_summary(self) -> ParkSummary:
        """The park in one message for the regency (garden/<site>/summary)."""
        cfg = self.config
        status = self.status()
        return self.views.summary(gateway=SummaryGateway(
            id=cfg.gateway.id, version=__version__,
            state="stopping" if self.stopping else "online",
            uptime_s=round(status.gateway.uptime_s, 1)),
            spool=SummarySpool(rows=status.spool.rows,
                               oldest_unsent_age_s=status.spool.oldest_unsent_age_s),
            clock_synced=status.clock.synced)

    def polder_view(self, *, operator: bool) -> PolderList:
        return self.views.polders(operator=operator)

    def devices_view(self, *, site: str | None = None, kind: str | None = None,
                     state: str | None = None, origin: Sequence[str] | None = None,
                     include_removed: bool = False, limit: int | None = None,
                     offset: int = 0) -> tuple[int, list[DeviceView]]:
        return self.views.devices(site=site, kind=kind, state=state, origin=origin,
                                  include_removed=include_removed, limit=limit, offset=offset)

    def forget_device(self, device: str) -> str:
        return self.liveness.forget(device)

    def acknowledge_disk_notice(self, notice_id: int) -> bool:
        return self.disk.acknowledge(notice_id)

    def outages_view(self, *, device: str | None = None, site: str | None = None,
                     since_ns: int | None = None, ongoing: bool | None = None,
                     limit: int = 100) -> list[OutageView]:
        return self.views.outages(device=device, site=site, since_ns=since_ns,
                                  ongoing=ongoing, limit=limit)

    def sites(self) -> list[str]:
        return self.views.sites()

    def site_view(self, site: str) -> SiteView | None:
        return self.views.site(site)

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

    @property
    def uptime_s(self) -> float:
        return SYSTEM_CLOCK.monotonic() - self._started_mono

    def status(self) -> Status:
        """A snapshot for the API, /metrics and gateway_health; reads statistics() only."""
        return build_status(
            self._parts, now_ns=SYSTEM_CLOCK.now_ns(),
            uptime_s=self.uptime_s,
            own_points=self.own_points, stopping=self.stopping,
            watchdog=self.watchdog.status(self.watchdog.why_not_alive()))

    def metrics_text(self) -> str:
        status = self.status()
        extra: dict[str, Any] = {
            "clock": status.clock.model_dump(), "events": self.events.statistics(),
            "auth": self.auth.statistics(),
            "discovery": {**self.pipeline.discovery.statistics(),
                          "not_kept": self.pipeline.refused_not_kept},
            "watchdog": {"alive": status.watchdog.alive, "skips": status.watchdog.skips}}
        if self.history is not None:
            extra["history"] = self.history.statistics()
        if self.flood.enabled:
            extra["polder"] = {"views": self.views.polders(operator=True).polders,
                               "judged": self.flood.statistics()}
        components = {link.component: not link.down for link in self.liveness.components()
                      if link.known}
        return render_metrics(status, self.devices_view()[1], extra, components)

    # -- systemd's watchdog ----------------------------------------------------------------

    def alive(self) -> bool:
        return self.watchdog.alive()

    def why_not_alive(self) -> str | None:
        return self.watchdog.why_not_alive()

    @property
    def watchdog_pings(self) -> int:
        return self.watchdog.pings

    @property
    def watchdog_skips(self) -> int:
        return self.watchdog.skips

    @property
    def commit_stall_s(self) -> float:
        return self.watchdog.commit_stall_s

    @commit_stall_s.setter
    def commit_stall_s(self, value: float) -> None:
        self.watchdog.commit_stall_s = value

    def _status_line(self) -> str:
        s = self.status()
        line = (f"mqtt={s.mqtt.state} influx={s.influx.state} spool_rows={s.spool.rows} "
                f"received={s.counts.received} written={s.counts.written}")
        failures = s.spool.commit_failures
        return f"{line} commit_failures={failures}" if failures else line

    # -- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Every long-lived task in one TaskGroup until ``stop``; then the orderly shutdown.

        Shutdown (SIGTERM, SIGINT): stop reading, commit what was received and acknowledge
        it, say goodbye to the broker (the session stays), deliver what InfluxDB accepts
        within ``shutdown_grace_s``; what is not delivered stays in the spool. Closing the
        files is ``__aexit__``'s, so it happens whether this returns or raises.
        """
        cfg = self.config
        servers: ApiServers | None = None
        gateway_down = self.liveness.start()
        self._exit.callback(self.liveness.stop)
        self.wifi.restore()
        if gateway_down is not None and gateway_down.end_ns is not None:
            gw = self.liveness.devices[cfg.gateway.id]
            self.alerter.gateway_was_down(Subject(gw.id, gw.name, gw.kind, gw.site, gw.zone),
                                          gateway_down.start_ns, gateway_down.end_ns)
        async with asyncio.TaskGroup() as tg:
            def start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
                task = tg.create_task(coro, name=name)
                self._tasks[name] = task
                return task

            commit = start(self.committer.run(), "spool.commit")
            forward: asyncio.Task[None] | None = None
            if cfg.influx.enabled:
                forward = start(self.forwarder.run(), f"influx[{cfg.influx.url}].forward")
            else:
                self.forwarder.disable()
                log.warning("influx.enabled is false: readings stay in the spool (%s) and the "
                            "local history; nothing goes to InfluxDB", cfg.data_dir)
            receive = start(self.mqtt.run(), f"mqtt[{self.mqtt.broker}].receive")
            house = start(self._housekeeping(), "gateway.housekeeping")
            clock_watch = start(self.timesync.run(), "clock.watch")
            watch = start(self.liveness.run(), "liveness.watch")
            alerts = start(self.alerter.run(), "alerts.deliver")
            flood = start(self.flood.run(), "flood.watch")
            summary = (start(self.summary.run(), "summary.publish")
                       if cfg.liveness.publish_mqtt else None)
            sirens = [start(siren.run(), f"siren[{polder}]")
                      for polder, siren in self.sirens.items()]
            wifi = start(self.wifi.run(), "wifi.report")
            pump = start(self.live.run(), "events.pump")
            health = start(self._health_report(), "health.report")
            history = (start(self.history.run(cfg.history.flush_interval_s), "history.flush")
                       if self.history is not None else None)
            serial = [start(s.run(), f"serial[{s.name}].read") for s in self.serial]
            serial += [start(b.run(), f"modbus[{b.name}].poll") for b in self.modbus]
            if cfg.api.enabled:
                servers = self._api_servers()
                for i, one in enumerate(servers.servers):
                    start(one.serve(), "api.serve" if i == 0 else "api.serve_https")
            notify = (tg.create_task(
                self.watchdog.run(servers.wait_listening() if servers is not None else None),
                name="systemd.notify") if self.notifier.enabled else None)
            log.info("gateway started id=%s site=%s data_dir=%s", cfg.gateway.id,
                     cfg.gateway.site, cfg.data_dir)
            await stop.wait()
            self.stopping = True
            deadline = SYSTEM_CLOCK.monotonic() + cfg.shutdown_grace_s
            log.info("gateway stopping: grace=%.1fs", cfg.shutdown_grace_s)
            self.notifier.stopping(f"stopping: delivering for up to {cfg.shutdown_grace_s:g}s",
                                   extend_timeout_s=cfg.shutdown_grace_s + STOP_MARGIN_S)
            if notify is not None:
                await _cancel(notify)
            self.mqtt.pause()
            for task in serial:
                await _cancel(task)
            await _cancel(watch)
            await _cancel(flood)
            if summary is not None:
                await _cancel(summary)
            for task in sirens:  # a siren that sounds keeps sounding: nobody can stop it now
                await _cancel(task)
            await _cancel(wifi)
            await _cancel(health)
            self.wifi.save()
            await _cancel(commit)
            await self.committer.flush()
            await self.mqtt.close(timeout=min(2.0, max(0.1, deadline - SYSTEM_CLOCK.monotonic())))
            await _cancel(receive)
            if forward is not None:
                await _cancel(forward)
                await self.forwarder.drain(deadline)
            await _cancel(house)
            await _cancel(clock_watch)
            await _cancel(alerts)
            await _cancel(pump)
            if history is not None:
                await _cancel(history)  # it writes what it holds once more
            self.events.close()  # open pages' streams end; their browsers come back later
            if servers is not None:
                servers.stop()

    def _api_servers(self) -> ApiServers:
        """The API's listeners: plain HTTP, and HTTPS when api.tls is on (cert made if asked)."""
        api = self.config.api
        limit = raise_file_limit()
        context = None
        if api.tls is not None and api.tls.enabled:
            # Imported only when HTTPS is on: the certificate library costs ~10 MB of RSS.
            from gateway.web.tls import certificate_for, server_context
            cert = certificate_for(api.tls, self.config.data_dir)
            if cert is not None:
                context = server_context(cert.cert, cert.key)
                log.info("api: HTTPS on port %d, certificate %s%s, SHA-256 fingerprint %s",
                         api.tls.port, cert.cert,
                         " (made now, self-signed)" if cert.made else "", cert.fingerprint)
        self.api_servers = ApiServers(self.app, api, history_is_public=self.history_is_public,
                                      tls_context=context)
        log.info("api: at most %d connections (%d per client address, open-file limit %d), "
                 "request head within %gs", self.api_servers.guard.max_connections,
                 api.max_connections_per_client, limit, api.header_timeout_s)
        return self.api_servers

    async def _health_report(self) -> None:
        """A ``gateway_health`` point at liveness's report rate, through the spool."""
        while True:
            await self.clock.sleep(self.config.liveness.report_interval_s)
            self._emit([health_point(self.status(), now_ns=self.clock.now_ns())])

    async def _housekeeping(self) -> None:
        last_prune = SYSTEM_CLOCK.monotonic()
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.disk.check_space()
            if SYSTEM_CLOCK.monotonic() - last_prune > 600:
                # A full card refuses it (reported by the spool): try again next time.
                with contextlib.suppress(SpoolError):
                    await self.spool.prune_seen(SYSTEM_CLOCK.now_ns() - SEEN_KEEP_NS)
                last_prune = SYSTEM_CLOCK.monotonic()
            s = self.status()
            log.info(
                "summary received=%d readings=%d rejected=%d spooled=%d written=%d "
                "spool_rows=%d mqtt=%s influx=%s disk=%s free=%s",
                s.counts.received, s.counts.readings, s.counts.rejected,
                s.counts.spooled, s.counts.written, s.spool.rows, s.mqtt.state, s.influx.state,
                s.disk.state, s.disk.free_bytes,
            )


def _coil_switch(bus: ModbusBus, unit: int, coil: int) -> Switch:
    async def switch(on: bool) -> str | None:
        return await bus.write_coil(unit, coil, on)
    return switch


def _cause_id(cause: str | None, cfg: Any) -> str | None:
    """The outage's cause in Bahasa Indonesia, for the people who read the alerts."""
    if cause is None:
        return None
    if cause.startswith("no reading for"):
        missed = cause.split()[3] if len(cause.split()) > 3 else f"{cfg.missed_intervals:g}"
        return f"tidak ada data selama {missed} kali interval laporan"
    if "offline" in cause.lower():
        return f"perangkat melaporkan dirinya offline ({cause})"
    return cause


def _reads(seen: set[str]) -> Callable[[Device], bool]:
    """Whether a device is one a line source has read (the set grows as lines come)."""
    def member(d: Device) -> bool:
        return d.id in seen
    return member


def _component_cause_id(cause: str | None, detail: str | None) -> str | None:
    """A component's outage cause in Bahasa Indonesia."""
    if cause == PORT_GONE:
        text = "adaptor USB dicabut atau hilang; perangkat di belakangnya tidak terpantau"
        return f"{text} ({detail})" if detail else text
    if cause == BROKER_DOWN:
        text = "broker MQTT taman tidak terjangkau; perangkat MQTT tidak terpantau"
        return f"{text} ({detail})" if detail else text
    return cause


async def _cancel(task: asyncio.Task[Any]) -> None:
    # asyncio.wait does not raise the task's CancelledError, so our own cancellation (if any)
    # still propagates; a real failure of the task surfaces through the TaskGroup.
    task.cancel()
    await asyncio.wait([task])
