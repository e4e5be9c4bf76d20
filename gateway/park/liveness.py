"""Liveness: which device is online, offline or unknown, since when, and why.

Rules (docs/operator.md "Liveness, outages and uptime"):

- ``unknown``: never seen (no reading, no presence message) since the registry knew it.
- ``online``: on every good reading and every presence "online" (native ``status``, Tasmota
  ``LWT``, ESPHome ``status``), at once.
- ``offline``: when ``missed_intervals`` expected reports in a row did not come (the outage
  starts when the first missed report was due), or when the device itself said "offline" and
  nothing contradicted it for ``hold_s`` (the outage starts when it said so). The hold damps
  flapping: a device that drops and reconnects within the hold records no outage.
- ``unmonitored``: the gateway cannot see the device because a *link* to it is gone (its bus's
  USB adapter: cause ``port_gone``; later the park's broker: ``broker_down``). At once, for
  every device read through that link, whatever its state was; no device outage is opened (an
  open one is closed: from now on nobody knows), and the time is *unobserved* in its uptime
  (neither up nor down). The link itself is one of the gateway's *components*
  (``bus:<name>``, ``serial:<name>``): its outage is recorded (kind ``component``) and the
  component listeners (the alerter) hear of it. When the link is back the device stays
  ``unmonitored`` until it answers (``online``) or until its silence, counted from the link's
  return, makes it ``offline`` as usual; a device never seen goes back to ``unknown``.

A polled device (a Modbus slave, a serial source's fixed device) is registered with
:meth:`Liveness.poll` before :meth:`Liveness.start`: its expected interval is its poll interval
unless the device list sets ``interval_s``, and it counts as configured even when the device
list does not name it. Links are registered with :meth:`Liveness.add_link` and reported with
:meth:`Liveness.link_down` / :meth:`Liveness.link_up`; any cause works the same way.

Every transition to offline opens an outage record, every return closes it; listeners (the
alerter, the MQTT state topics, the ``device_status`` points) hear of each transition.

A restart does not fake an outage: states are restored from the registry, and a device's
silence is counted from when the gateway started, not from before it stopped. The time the
gateway itself was down (from its last heartbeat, or its clean stop, to the next start) is
recorded as the gateway's outage, and uptime leaves that time out for every other device.

Everything here runs on the event loop: :meth:`Liveness.reading` and :meth:`Liveness.presence`
are plain functions on the ingest path (a dict lookup and two assignments when nothing
changes); :meth:`Liveness.run` is the one task that waits, on the injected :class:`Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devices.reading import DecodeError, FieldValue, Reading
from gateway.config import DeviceConfig, LivenessConfig
from gateway.core.clock import Clock
from gateway.core.ratelog import RateLimitedLog
from gateway.park.discovery import OPERATOR, Discovery
from gateway.park.registry import KEEP_OUTAGES_NS, Device, Outage, Registry, uptime_parts
from gateway.store.lineproto import encode

log = logging.getLogger(__name__)

# device_status's state_code: 0 unknown, 1 online, 2 offline, 3 unmonitored.
STATE_CODES = {"unknown": 0, "online": 1, "offline": 2, "unmonitored": 3}

NS = 10**9
DAY_NS = 86400 * NS
WINDOWS = {"24h": DAY_NS, "7d": 7 * DAY_NS, "30d": 30 * DAY_NS}
MAX_DEVICES = 10_000
# A device in the device list without interval_s, and not polled: expected this often.
DEFAULT_INTERVAL_S = 60.0
# Why a device is unmonitored (the link that is gone); issue 14 adds "broker_down".
PORT_GONE = "port_gone"
BROKER_DOWN = "broker_down"


@dataclass(frozen=True, slots=True)
class Transition:
    device: str
    name: str
    kind: str | None
    site: str
    zone: str | None
    old: str
    new: str
    # When the new state began: the outage's start for "offline", the sighting for "online".
    at_ns: int
    cause: str | None
    # For a return to "online": when the outage began.
    down_since_ns: int | None = None


Listener = Callable[[Transition], None]


@dataclass(frozen=True, slots=True)
class Polled:
    """A device whose source asks it (a Modbus slave) or hears it at a known rate."""

    interval_s: float
    # Missed intervals until offline; None: liveness.missed_intervals.
    missed: float | None = None
    # Added to the silence: a bus busy timing out its other slaves delays this one's poll.
    grace_s: float = 0.0
    kind: str | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class ComponentTransition:
    """A link of the gateway's own (``bus:<name>``...) went down or came back."""

    component: str
    site: str
    up: bool
    at_ns: int
    cause: str | None
    detail: str | None = None
    # For a return: when the outage began.
    down_since_ns: int | None = None


