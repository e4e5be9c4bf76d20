"""From a message to spool lines: route, decode, enrich, encode; and the batched committer.

:class:`Pipeline` is synchronous and never waits: a source (MQTT today, serial later) hands it
``(topic, payload, received_at_ns)`` and gets back the finished line-protocol lines, or a dead
letter when the input is bad. Bad input is counted per source and kind, logged at most once
per kind per interval, and kept for a technician; it never raises out of here.

:class:`Committer` gathers what sources produced into one spool transaction every
``commit_interval_s`` (or sooner when ``commit_max_readings`` is reached, or when half the
broker's in-flight window is waiting for acknowledgements) and only then runs each message's
``ack`` callback: for MQTT that is the PUBACK, so a message is acknowledged only after its
readings are on disk. The window matters: the broker sends at most ``receive_maximum``
unacknowledged messages, so waiting out the whole interval with a full window would leave the
connection idle. A batch with no acknowledgement waiting (serial lines, Modbus polls, QoS 0)
waits up to ``unacked_commit_interval_s`` instead: nobody is held up by it, and one fsync a
second instead of twenty is what the CPU and the SD card prefer.

With a :class:`~gateway.pipeline.timesync.TimeSync` (clock without RTC), a reading the gateway
stamped itself while its clock is not believed becomes a *held* line (``Outcome.held``),
committed in the same transaction and acknowledged after it like any other, and released with a
corrected time once the clock is synchronised; a device's own time before
``clock.min_valid_time`` (or too far ahead of a synchronised clock) is refused into the
quarantine with the reason (``Outcome.refused``). Without one, nothing changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from devices.formats import FORMATS, Format
from devices.presence import Presence
from devices.privacy import scrub
from devices.reading import DecodeError, Reading, Tags, check_name
from gateway.config import Config, DeviceConfig
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.core.ratelog import RateLimitedLog
from gateway.core.topics import topic_matches
from gateway.park.discovery import Discovery
from gateway.pipeline.timesync import TimeSync
from gateway.store.lineproto import encode, split_time
from gateway.store.spool import DeadLetter, HeldLine, Refused

log = logging.getLogger(__name__)

_ROUTE_CACHE_MAX = 4096
_ENRICH_CACHE_MAX = 10_000
# Messages of refused discoveries kept as dead letters a minute (a sample for the technician);
# the others are counted only: a flood of made-up ids must not push real bad input out.
REFUSED_KEPT_PER_MINUTE = 10
REFUSED = "discovery_refused"
# The "receive time" decoders are given while the clock is not believed: a device's time is
# then never judged "in the future" against a clock stuck in 1970 (the floor still applies).
# Readings that come back with it are the gateway's own stamps: they get the real receive time.
UNSYNCED_DECODE_NS = 2**62


def _own_topic(topic: str, prefix: str) -> bool:
    """``<prefix>/<site>/<device>/state``, ``<prefix>/<site>/gateway/<id>/status`` and the
    park's summary ``<prefix>/<site>/summary``."""
    if not (topic.endswith(("/state", "/status", "/summary"))
            and topic.startswith(prefix + "/")):
        return False
    parts = topic.split("/")
    return ((len(parts) == 4 and parts[3] == "state")
            or (len(parts) == 3 and parts[2] == "summary")
            or (len(parts) == 5 and parts[2] == "gateway" and parts[4] == "status"))


@dataclass
class SourceStats:
    messages: int = 0
    readings: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_message_ns: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    source: str
    fmt: Format
    options: Any


@dataclass(slots=True)
class Outcome:
    """What one message became: lines to spool, or a dead letter, never both."""

    lines: list[str]
    dead: DeadLetter | None = None
    # True when some reading is stamped with the receive time (no device time): a
    # redelivery of this message must then reuse that time to write the same point.
    uses_receive_time: bool = False
    # Stamped by the gateway while its clock is not believed: corrected later (timesync).
    held: list[HeldLine] = field(default_factory=list)
    # Device times the gateway will not send (before the floor, far ahead): quarantined.
    refused: list[Refused] = field(default_factory=list)


@dataclass(slots=True)
class Collected:
    """What many messages became, gathered for one commit: the batch form of :class:`Outcome`.

    A source that reads many messages at once (MQTT: every PUBLISH of one socket read) adds
    them with :meth:`Pipeline.collect` and ends the batch with :meth:`Pipeline.heard`, which
    tells the listeners once; then the :class:`~gateway.pipeline.Committer` takes it whole.
    """

    lines: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    held: list[HeldLine] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    # The good readings, for the listeners.
    readings: list[Reading] = field(default_factory=list)

    def outcome(self, uses_receive_time: bool) -> Outcome:
        """The one message's :class:`Outcome` (a batch of one)."""
        return Outcome(self.lines, self.dead[0] if self.dead else None, uses_receive_time,
                       self.held, self.refused)


