"""The device registry: devices, their liveness state and their outages, in SQLite.

``data_dir/state.sqlite3`` keeps what must survive a restart so that a restart does not fake
an outage: every device (from config or discovered) with its state, since when, when it was
last seen and its latest values; every outage (device, start, end, cause); and the gateway's
heartbeat, from which the next start knows how long the gateway itself was down.

Writes are rare and small (a transition, a heartbeat every ``heartbeat_s`` with the devices
seen since), so they run on the event loop's thread with WAL and ``synchronous=NORMAL``: a
commit is a write to the WAL without an fsync, consistent after a power cut, at worst missing
the last heartbeat's changes. Readings themselves never go through here; they are in the
spool.

Uptime is computed, not stored: :func:`uptime_parts` intersects a device's outages with a
window, leaving out the time the gateway itself was down (then nobody could see the device)
and the device's own unobserved spans (the ``unobserved`` table: while it was ``unmonitored``
because a link to it, such as its bus's adapter, was gone). The gateway's own components
(``bus:<name>``, ``serial:<name>``) have outages in the outages table, kind ``component``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.reading import FieldValue
from gateway.core.disk import DiskHealth, card_full
from gateway.core.salvage import TableSalvage, salvage
from gateway.core.sqlite import SqliteFile, transaction

log = logging.getLogger(__name__)

def _setup(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # Sorts and temporary tables in memory: no file to open when sockets ran out.
    db.execute("PRAGMA temp_store=MEMORY")
    # 256 KiB of page cache, not SQLite's 2 MiB: one row per device, a few dozen pages in all.
    db.execute("PRAGMA cache_size=-256")
    db.executescript(_SCHEMA)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT, site TEXT NOT NULL, zone TEXT,
    interval_s REAL NOT NULL, source TEXT NOT NULL, origin TEXT NOT NULL,
    first_seen_ns INTEGER, last_seen_ns INTEGER, state TEXT NOT NULL, since_ns INTEGER,
    cause TEXT, presence TEXT, presence_ns INTEGER, latest TEXT, latest_ns INTEGER,
    outage_id INTEGER);
CREATE TABLE IF NOT EXISTS outages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, site TEXT NOT NULL,
    kind TEXT, start_ns INTEGER NOT NULL, end_ns INTEGER, cause TEXT, end_cause TEXT);
CREATE INDEX IF NOT EXISTS outages_device ON outages (device, start_ns);
CREATE INDEX IF NOT EXISTS outages_start ON outages (start_ns);
CREATE TABLE IF NOT EXISTS unobserved (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, start_ns INTEGER NOT NULL,
    end_ns INTEGER, cause TEXT);
CREATE INDEX IF NOT EXISTS unobserved_device ON unobserved (device, start_ns);
CREATE TABLE IF NOT EXISTS gateway (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Outages older than this are deleted (uptime looks back 30 days at most).
KEEP_OUTAGES_NS = 400 * 86400 * 10**9

STATES = ("unknown", "online", "offline", "unmonitored")

# The outages of the gateway's own components (``bus:<name>``, ``serial:<name>``, later
# ``broker``) are rows of the outages table like a device's, with this kind.
COMPONENT_KIND = "component"


@dataclass
class Device:
    """One device as the registry knows it (mutable: liveness updates it in place)."""

    id: str
    name: str
    kind: str | None
    site: str
    zone: str | None
    interval_s: float
    source: str
    origin: str  # "config", "discovered", "gateway", or "removed" (no longer in config)
    first_seen_ns: int | None = None
    last_seen_ns: int | None = None
    state: str = "unknown"
    since_ns: int | None = None
    cause: str | None = None
    presence: str | None = None
    presence_ns: int | None = None
    latest: dict[str, FieldValue] = field(default_factory=dict)
    latest_ns: int | None = None
    outage_id: int | None = None
    # Not persisted: a device-reported "offline" waiting out the hold time.
    pending_offline_ns: int | None = None
    # Not persisted: while unmonitored, when its link came back (silence counts from then).
    watch_from_ns: int | None = None
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class Outage:
    id: int
    device: str
    site: str
    kind: str | None
    start_ns: int
    end_ns: int | None
    cause: str | None
    end_cause: str | None

    def duration_s(self, now_ns: int) -> float:
        return ((self.end_ns if self.end_ns is not None else now_ns) - self.start_ns) / 1e9


_COLUMNS = ("id", "name", "kind", "site", "zone", "interval_s", "source", "origin",
            "first_seen_ns", "last_seen_ns", "state", "since_ns", "cause", "presence",
            "presence_ns", "latest", "latest_ns", "outage_id")


class Registry:
    """``state.sqlite3``. A write the card refuses (full, I/O error) is reported to ``disk``
    and counted as not recorded, never raised: the liveness in memory stays right, and devices
    not saved stay dirty for the next heartbeat. A read the card refuses reads as nothing. A
    file that cannot open at start (a full card) opens at the first write after space returns.
    Without ``disk`` (unit tests) errors rise as they are."""

    def __init__(self, path: Path, *, disk: DiskHealth | None = None) -> None:
        self.path = path
        self._disk = disk
        self._file = SqliteFile(path, _setup)
        error = self._file.error
        if error is not None:
            if disk is None or not card_full(error, path.parent):
                # Not the card being full (a folder in its place, its owner): say so at start.
                raise error
            disk.failed("state", "open", error)
            log.error("state %s cannot open, the disk is full (%s): devices start from the "
                      "config, and it opens once space returns", path, error)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._file.db

    def salvage_from(self, damaged: Path) -> list[TableSalvage]:
        """Copy what can still be read of a damaged state file (set aside) into this one."""
        return salvage(damaged, self._db, ("devices", "outages", "unobserved", "gateway",
                                           "documents"))

    def close(self) -> None:
        self._file.close()

    def _failed(self, what: str, exc: sqlite3.Error, *, lost: int = 1) -> None:
        """A refused write or read: reported when it is the card's doing, else raised."""
        if self._disk is None or not self._disk.failed("state", what, exc, lost=lost):
            raise exc

    def _wrote(self) -> None:
        if self._disk is not None:
            self._disk.succeeded("state")

    # -- devices -------------------------------------------------------------------------

    def load(self) -> dict[str, Device]:
        devices: dict[str, Device] = {}
        try:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM devices").fetchall()
        except sqlite3.Error as exc:
            self._failed("load", exc, lost=0)
            return devices
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            latest = values.pop("latest")
            try:
                parsed = json.loads(latest) if latest else {}
            except ValueError:
                parsed = {}
            state = values["state"] if values["state"] in STATES else "unknown"
            values["state"] = state
            devices[values["id"]] = Device(**values, latest=parsed if isinstance(parsed, dict)
                                           else {})
        return devices

    def save(self, devices: Iterable[Device]) -> int:
        """Write the devices; those the card refuses stay dirty, for the next save."""
        rows = []
        saved = []
        for d in devices:
            rows.append((d.id, d.name, d.kind, d.site, d.zone, d.interval_s, d.source, d.origin,
                         d.first_seen_ns, d.last_seen_ns, d.state, d.since_ns, d.cause,
                         d.presence, d.presence_ns, json.dumps(d.latest) if d.latest else None,
                         d.latest_ns, d.outage_id))
            saved.append(d)
            d.dirty = False
        if rows:
            marks = ", ".join("?" for _ in _COLUMNS)
            try:
                with self._transaction():
                    self._db.executemany(
                        f"INSERT OR REPLACE INTO devices ({', '.join(_COLUMNS)}) "
                        f"VALUES ({marks})", rows)
            except sqlite3.Error as exc:
                for d in saved:
                    d.dirty = True
                self._failed("device", exc, lost=0)
                return 0
            self._wrote()
        return len(rows)

    def delete(self, device_id: str) -> None:
        """Forget a device (its outages stay: they are history)."""
        self._write("device", "DELETE FROM devices WHERE id = ?", (device_id,))

    def _write(self, what: str, sql: str, args: Sequence[Any]) -> int | None:
        """One statement; its row id, or None when the card refused it (counted)."""
        try:
            cur = self._db.execute(sql, args)
        except sqlite3.Error as exc:
            self._failed(what, exc)
            return None
        self._wrote()
        return cur.lastrowid

    def _read(self, what: str, sql: str, args: Sequence[Any]) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            self._failed(what, exc, lost=0)
            return []

    # -- outages -------------------------------------------------------------------------

    def open_outage(self, device: Device, start_ns: int, cause: str | None) -> int | None:
        """The new outage's id; None when the card refused it (the outage is then known only
        in memory until it ends, and counted as not recorded)."""
        return self._write(
            "outage",
            "INSERT INTO outages (device, site, kind, start_ns, cause) VALUES (?, ?, ?, ?, ?)",
            (device.id, device.site, device.kind, start_ns, cause))

    def close_outage(self, outage_id: int | None, end_ns: int, end_cause: str | None) -> None:
        if outage_id is None:
            return
        self._write("outage", "UPDATE outages SET end_ns = ?, end_cause = ? WHERE id = ?",
                    (end_ns, end_cause, outage_id))

    def add_outage(self, device: Device, start_ns: int, end_ns: int, cause: str | None,
                   end_cause: str | None) -> int | None:
        return self._write(
            "outage",
            "INSERT INTO outages (device, site, kind, start_ns, end_ns, cause, end_cause) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device.id, device.site, device.kind, start_ns, end_ns, cause, end_cause))

    def open_component_outage(self, component: str, site: str, start_ns: int,
                              cause: str | None) -> int | None:
        return self._write(
            "outage",
            "INSERT INTO outages (device, site, kind, start_ns, cause) VALUES (?, ?, ?, ?, ?)",
            (component, site, COMPONENT_KIND, start_ns, cause))

    def open_component_outages(self) -> list[Outage]:
        """Component outages still open (from before a restart)."""
        return [Outage(*row) for row in self._read(
            "outages",
            "SELECT id, device, site, kind, start_ns, end_ns, cause, end_cause FROM outages "
            "WHERE kind = ? AND end_ns IS NULL ORDER BY start_ns", (COMPONENT_KIND,))]

    # -- unobserved time (a device unmonitored: neither up nor down) --------------------

    def open_unobserved(self, device: str, start_ns: int, cause: str | None) -> None:
        self._write("unobserved",
                    "INSERT INTO unobserved (device, start_ns, cause) VALUES (?, ?, ?)",
                    (device, start_ns, cause))

    def close_unobserved(self, device: str, end_ns: int) -> None:
        """Ends the device's open span(s); an end before a start ends it where it began."""
        self._write("unobserved", "UPDATE unobserved SET end_ns = MAX(start_ns, ?) "
                    "WHERE device = ? AND end_ns IS NULL", (end_ns, device))

    def unobserved(self, since_ns: int) -> dict[str, list[tuple[int, int | None]]]:
        """Every device's unobserved spans that overlap ``[since_ns, now]``."""
        found: dict[str, list[tuple[int, int | None]]] = {}
        for dev, start, end in self._read(
                "unobserved", "SELECT device, start_ns, end_ns FROM unobserved "
                "WHERE end_ns IS NULL OR end_ns >= ? ORDER BY start_ns", (since_ns,)):
            found.setdefault(dev, []).append((start, end))
        return found

    def outages(self, *, device: str | None = None, site: str | None = None,
                since_ns: int | None = None, ongoing: bool | None = None,
                limit: int = 100) -> list[Outage]:
        """Newest first. ``since_ns``: outages that were still going on at or after it."""
        where: list[str] = []
        args: list[str | int] = []
        if device is not None:
            where.append("device = ?")
            args.append(device)
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if since_ns is not None:
            where.append("(end_ns IS NULL OR end_ns >= ?)")
            args.append(since_ns)
        if ongoing is True:
            where.append("end_ns IS NULL")
        elif ongoing is False:
            where.append("end_ns IS NOT NULL")
        sql = ("SELECT id, device, site, kind, start_ns, end_ns, cause, end_cause FROM outages"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY start_ns DESC, id DESC LIMIT ?")
        return [Outage(*row) for row in self._read("outages", sql, (*args, limit))]

    def intervals(self, since_ns: int) -> dict[str, list[tuple[int, int | None]]]:
        """Every device's outages that overlap ``[since_ns, now]``, as (start, end)."""
        found: dict[str, list[tuple[int, int | None]]] = {}
        for dev, start, end in self._read(
                "outages", "SELECT device, start_ns, end_ns FROM outages "
                "WHERE end_ns IS NULL OR end_ns >= ? ORDER BY start_ns", (since_ns,)):
            found.setdefault(dev, []).append((start, end))
        return found

    def prune(self, older_than_ns: int) -> int:
        try:
            cur = self._db.execute(
                "DELETE FROM outages WHERE end_ns IS NOT NULL AND end_ns < ?", (older_than_ns,))
            self._db.execute("DELETE FROM unobserved WHERE end_ns IS NOT NULL AND end_ns < ?",
                             (older_than_ns,))
        except sqlite3.Error as exc:
            self._failed("prune", exc, lost=0)
            return 0
        self._wrote()
        return cur.rowcount

    # -- the gateway's own heartbeat -----------------------------------------------------

    def get(self, key: str) -> int | None:
        rows = self._read("heartbeat", "SELECT value FROM gateway WHERE key = ?", (key,))
        return None if not rows else int(rows[0][0])

    def put(self, **values: int | None) -> None:
        try:
            with self._transaction():
                for key, value in values.items():
                    if value is None:
                        self._db.execute("DELETE FROM gateway WHERE key = ?", (key,))
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO gateway (key, value) VALUES (?, ?)",
                            (key, value))
        except sqlite3.Error as exc:
            self._failed("heartbeat", exc)
            return
        self._wrote()

    def put_json(self, key: str, value: Any) -> None:
        self._write("document", "INSERT OR REPLACE INTO documents (key, value) VALUES (?, ?)",
                    (key, json.dumps(value)))

    def get_json(self, key: str) -> Any:
        rows = self._read("document", "SELECT value FROM documents WHERE key = ?", (key,))
        if not rows:
            return None
        try:
            return json.loads(rows[0][0])
        except ValueError:
            return None

    def _transaction(self) -> AbstractContextManager[None]:
        # Deferred (a plain BEGIN), as it always was: the gateway's one Registry is the
        # only writer of state.sqlite3.
        return transaction(self._db, immediate=False)


# -- uptime ------------------------------------------------------------------------------


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _clip(intervals: Iterable[tuple[int, int | None]], lo: int,
          hi: int) -> list[tuple[int, int]]:
    return _merge((max(s, lo), min(hi if e is None else e, hi)) for s, e in intervals)


def _total(intervals: Sequence[tuple[int, int]]) -> int:
    return sum(e - s for s, e in intervals)


def _overlap(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> int:
    total, i, j = 0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass(frozen=True, slots=True)
class UptimeParts:
    """Nanoseconds observed (the device known, the gateway up) and down within them."""

    observed_ns: int
    down_ns: int

    @property
    def pct(self) -> float | None:
        if self.observed_ns <= 0:
            return None
        return round(100.0 * (1 - self.down_ns / self.observed_ns), 3)


def uptime_parts(*, window_start_ns: int, now_ns: int, first_seen_ns: int | None,
                 outages: Iterable[tuple[int, int | None]],
                 gateway_down: Iterable[tuple[int, int | None]],
                 unobserved: Iterable[tuple[int, int | None]] = ()) -> UptimeParts:
    """Observed time is the window from the device's first sighting to now, less the time
    the gateway itself was down and the device's own unobserved (``unmonitored``) time; down
    time is the device's outages within what is observed."""
    if first_seen_ns is None:
        return UptimeParts(0, 0)
    lo = max(window_start_ns, first_seen_ns)
    if lo >= now_ns:
        return UptimeParts(0, 0)
    blind = _clip([*gateway_down, *unobserved], lo, now_ns)
    down = _clip(outages, lo, now_ns)
    observed = (now_ns - lo) - _total(blind)
    down_ns = _total(down) - _overlap(down, blind)
    return UptimeParts(max(0, observed), max(0, down_ns))


def to_json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (bool, int, float, str))}