ComponentListener = Callable[[ComponentTransition], None]


@dataclass
class Link:
    """One component between the gateway and some devices; ``members`` says which."""

    component: str
    members: Callable[[Device], bool]
    down: bool = False
    known: bool = False
    since_ns: int | None = None
    cause: str | None = None
    detail: str | None = None
    outage_id: int | None = None


class Liveness:
    def __init__(
        self,
        *,
        registry: Registry,
        config: LivenessConfig,
        devices: Sequence[DeviceConfig],
        gateway_id: str,
        site: str,
        clock: Clock,
        emit: Callable[[list[str]], None] | None = None,
        discovery: Discovery | None = None,
        log_interval_s: float = 60.0,
    ) -> None:
        self._registry = registry
        # Who may become a discovered device (the pipeline admits, this table follows).
        self.discovery = discovery
        if discovery is not None:
            discovery.on_forget.append(self._forgotten)
        self._config = config
        self._configured = {d.id: d for d in devices}
        self.gateway_id = gateway_id
        self.site = site
        self._clock = clock
        self._emit = emit
        # At most one line a minute (ingest.log_interval_s) however many ids a publisher
        # invents, with the count of those not logged.
        self._discovery_log = RateLimitedLog(log, log_interval_s, clock=clock)
        self.listeners: list[Listener] = []
        self.component_listeners: list[ComponentListener] = []
        # Who hears that a discovered device was forgotten (with why): its retained state
        # topic, its alert watch, its Wi-Fi usage go with it.
        self.forget_listeners: list[Callable[[Device, str], None]] = []
        self._polled: dict[str, Polled] = {}
        self.links: dict[str, Link] = {}
        self.devices: dict[str, Device] = {}
        self.started_ns = 0
        self.gateway_outage: Outage | None = None
        self._changed = asyncio.Event()
        self._wake_at: int | None = None
        self.transitions = 0
        self.reports = 0
        self.refused = 0

    # -- what the sources say (registered before start) ---------------------------------------

    def poll(self, device: str, spec: Polled) -> None:
        """``device`` is polled (or heard) at ``spec.interval_s``; call before :meth:`start`."""
        self._polled[device] = spec
        if self.discovery is not None:
            self.discovery.exempt(device)

    def is_polled(self, device: str) -> bool:
        """Whether a source asks ``device`` (a Modbus slave) or hears it at a set rate."""
        return device in self._polled

    def add_link(self, component: str, members: Callable[[Device], bool] | Iterable[str]
                 ) -> None:
        """Devices read through ``component`` (a predicate, or their ids)."""
        if callable(members):
            self.links[component] = Link(component, members)
            return
        ids = frozenset(members)

        def member(d: Device) -> bool:
            return d.id in ids

        self.links[component] = Link(component, member)

    def link_down(self, component: str, cause: str, detail: str | None = None) -> None:
        """``component`` is gone: its devices are unmonitored at once, its outage opens."""
        link = self.links.get(component)
        if link is None or link.down:
            if link is not None:
                link.detail = detail or link.detail
            return
        now = self._clock.now_ns()
        link.down, link.known, link.since_ns, link.cause, link.detail = (
            True, True, now, cause, detail)
        link.outage_id = self._registry.open_component_outage(component, self.site, now, cause)
        log.warning("component %s down cause=%s: %s; its devices are unmonitored", component,
                    cause, detail or "")
        for d in list(self.devices.values()):
            if self._watched(d) and link.members(d):
                self._unmonitored(d, now, cause)
        self._announce_component(ComponentTransition(component, self.site, False, now, cause,
                                                     detail))

    def link_up(self, component: str, cause: str = "back") -> None:
        """``component`` works again: its devices are watched again from now."""
        link = self.links.get(component)
        if link is None:
            return
        now = self._clock.now_ns()
        first, link.known = not link.known, True
        if not link.down:
            if first:  # devices left unmonitored by the last run are watched again
                self._release(link, now, cause)
            return
        down_since = link.since_ns
        if link.outage_id is not None:
            self._registry.close_outage(link.outage_id, now, cause)
        link.down, link.since_ns, link.cause, link.detail, link.outage_id = (
            False, now, None, None, None)
        log.info("component %s up again after %.1fs", component,
                 (now - (down_since or now)) / NS)
        self._release(link, now, cause)
        self._announce_component(ComponentTransition(component, self.site, True, now, cause,
                                                     None, down_since))

    def _release(self, link: Link, now: int, cause: str) -> None:
        for d in list(self.devices.values()):
            if d.state != "unmonitored" or not link.members(d) or self._blinded(d):
                continue
            if d.first_seen_ns is None:
                self._registry.close_unobserved(d.id, now)
                old = d.state
                d.state, d.since_ns, d.cause, d.dirty = "unknown", now, None, True
                self._announce(d, old, now, cause, None)
            else:
                d.watch_from_ns = now
                self._nudge(now + self._silence_ns(d))

    def _announce_component(self, t: ComponentTransition) -> None:
        self.transitions += 1
        for listener in self.component_listeners:
            listener(t)

    def _blinded(self, d: Device) -> bool:
        return self._blind_cause(d) is not None

    def _blind_cause(self, d: Device) -> str | None:
        for link in self.links.values():
            if link.down and link.members(d):
                return link.cause or "link_down"
        return None

    def _watched(self, d: Device) -> bool:
        return d.origin in ("config", "discovered") and d.id != self.gateway_id

    def components(self) -> list[Link]:
        return sorted(self.links.values(), key=lambda link: link.component)

    def _interval(self, cfg: DeviceConfig | None, device: str) -> float:
        if cfg is not None and cfg.interval_s is not None:
            return cfg.interval_s
        polled = self._polled.get(device)
        return polled.interval_s if polled is not None else DEFAULT_INTERVAL_S

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> Outage | None:
        """Restore the registry, record how long the gateway was down; returns that outage."""
        now = self._clock.now_ns()
        self.started_ns = now
        self.devices = self._registry.load()
        for dev_id, cfg in self._configured.items():
            interval = self._interval(cfg, dev_id)
            polled = self._polled.get(dev_id)
            d = self.devices.get(dev_id)
            if d is None or d.origin in ("discovered", "removed"):
                d = self.devices[dev_id] = d or Device(
                    id=dev_id, name=cfg.name or dev_id, kind=cfg.kind,
                    site=cfg.site or self.site, zone=cfg.zone, interval_s=interval,
                    source=cfg.source, origin="config")
            d.name, d.kind, d.zone = cfg.name or dev_id, cfg.kind, cfg.zone
            source = cfg.source or (polled.source if polled is not None else "") or d.source
            d.site, d.interval_s, d.source, d.origin = (cfg.site or self.site, interval,
                                                         source, "config")
            d.dirty = True
        for dev_id, spec in self._polled.items():
            if dev_id in self._configured or dev_id == self.gateway_id:
                continue
            # Configured by its bus or serial source: known from the start, never discovered.
            d = self.devices.get(dev_id)
            if d is None:
                d = self.devices[dev_id] = Device(
                    id=dev_id, name=dev_id, kind=spec.kind, site=self.site, zone=None,
                    interval_s=spec.interval_s, source=spec.source, origin="config")
            d.kind = d.kind or spec.kind
            d.interval_s, d.source, d.origin, d.dirty = (spec.interval_s, spec.source,
                                                         "config", True)
        for d in self.devices.values():
            if (d.origin == "config" and d.id not in self._configured
                    and d.id not in self._polled):
                d.origin, d.dirty = "removed", True
        gw = self.devices.get(self.gateway_id)
        if gw is None:
            gw = self.devices[self.gateway_id] = Device(
                id=self.gateway_id, name=f"Gateway {self.gateway_id}", kind="gateway",
                site=self.site, zone=None, interval_s=self._config.heartbeat_s, source="",
                origin="gateway", first_seen_ns=now)
        if self.discovery is not None:
            self.discovery.restore({d.id: d.last_seen_ns for d in self.devices.values()
                                    if d.origin == "discovered"}, now)
        self._close_stale_components(now)
        outage = self._gateway_was_down(gw, now)
        gw.state, gw.since_ns, gw.cause, gw.last_seen_ns, gw.dirty = "online", now, None, now, True
        self._registry.save(self.devices.values())
        self._registry.put(heartbeat_ns=now, stopped_ns=None, started_ns=now)
        self.gateway_outage = outage
        return outage

    def _close_stale_components(self, now: int) -> None:
        """A component outage left open by the last run ends when that run did; the sources
        say again at once whether the component is still down."""
        stale = self._registry.open_component_outages()
        if not stale:
            return
        stopped = self._registry.get("stopped_ns")
        end = stopped if stopped is not None else self._registry.get("heartbeat_ns")
        for o in stale:
            at = max(o.start_ns, min(end if end is not None else now, now))
            self._registry.close_outage(o.id, at, "gateway stopped")

    def _gateway_was_down(self, gw: Device, now: int) -> Outage | None:
        beat = self._registry.get("heartbeat_ns")
        stopped = self._registry.get("stopped_ns")
        if beat is None:
            return None
        start = stopped if stopped is not None else beat
        cause = ("gateway stopped" if stopped is not None
                 else "gateway lost power or crashed (time of its last heartbeat)")
        if now <= start:
            log.warning("gateway clock is behind its last heartbeat by %.0fs: no outage "
                        "recorded for the restart", (start - now) / NS)
            return None
        oid = self._registry.add_outage(gw, start, now, cause, "gateway started")
        log.info("gateway was down from=%d to=%d (%.0fs): %s", start, now, (now - start) / NS,
                 cause)
        # Not recorded (a full card): still reported, with id 0, to the alerts and the log.
        return Outage(oid or 0, gw.id, gw.site, gw.kind, start, now, cause, "gateway started")

    def stop(self) -> None:
        """A clean stop: the gateway's outage starts now, not at the last heartbeat."""
        now = self._clock.now_ns()
        self._registry.save(d for d in self.devices.values() if d.dirty)
        self._registry.put(heartbeat_ns=now, stopped_ns=now)

    # -- the ingest path -----------------------------------------------------------------

    def readings(self, readings: Sequence[Reading]) -> None:
        now = self._clock.now_ns()
        for r in readings:
            device = r.tag("device")
            if device is None:
                continue
            d = self.devices.get(device) or self._discover(device, r.tag("site"), r.measurement)
            if d is None:
                continue
            d.last_seen_ns = d.latest_ns = now
            if d.origin == "discovered" and self.discovery is not None:
                self.discovery.heard(device)
            d.latest.update(r.fields)
            d.dirty = True
            if d.first_seen_ns is None:
                d.first_seen_ns = now
            if d.pending_offline_ns is not None:
                d.pending_offline_ns = None
            if d.state != "online":
                self._online(d, now, "reading")

    def presence(self, device: str, site: str | None, online: bool, cause: str) -> None:
        now = self._clock.now_ns()
        d = self.devices.get(device) or self._discover(device, site, None)
        if d is None:
            return
        d.presence, d.presence_ns, d.dirty = ("online" if online else "offline"), now, True
        if d.origin == "discovered" and self.discovery is not None:
            self.discovery.heard(device)
        if online:
            d.last_seen_ns = now
            if d.first_seen_ns is None:
                d.first_seen_ns = now
            d.pending_offline_ns = None
            if d.state != "online":
                self._online(d, now, cause)
        elif d.state == "online" and d.pending_offline_ns is None:
            d.pending_offline_ns = now
            d.cause = cause
            self._nudge(now + int(self._config.hold_s * NS))
        elif d.state == "unknown":
            # Seen, and saying it is off: that is a state we know.
            d.first_seen_ns = d.first_seen_ns or now
            self._offline(d, now, cause)

    def _discover(self, device: str, site: str | None, kind: str | None) -> Device | None:
        if len(self.devices) >= MAX_DEVICES or (
                self.discovery is not None and device not in self.discovery):
            # Not admitted (or evicted again by the same message's next id): not tracked.
            self.refused += 1
            return None
        d = Device(id=device, name=device, kind=kind, site=site or self.site, zone=None,
                   interval_s=self._config.default_interval_s, source="", origin="discovered",
                   dirty=True)
        self.devices[device] = d
        self._discovery_log.info(("registry", "discovered"),
                                 "registry: discovered device=%s site=%s kind=%s", device,
                                 d.site, kind)
        return d

    def forget(self, device: str) -> str:
        """An operator forgets a discovered device: "forgotten", "unknown" (no such
        device) or "listed" (in the device list, or the gateway: never forgotten)."""
        d = self.devices.get(device)
        if d is None:
            return "unknown"
        if d.origin != "discovered":
            return "listed"
        if self.discovery is None or not self.discovery.forget(device, OPERATOR):
            self._forgotten(device, OPERATOR)
        return "forgotten"

    def _forgotten(self, device: str, why: str) -> None:
        """Discovery forgot ``device``: off the registry; an outage still open ends here
        (from now on nobody watches it), its history stays."""
        d = self.devices.get(device)
        if d is None or d.origin != "discovered":
            return
        del self.devices[device]
        now = self._clock.now_ns()
        if d.outage_id is not None:
            self._registry.close_outage(d.outage_id, now, f"forgotten ({why})")
        if d.state == "unmonitored":
            self._registry.close_unobserved(d.id, now)
        self._registry.delete(device)
        for listener in self.forget_listeners:
            listener(d, why)

    # -- transitions ---------------------------------------------------------------------

    def _online(self, d: Device, now: int, cause: str) -> None:
        old, down_since = d.state, None
        if old == "unmonitored":
            self._registry.close_unobserved(d.id, now)
            d.watch_from_ns = None
        if d.outage_id is not None:
            self._registry.close_outage(d.outage_id, now, cause)
            down_since = d.since_ns
            d.outage_id = None
        d.state, d.since_ns, d.cause, d.dirty = "online", now, None, True
        self._nudge(now + self._silence_ns(d))
        self._announce(d, old, now, cause, down_since)

    def _offline(self, d: Device, start: int, cause: str) -> None:
        old = d.state
        if old == "unmonitored":
            self._registry.close_unobserved(d.id, start)
            d.watch_from_ns = None
        d.outage_id = self._registry.open_outage(d, start, cause)
        d.state, d.since_ns, d.cause, d.pending_offline_ns, d.dirty = (
            "offline", start, cause, None, True)
        self._announce(d, old, start, cause, None)

    def _unmonitored(self, d: Device, now: int, cause: str) -> None:
        old = d.state
        if old == "unmonitored":
            return
        if d.outage_id is not None:
            # From now on nobody knows whether it is down: its outage ends here.
            self._registry.close_outage(d.outage_id, now, f"unmonitored ({cause})")
            d.outage_id = None
        self._registry.open_unobserved(d.id, now, cause)
        d.state, d.since_ns, d.cause, d.pending_offline_ns, d.watch_from_ns, d.dirty = (
            "unmonitored", now, cause, None, None, True)
        self._announce(d, old, now, cause, None)

    def _announce(self, d: Device, old: str, at: int, cause: str | None,
                  down_since: int | None) -> None:
        self.transitions += 1
        self._registry.save([d])
        if d.origin == "discovered":
            # Ids anyone can invent: at most a line a minute per kind of change, with a count.
            self._discovery_log.info(("transition", f"{old}->{d.state}"),
                                     "discovered device %s: %s -> %s cause=%s", d.id, old,
                                     d.state, cause)
        else:
            log.info("device %s: %s -> %s cause=%s", d.id, old, d.state, cause)
        t = Transition(d.id, d.name, d.kind, d.site, d.zone, old, d.state, at, cause,
                       down_since)
        for listener in self.listeners:
            listener(t)
        if self._emit is not None:
            self._emit(self._points([d], self._clock.now_ns()))

    def _missed(self, d: Device) -> float:
        polled = self._polled.get(d.id)
        if polled is not None and polled.missed is not None:
            return polled.missed
        return self._config.missed_intervals

    def _silence_ns(self, d: Device) -> int:
        polled = self._polled.get(d.id)
        grace = polled.grace_s if polled is not None else 0.0
        return int((self._missed(d) * d.interval_s + grace) * NS)

    def _deadline(self, d: Device) -> int | None:
        if d.origin == "removed" or d.id == self.gateway_id:
            return None
        if d.pending_offline_ns is not None:
            return d.pending_offline_ns + int(self._config.hold_s * NS)
        if d.state == "unmonitored":
            if d.first_seen_ns is None or self._blinded(d):
                return None
            return max(d.watch_from_ns or 0, self.started_ns) + self._silence_ns(d)
        if d.state == "online":
            seen = max(d.last_seen_ns or 0, self.started_ns)
            return seen + self._silence_ns(d)
        return None

    def check(self) -> int | None:
        """Apply every deadline that has passed; return the next one (or None)."""
        now = self._clock.now_ns()
        soonest: int | None = None
        for d in list(self.devices.values()):
            due = self._deadline(d)
            if due is None:
                continue
            if due > now:
                soonest = due if soonest is None else min(soonest, due)
                continue
            cause = f"no reading for {self._missed(d):g} intervals of {d.interval_s:g} s"
            if d.pending_offline_ns is not None:
                self._offline(d, d.pending_offline_ns, d.cause or "device reported offline")
            elif d.state == "unmonitored":
                # Its link came back and it did not answer: silent since the link's return.
                back = max(d.watch_from_ns or 0, self.started_ns)
                self._offline(d, min(back + int(d.interval_s * NS), now), cause)
            elif (blind := self._blind_cause(d)) is not None:
                # Heard once more while its link is down (a late line): not seen since.
                self._unmonitored(d, now, blind)
            else:
                missed = max(d.last_seen_ns or 0, self.started_ns)
                start = max(missed + int(d.interval_s * NS), self.started_ns)
                self._offline(d, min(start, now), cause)
        return soonest

    def _nudge(self, due: int) -> None:
        if self._wake_at is None or due < self._wake_at:
            self._changed.set()

    # -- the task ------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self._config
        now = self._clock.now_ns()
        next_report = now
        next_beat = now + int(cfg.heartbeat_s * NS)
        next_prune = now
        while True:
            if self.discovery is not None:
                self.discovery.sweep()
            soonest = self.check()
            now = self._clock.now_ns()
            if now >= next_report:
                if self._emit is not None:
                    self._emit(self._points(
                        [d for d in self.devices.values() if d.origin != "removed"], now))
                self.reports += 1
                next_report = now + int(cfg.report_interval_s * NS)
            if now >= next_beat:
                self.heartbeat(now)
                next_beat = now + int(cfg.heartbeat_s * NS)
            if now >= next_prune:
                self._registry.prune(now - KEEP_OUTAGES_NS)
                next_prune = now + DAY_NS
            wake = min(x for x in (soonest, next_report, next_beat, next_prune) if x is not None)
            self._wake_at = wake
            self._changed.clear()
            sleeper = asyncio.ensure_future(self._clock.sleep((wake - now) / NS))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in (sleeper, changed):
                    f.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await f
            self._wake_at = None

    def heartbeat(self, now: int) -> None:
        gw = self.devices.get(self.gateway_id)
        if gw is not None:
            gw.last_seen_ns, gw.dirty = now, True
        self._registry.save([d for d in self.devices.values() if d.dirty])
        self._registry.put(heartbeat_ns=now)

    # -- reports -------------------------------------------------------------------------

    def uptime(self, now: int, devices: Sequence[Device] | None = None
               ) -> dict[str, dict[str, float | None]]:
        """Uptime % per device over each window (None where nothing was observed)."""
        return self.uptime_observed(now, devices)[0]

    def uptime_observed(self, now: int, devices: Sequence[Device] | None = None
                        ) -> tuple[dict[str, dict[str, float | None]],
                                   dict[str, dict[str, float | None]]]:
        """Per device and window: uptime % of the observed time, and how much of the window
        was observed (%; the rest: before it was known, the gateway down, unmonitored)."""
        chosen = list(self.devices.values()) if devices is None else list(devices)
        spans = self._registry.intervals(now - max(WINDOWS.values()))
        unobserved = self._registry.unobserved(now - max(WINDOWS.values()))
        blind = spans.get(self.gateway_id, [])
        pct: dict[str, dict[str, float | None]] = {}
        seen: dict[str, dict[str, float | None]] = {}
        for d in chosen:
            own = spans.get(d.id, [])
            pct[d.id], seen[d.id] = {}, {}
            for name, width in WINDOWS.items():
                parts = uptime_parts(window_start_ns=now - width, now_ns=now,
                                     first_seen_ns=d.first_seen_ns, outages=own,
                                     gateway_down=[] if d.id == self.gateway_id else blind,
                                     unobserved=unobserved.get(d.id, ()))
                pct[d.id][name] = parts.pct
                seen[d.id][name] = round(100.0 * min(1.0, parts.observed_ns / width), 1)
        return pct, seen

    def site_uptime(self, site: str, now: int) -> dict[str, float | None]:
        """Time-weighted over the site's devices (not the gateway): all up time over all
        observed time."""
        spans = self._registry.intervals(now - max(WINDOWS.values()))
        unobserved = self._registry.unobserved(now - max(WINDOWS.values()))
        blind = spans.get(self.gateway_id, [])
        members = [d for d in self.devices.values()
                   if d.site == site and d.origin in ("config", "discovered")]
        result: dict[str, float | None] = {}
        for name, width in WINDOWS.items():
            observed = down = 0
            for d in members:
                parts = uptime_parts(window_start_ns=now - width, now_ns=now,
                                     first_seen_ns=d.first_seen_ns,
                                     outages=spans.get(d.id, []), gateway_down=blind,
                                     unobserved=unobserved.get(d.id, ()))
                observed += parts.observed_ns
                down += parts.down_ns
            result[name] = round(100.0 * (1 - down / observed), 3) if observed else None
        return result

    def _points(self, devices: Sequence[Device], now: int) -> list[str]:
        uptime = self.uptime(now, devices)
        lines = []
        for d in devices:
            # state_code: the state as a number too, for stores that keep numbers only
            # (VictoriaMetrics stores a string field as 0).
            fields: dict[str, FieldValue] = {"state": d.state,
                                             "state_code": STATE_CODES.get(d.state, 0)}
            if d.state in ("online", "offline"):  # unknown, unmonitored: neither up nor down
                fields["up"] = 1 if d.state == "online" else 0
            if d.state == "unmonitored" and d.cause:
                fields["cause"] = d.cause
            if d.last_seen_ns is not None:
                fields["last_seen_age_s"] = round(max(0, now - d.last_seen_ns) / NS, 3)
            pct = uptime.get(d.id, {}).get("24h")
            if pct is not None and math.isfinite(pct):
                fields["uptime_24h_pct"] = pct
            tags = {"device": d.id, "site": d.site, "gateway": self.gateway_id}
            if d.kind:
                tags["kind"] = d.kind
            try:
                lines.append(encode(Reading.build("device_status", tags, fields, now)))
            except DecodeError as exc:  # a discovered id InfluxDB cannot take as a tag
                log.warning("device_status for device=%s not written: %s", d.id, exc)
        return lines

    def view(self, d: Device, uptime: Mapping[str, float | None]) -> dict[str, Any]:
        return {
            "id": d.id, "name": d.name, "kind": d.kind, "site": d.site, "zone": d.zone,
            "source": d.source or None, "origin": d.origin, "interval_s": d.interval_s,
            "state": d.state, "since_ns": d.since_ns, "cause": d.cause,
            "last_seen_ns": d.last_seen_ns, "presence": d.presence,
            "latest": {"time_ns": d.latest_ns, "fields": dict(d.latest)} if d.latest else None,
            "uptime_pct": dict(uptime),
        }

    def statistics(self) -> dict[str, int]:
        states = {"online": 0, "offline": 0, "unknown": 0, "unmonitored": 0}
        for d in self.devices.values():
            if d.origin != "removed":
                states[d.state] = states.get(d.state, 0) + 1
        return {**states, "devices": sum(states.values()), "transitions": self.transitions,
                "reports": self.reports, "refused": self.refused,
                "components_down": sum(link.down for link in self.links.values())}