class Pipeline:
    def __init__(
        self,
        *,
        gateway_id: str,
        site: str,
        routes: Sequence[tuple[str, Route]],
        devices: Mapping[str, DeviceConfig],
        allow_discovery: bool,
        max_payload_bytes: int,
        log_interval_s: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        time_sync: TimeSync | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        self._gateway_id = gateway_id
        self._site = site
        self._routes = list(routes)
        self._devices = dict(devices)
        self._allow_discovery = allow_discovery
        self._max_payload = max_payload_bytes
        self._clock = clock
        self.time_sync = time_sync
        self.held = 0
        self.refused_time = 0
        self._route_cache: dict[str, Route | None] = {}
        self._log = RateLimitedLog(log, log_interval_s, clock=clock)
        self.sources: dict[str, SourceStats] = {r.source: SourceStats() for _, r in self._routes}
        self.discovery = discovery if discovery is not None else Discovery(
            limit=300, per_minute=60.0, forget_after_s=7 * 86400.0, clock=clock,
            log_interval_s=log_interval_s)
        self.discovery.on_forget.append(self._forgotten)
        self.refused_not_kept = 0
        self._refused_minute = (-1, 0)
        self.received = 0
        self.readings = 0
        self.rejected = 0
        # Per device: the tags and measurement to add, computed once.
        self._enrich_cache: dict[Tags, tuple[tuple[tuple[str, str], ...], str | None]] = {}
        # Who hears of good readings and presence messages (liveness, Wi-Fi usage); plain
        # functions that never wait.
        self.on_readings: list[Callable[[Sequence[Reading]], None]] = []
        self.on_presence: list[Callable[[Presence, str], None]] = []
        # Client MACs a message carried, already taken out of it (for distinct-client counts).
        self.on_macs: list[Callable[[Sequence[Reading], Sequence[bytes]], None]] = []
        self.presences = 0
        self.redacted = 0
        self.own_topics = 0

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Pipeline:
        routes = [
            (sub.topic, Route(sub.source, FORMATS[sub.format], config.decoder_options(i)))
            for i, sub in enumerate(config.subscriptions)
        ]
        ingest = config.ingest
        kwargs.setdefault("discovery", Discovery(
            limit=ingest.max_discovered, per_minute=ingest.discovery_per_minute,
            forget_after_s=ingest.forget_discovered_after_s,
            clock=kwargs.get("clock", SYSTEM_CLOCK), log_interval_s=ingest.log_interval_s))
        return cls(
            gateway_id=config.gateway.id,
            site=config.gateway.site,
            routes=routes,
            devices={d.id: d for d in config.devices},
            allow_discovery=config.ingest.allow_discovery,
            max_payload_bytes=config.ingest.max_payload_bytes,
            log_interval_s=config.ingest.log_interval_s,
            **kwargs,
        )

    def route(self, topic: str) -> Route | None:
        try:
            return self._route_cache[topic]
        except KeyError:
            pass
        found = next((r for flt, r in self._routes if topic_matches(flt, topic)), None)
        if len(self._route_cache) >= _ROUTE_CACHE_MAX:
            self._route_cache.clear()
        self._route_cache[topic] = found
        return found

    def process(self, topic: str, payload: bytes, received_at_ns: int) -> Outcome:
        """One message, its listeners told. Never raises for bad input: it becomes a dead
        letter."""
        into = Collected()
        ours = self.collect(into, topic, payload, received_at_ns)
        self.heard(into)
        return into.outcome(ours)

    def heard(self, batch: Collected) -> None:
        """Tell the listeners of a batch's good readings, once for the batch."""
        if batch.readings:
            for listener in self.on_readings:
                listener(batch.readings)

    def collect(self, into: Collected, topic: str, payload: bytes, received_at_ns: int) -> bool:
        """Add one message's lines (or its dead letter) to ``into``; True when a reading is
        stamped with ``received_at_ns`` (no device time: a redelivery must reuse that time).
        Never raises for bad input. The listeners hear of it at :meth:`heard`."""
        self.received += 1
        # Before anything else looks at them (decoders, dead letters, logs): no client MAC
        # address goes any further (docs/operator.md "Privacy").
        clean = scrub(topic, payload)
        if clean.redacted:
            self.redacted += clean.redacted
            topic, payload = clean.topic, clean.payload
        route = self.route(topic)
        if route is None:
            self._reject_into(into, "(unrouted)", topic, payload, received_at_ns,
                              DecodeError("no subscription matches this topic",
                                          kind="unknown_format"))
            return False
        stats = self.sources[route.source]
        stats.messages += 1
        stats.last_message_ns = received_at_ns
        if len(payload) > self._max_payload:
            self._reject_into(into, route.source, topic, payload, received_at_ns, DecodeError(
                f"payload of {len(payload)} bytes exceeds ingest.max_payload_bytes="
                f"{self._max_payload}", kind="oversized"))
            return False
        if route.fmt.name == "native" and _own_topic(topic, route.options.topic_prefix):
            # What the gateway publishes itself (MQTT 3.1.1 has no noLocal): not input.
            self.own_topics += 1
            return False
        try:
            if route.fmt.presence is not None:
                said = route.fmt.presence(topic, payload, route.options)
                if said is not None:
                    self._presence(route.source, said)
                    return False
            sync = self.time_sync
            if sync is None or sync.trusted:
                readings = route.fmt.decode(topic, payload, received_at_ns, route.options)
            else:
                readings = [
                    replace(r, time_ns=received_at_ns) if r.time_ns == UNSYNCED_DECODE_NS else r
                    for r in route.fmt.decode(topic, payload, UNSYNCED_DECODE_NS,
                                              route.options)]
        except DecodeError as exc:
            self._reject_into(into, route.source, topic, payload, received_at_ns, exc)
            return False
        ours = self._finish(into, route.source, topic, payload, received_at_ns, readings,
                            route.fmt.own_measurement)
        if clean.macs and ours is not None:
            for listener in self.on_macs:
                listener(readings, clean.macs)
        return bool(ours)

    def accept(self, source: str, where: str, payload: bytes, received_at_ns: int,
               decode: Callable[[bytes], list[Reading]], *, text: bool = True) -> Outcome:
        """Input from a source other than MQTT (a serial line, a Modbus poll): ``decode``
        makes the readings from ``payload``; enrichment, encoding and bad-input handling are
        the same. Text (``text``) is scrubbed of client MACs first, as MQTT payloads are."""
        self.received += 1
        if text:
            clean = scrub(where, payload)
            if clean.redacted:
                self.redacted += clean.redacted
                payload = clean.payload
        stats = self.sources.setdefault(source, SourceStats())
        stats.messages += 1
        stats.last_message_ns = received_at_ns
        into = Collected()
        try:
            readings = decode(payload)
        except DecodeError as exc:
            self._reject_into(into, source, where, payload, received_at_ns, exc)
            return into.outcome(False)
        ours = self._finish(into, source, where, payload, received_at_ns, readings, False)
        self.heard(into)
        return into.outcome(bool(ours))

    def _presence(self, source: str, said: Presence) -> None:
        if said.device not in self._devices and not self._allow_discovery:
            raise DecodeError(f"device {said.device!r} is not in the device list and "
                              "ingest.allow_discovery is off", device=said.device,
                              kind="unknown_device")
        check_name("device id", said.device)
        if said.device not in self._devices:
            self._admit(said.device)
        self.presences += 1
        for listener in self.on_presence:
            listener(said, source)

    def _finish(self, into: Collected, source: str, where: str, payload: bytes,
                received_at_ns: int, readings: list[Reading],
                own_measurement: bool) -> bool | None:
        """Encode a message's readings into ``into``; whether one is stamped with the receive
        time, or None when the message became a dead letter instead."""
        try:
            lines = [self._encode(r, own_measurement) for r in readings]
        except DecodeError as exc:
            self._reject_into(into, source, where, payload, received_at_ns, exc)
            return None
        self.sources[source].readings += len(lines)
        self.readings += len(lines)
        into.readings += readings
        ours = any(r.time_ns == received_at_ns for r in readings)
        if self.time_sync is None:
            into.lines += lines
        else:
            self._judge_times(into, lines, readings, received_at_ns)
        return ours

    def _judge_times(self, outcome: Collected, lines: list[str], readings: Sequence[Reading],
                     received_at_ns: int) -> None:
        sync = self.time_sync
        assert sync is not None
        # A receive time below the floor with a believed clock: a redelivery first received
        # while it was not (the seen table kept that time). Held, it is corrected like the
        # first delivery was (same boot), so the point is the same one.
        hold_ours = not sync.trusted or received_at_ns < sync.min_valid_ns
        held, refused = len(outcome.held), len(outcome.refused)
        refused_device: str | None = None
        for line, reading in zip(lines, readings, strict=True):
            if reading.time_ns == received_at_ns:
                if hold_ours:
                    outcome.held.append(sync.hold(split_time(line)[0], received_at_ns))
                    continue
            else:
                reason = sync.refuse_reason(reading.time_ns)
                if reason is not None:
                    outcome.refused.append(Refused(line, reason, received_at_ns))
                    refused_device = reading.tag("device")
                    continue
            outcome.lines.append(line)
        if len(outcome.refused) > refused:
            self.refused_time += len(outcome.refused) - refused
            self._log.warning(("time", refused_device or "?"),
                              "device time refused device=%s: %s", refused_device,
                              outcome.refused[refused].reason)
        self.held += len(outcome.held) - held

    def own(self, lines: list[str]) -> Outcome:
        """The gateway's own points (device_status, wifi, health), stamped by its clock.

        While the clock is not believed, a line stamped during this boot (by that clock) is
        held for correction; an older time (an outage that began before this boot, when the
        clock was good) is judged like a device's."""
        sync = self.time_sync
        if sync is None or not lines:
            return Outcome(lines)
        outcome = Outcome([])
        wall = sync.source.wall_ns()
        boot = sync.source.boottime_ns()
        for line in lines:
            body, at = split_time(line)
            if at is None:
                outcome.lines.append(line)  # not ours to judge: the forwarder's guard will
                continue
            if not sync.trusted and 0 <= wall - at <= boot:
                outcome.held.append(sync.hold(body, at))
                continue
            reason = sync.refuse_reason(at)
            if reason is not None:
                outcome.refused.append(Refused(line, reason, wall))
            else:
                outcome.lines.append(line)
        self.held += len(outcome.held)
        self.refused_time += len(outcome.refused)
        return outcome

    def _encode(self, reading: Reading, own_measurement: bool) -> str:
        # Keyed by the reading's whole tag set: a device sends the same tags every time.
        cached = self._enrich_cache.get(reading.tags)
        if cached is None:
            cached = self._enrichment(reading.tag("device"), reading.tag("site"))
            if len(self._enrich_cache) >= _ENRICH_CACHE_MAX:
                self._enrich_cache.clear()
            self._enrich_cache[reading.tags] = cached
        extra, kind = cached
        return encode(reading, extra, None if own_measurement else kind)

    def _enrichment(self, device: str | None,
                    site: str | None) -> tuple[tuple[tuple[str, str], ...], str | None]:
        if device is None:
            raise DecodeError("reading has no device tag", kind="unknown_device")
        config = self._devices.get(device)
        if config is None:
            if not self._allow_discovery:
                raise DecodeError(f"device {device!r} is not in the device list and "
                                  "ingest.allow_discovery is off", device=device,
                                  kind="unknown_device")
            check_name("device id", device)
            self._admit(device)
        extra = (("gateway", self._gateway_id),
                 ("site", (config.site if config else None) or self._site))
        return extra, config.kind if config else None

    def _admit(self, device: str) -> None:
        why = self.discovery.admit(device)
        if why is not None:
            raise DecodeError(
                f"new device {device!r} refused ({why}): more than "
                f"{self.discovery.per_minute:g} new devices a minute "
                "(ingest.discovery_per_minute)", device=device, kind=REFUSED)

    def _forgotten(self, device: str, why: str) -> None:
        # Its next reading must be admitted again: drop what was cached for it (a cache).
        self._enrich_cache.clear()

    @property
    def discovered(self) -> list[str]:
        return self.discovery.ids()

    def _keep_refused(self) -> bool:
        minute = int(self._clock.monotonic() // 60)
        seen, kept = self._refused_minute
        kept = kept if seen == minute else 0
        self._refused_minute = (minute, kept + 1)
        return kept < REFUSED_KEPT_PER_MINUTE

    def reject(self, source: str, topic: str, payload: bytes, received_at_ns: int,
                exc: DecodeError) -> Outcome:
        """Count and log bad input; its dead letter (none for a refused discovery past the
        sample kept)."""
        into = Collected()
        self._reject_into(into, source, topic, payload, received_at_ns, exc)
        return into.outcome(False)

    def _reject_into(self, into: Collected, source: str, topic: str, payload: bytes,
                     received_at_ns: int, exc: DecodeError) -> None:
        self.rejected += 1
        stats = self.sources.setdefault(source, SourceStats())
        stats.errors[exc.kind] += 1
        stats.last_error = exc.reason
        self._log.warning((source, exc.kind), "bad input source=%s topic=%s kind=%s: %s",
                          source, topic, exc.kind, exc.reason)
        if exc.kind == REFUSED and not self._keep_refused():
            self.refused_not_kept += 1
            return
        into.dead.append(DeadLetter(
            source=source, topic=topic, kind=exc.kind, error=exc.reason,
            payload=bytes(payload[:self._max_payload]), at_ns=received_at_ns))

    def statistics(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "readings": self.readings,
            "rejected": self.rejected,
            "presences": self.presences,
            "redacted": self.redacted,
            "own_topics": self.own_topics,
            "held": self.held,
            "refused_time": self.refused_time,
            "discovered_devices": self.discovery.ids(),
            "refused_not_kept": self.refused_not_kept,
            "sources": {
                name: {
                    "messages": s.messages,
                    "readings": s.readings,
                    "errors": dict(s.errors),
                    "last_message_ns": s.last_message_ns,
                    "last_error": s.last_error,
                }
                for name, s in self.sources.items()
            },
        }
