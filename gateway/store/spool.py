"""The durable spool: SQLite in WAL mode under ``data_dir``.

Readings are stored as finished line protocol, in arrival order, and deleted only after
InfluxDB answered 2xx for them. A row's timestamp was fixed at decode, so replaying a row
writes the same point again, which InfluxDB overwrites: replays cannot duplicate.

Durability: ``synchronous=FULL`` makes every commit survive a power cut, and commits are
batched by the ingest path (one transaction per ~50 ms of traffic, not one per message) to
spare the SD card. A process killed with SIGKILL loses nothing that was committed, and
nothing is acknowledged to the broker before it is committed.

The spool is bounded in bytes: when full, the oldest rows are dropped, and every dropped row
is counted (``evicted``), never silent. Malformed input goes to a bounded ``dead_letter``
table and lines InfluxDB refuses to a bounded ``quarantine`` table, each with the reason (so do
lines the gateway refuses for their time: a device clock in the past, status NULL).

Clock without RTC (:mod:`gateway.pipeline.timesync`): a reading stamped by the gateway while its
clock is not synchronised waits in the bounded ``held`` table, line without its timestamp plus the
boot it came from and the instant on that boot's ``CLOCK_BOOTTIME``; it is committed with the
rest of its batch, so the delivery guarantee holds while it waits. Once the clock is
synchronised, :meth:`SpoolDB.release_held` moves it to ``spool`` with its time corrected, in
the same transaction that deletes it from ``held``. Rows of an earlier boot cannot be corrected
(the boot's offset was never known): :meth:`SpoolDB.keep_apart` moves them to the bounded
``unsynced`` table, which nothing sends.

:class:`SpoolDB` is the synchronous core (tests and the benchmark use it directly);
:class:`Spool` runs it on one dedicated thread so the event loop never waits for the disk.
Another process (``garden-gateway doctor``) looks into a spool file with :func:`inspect_spool`:
read-only, with a short busy timeout, so the running gateway is never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.core.disk import DiskHealth, NotOpen, card_full, statvfs_free
from gateway.core.errors import SpoolError
from gateway.core.ratelog import RateLimitedLog
from gateway.core.salvage import TableSalvage, salvage
from gateway.core.sqlite import SqliteFile, transaction
from gateway.store.lineproto import split_time

log = logging.getLogger(__name__)

# Rough per-row cost on disk beyond the line itself (rowid, record header, b-tree cell).
ROW_OVERHEAD = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, status INTEGER,
    reason TEXT NOT NULL, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, source TEXT NOT NULL, topic TEXT NOT NULL,
    kind TEXT NOT NULL, error TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen (key INTEGER PRIMARY KEY, received_at_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY AUTOINCREMENT, boot_id TEXT NOT NULL, boot_ns INTEGER NOT NULL,
    received_at_ns INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unsynced (
    id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, boot_id TEXT NOT NULL,
    boot_ns INTEGER NOT NULL, received_at_ns INTEGER NOT NULL, reason TEXT NOT NULL,
    body TEXT NOT NULL);
"""

COUNTERS = ("spooled", "written", "evicted", "quarantined", "dead_lettered")
# Of ``evicted``, those evicted to keep spool.min_free_bytes free on the card (the rest: to stay
# under spool.max_bytes).
SPACE_COUNTERS = ("evicted_for_reserve",)

# What a damaged spool's salvage copies, the unsent lines first.
SALVAGED_TABLES = ("spool", "held", "unsynced", "quarantine", "dead_letter", "seen", "counters")

# The WAL's share of spool.max_bytes: an eighth, within these bounds.
WAL_MIN_BYTES = 64 * 1024
WAL_MAX_BYTES = 4 * 1024 * 1024
# The fewest pages the database may have (the schema alone takes about a dozen).
MIN_PAGES = 64
# Kept apart from ``totals`` (whose keys the status API and /metrics already publish).
CLOCK_COUNTERS = ("held", "released", "kept_apart", "held_evicted", "unsynced_evicted",
                  "refused_time")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str
    topic: str
    kind: str
    error: str
    payload: bytes
    at_ns: int


@dataclass(frozen=True, slots=True)
class HeldLine:
    """A reading stamped while the clock was not synchronised: its line without the
    timestamp, and when it was received on the boot's monotonic clock (CLOCK_BOOTTIME)."""

    body: str
    boot_id: str
    boot_ns: int
    # What the unsynchronised wall clock said: only for a technician reading the table.
    received_at_ns: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A finished line the gateway will not send for its time (quarantined, status NULL)."""

    line: str
    reason: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class SpoolStats:
    rows: int
    bytes: int
    max_bytes: int
    file_bytes: int
    oldest_time_ns: int | None
    quarantine_rows: int
    dead_letter_rows: int
    totals: dict[str, int]
    min_free_bytes: int = 0
    evicted_for_reserve: int = 0
    # Why the file is not open (a full card at start), or None.
    open_error: str | None = None


class SpoolDB:
    """Synchronous spool. Not thread-safe: use it from one thread (see :class:`Spool`)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        dead_letter_max_rows: int = 10_000,
        quarantine_max_rows: int = 10_000,
        synchronous: str = "FULL",
        held_max_rows: int = 100_000,
        unsynced_max_rows: int = 100_000,
        min_free_bytes: int = 0,
        free: Callable[[Path], tuple[int, int] | None] = statvfs_free,
        retry_s: float = 5.0,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dead_letter_max_rows = dead_letter_max_rows
        self.quarantine_max_rows = quarantine_max_rows
        self.held_max_rows = held_max_rows
        self.unsynced_max_rows = unsynced_max_rows
        self.min_free_bytes = min_free_bytes
        self._free = free
        self._synchronous = synchronous
        # The file's bound: the WAL is checkpointed (and truncated back) at wal_bytes, and
        # the database may use the rest, less room for one more transaction's frames.
        self.wal_bytes = min(WAL_MAX_BYTES, max(WAL_MIN_BYTES, max_bytes // 8))
        self._page_size = 4096
        self._cap_pages = 0
        self._rows = 0
        self._bytes = 0
        self._quarantine_rows = self._dead_rows = self._held_rows = self._unsynced_rows = 0
        self._totals = dict.fromkeys(COUNTERS, 0)
        self._clock_totals = dict.fromkeys(CLOCK_COUNTERS, 0)
        self._space_totals = dict.fromkeys(SPACE_COUNTERS, 0)
        self._oldest_time_ns: int | None = None
        self._last_prune = 0.0
        # Eviction goes on at every commit while an outage lasts: a line a minute says so.
        self._ratelog = RateLimitedLog(log, 60.0)
        self._file = SqliteFile(path, self._setup, check_same_thread=False,
                                on_open=self._load, retry_s=retry_s)
        error = self._file.error
        if error is not None:
            if not card_full(error, path.parent, free):
                raise SpoolError(f"cannot open spool {path}: {error}") from error
            # A full card at start: the gateway runs, takes nothing it cannot commit, and the
            # spool opens at the first commit after space returns.
            log.error("spool %s cannot open, the disk is full (%s): nothing is acknowledged "
                      "until it can", path, error)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._file.db

    @property
    def is_open(self) -> bool:
        return self._file.is_open

    @property
    def open_error(self) -> str | None:
        return None if self._file.error is None else str(self._file.error)

    def _setup(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        # Sorts and temporary tables in memory: no file to open when sockets ran out.
        db.execute("PRAGMA temp_store=MEMORY")
        # 1 MiB of page cache, not SQLite's 2 MiB: a burst appends at one end of the spool and
        # the forwarder reads and deletes at the other, so the pages in use are few, and every
        # other page is one read from the kernel's page cache away (bench/memory_bench.py).
        db.execute("PRAGMA cache_size=-1024")
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        # Checkpoint once the WAL holds wal_bytes, and cut it back to that size after: the
        # WAL file is then reused from its start, needing no new room on the card.
        db.execute(f"PRAGMA wal_autocheckpoint={max(1, self.wal_bytes // page_size)}")
        db.execute(f"PRAGMA journal_size_limit={self.wal_bytes}")
        db.executescript(_SCHEMA)
        self._page_size = page_size
        self._cap_pages = max(MIN_PAGES, (self.max_bytes - 2 * self.wal_bytes) // page_size)

    def _load(self, db: sqlite3.Connection) -> None:
        """The counts kept in memory, read from the file once it is open."""
        rows, nbytes = db.execute(
            "SELECT count(*), coalesce(sum(length(CAST(line AS BLOB))), 0) FROM spool"
        ).fetchone()
        self._rows = int(rows)
        self._bytes = int(nbytes) + ROW_OVERHEAD * self._rows
        self._quarantine_rows = int(db.execute("SELECT count(*) FROM quarantine").fetchone()[0])
        self._dead_rows = int(db.execute("SELECT count(*) FROM dead_letter").fetchone()[0])
        self._held_rows = int(db.execute("SELECT count(*) FROM held").fetchone()[0])
        self._unsynced_rows = int(db.execute("SELECT count(*) FROM unsynced").fetchone()[0])
        self._totals = dict.fromkeys(COUNTERS, 0)
        self._clock_totals = dict.fromkeys(CLOCK_COUNTERS, 0)
        self._space_totals = dict.fromkeys(SPACE_COUNTERS, 0)
        for name, value in db.execute("SELECT name, value FROM counters"):
            if name in self._clock_totals:
                self._clock_totals[name] = int(value)
            elif name in self._space_totals:
                self._space_totals[name] = int(value)
            else:
                self._totals[name] = int(value)
        row = db.execute("SELECT line FROM spool ORDER BY id LIMIT 1").fetchone()
        self._oldest_time_ns = None if row is None else split_time(str(row[0]))[1]

    def salvage_from(self, damaged: Path) -> list[TableSalvage]:
        """Copy what can still be read of a damaged spool file (set aside) into this one, and
        count again. Every table: the unsent lines, held and kept-apart readings, quarantine,
        dead letters, redelivery keys, the lifetime counters."""
        db = self._db
        results = salvage(damaged, db, SALVAGED_TABLES)
        self._load(db)
        return results

    def _scalar(self, sql: str, *args: Any) -> Any:
        return self._db.execute(sql, args).fetchone()[0]

    def _read_oldest_time(self) -> int | None:
        row = self._db.execute("SELECT line FROM spool ORDER BY id LIMIT 1").fetchone()
        return None if row is None else split_time(str(row[0]))[1]

    def close(self) -> None:
        if not self._file.is_open:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            # A full card: the WAL stays, and the next start replays it.
            log.warning("spool checkpoint at close failed: %s", exc)
        finally:
            self._file.close()

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        lines: Sequence[str],
        *,
        dead: Sequence[DeadLetter] = (),
        seen: Sequence[tuple[int, int]] = (),
        held: Sequence[HeldLine] = (),
        refused: Sequence[Refused] = (),
    ) -> int:
        """Commit lines (and dead letters, redelivery keys, held readings and lines refused
        for their time) in one transaction.

        Returns how many old rows were evicted to stay under ``max_bytes`` (the lines' bytes
        and the file's) and to keep ``min_free_bytes`` free on the card.
        """
        try:
            return self._append(lines, dead=dead, seen=seen, held=held, refused=refused)
        except SpoolError as exc:
            # The room made was too little (the estimate of a batch's pages is one): evict
            # more on its own and try once again. A full card is not this: it rises.
            if not (_is_full(exc.__cause__) and self._at_page_limit()):
                raise
        self._evict_more()
        return self._append(lines, dead=dead, seen=seen, held=held, refused=refused)

    def _append(
        self,
        lines: Sequence[str],
        *,
        dead: Sequence[DeadLetter],
        seen: Sequence[tuple[int, int]],
        held: Sequence[HeldLine],
        refused: Sequence[Refused],
    ) -> int:
        added_bytes = sum(len(s) for s in lines) + ROW_OVERHEAD * len(lines)
        incoming = (added_bytes + sum(len(h.body) + 64 for h in held)
                    + sum(len(r.line) + len(r.reason) + 32 for r in refused)
                    + 32 * len(seen)
                    + sum(len(d.payload) + len(d.error) + len(d.topic) + 48 for d in dead))
        held_evicted = 0
        try:
            db = self._db
            with self._side_counts_kept(), transaction(db):
                room, room_bytes, for_reserve = self._make_room(db, incoming)
                if lines:
                    db.executemany("INSERT INTO spool(line) VALUES (?)", ((s,) for s in lines))
                if held:
                    held_evicted = self._insert_held(db, held)
                if refused:
                    self._insert_quarantine(
                        db, ((r.at_ns, None, r.reason, r.line) for r in refused), len(refused))
                if seen:
                    db.executemany(
                        "INSERT OR REPLACE INTO seen(key, received_at_ns) VALUES (?, ?)", seen
                    )
                if dead:
                    db.executemany(
                        "INSERT INTO dead_letter(at_ns, source, topic, kind, error, payload)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        ((d.at_ns, d.source, d.topic, d.kind, d.error, d.payload) for d in dead),
                    )
                    self._dead_rows += len(dead)
                    if self._dead_rows > self.dead_letter_max_rows:
                        db.execute(
                            "DELETE FROM dead_letter WHERE id <= "
                            "(SELECT max(id) FROM dead_letter) - ?",
                            (self.dead_letter_max_rows,),
                        )
                        self._dead_rows = self.dead_letter_max_rows
                evicted, evicted_bytes = room, room_bytes
                over = self._bytes - room_bytes + added_bytes - self.max_bytes
                if over > 0:
                    n, b = self._evict(over)
                    evicted, evicted_bytes = evicted + n, evicted_bytes + b
                self._bump(db, spooled=len(lines), evicted=evicted, dead_lettered=len(dead),
                           quarantined=len(refused), held=len(held), held_evicted=held_evicted,
                           refused_time=len(refused), evicted_for_reserve=for_reserve)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool write failed: {exc}") from exc
        self._totals["quarantined"] += len(refused)
        self._clock_totals["held"] += len(held)
        self._clock_totals["held_evicted"] += held_evicted
        self._clock_totals["refused_time"] += len(refused)
        self._space_totals["evicted_for_reserve"] += for_reserve
        if held_evicted:
            self._ratelog.warning(("spool", "held_evicted"),
                                  "held readings over clock.held_max_rows=%d: evicted=%d oldest",
                                  self.held_max_rows, held_evicted)
        if for_reserve:
            self._ratelog.warning(("spool", "evicted_for_reserve"),
                                  "disk low: evicted=%d oldest spool rows to keep "
                                  "spool.min_free_bytes=%d free (%d so far)", for_reserve,
                                  self.min_free_bytes,
                                  self._space_totals["evicted_for_reserve"])
        if self._rows == 0 and lines:
            self._oldest_time_ns = split_time(lines[0])[1]
        self._rows += len(lines) - evicted
        self._bytes += added_bytes - evicted_bytes
        self._totals["spooled"] += len(lines)
        self._totals["evicted"] += evicted
        self._totals["dead_lettered"] += len(dead)
        if evicted:
            self._oldest_time_ns = self._read_oldest_time()
        return evicted

    # -- the file's bound ------------------------------------------------------------------

    def _pages(self, db: sqlite3.Connection) -> tuple[int, int]:
        """(pages in the file, pages of them free for reuse)."""
        count = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        return count, free

    def _page_limit(self, page_count: int, need: int) -> tuple[int, bool]:
        """How many pages the file may have now, for a transaction of ``need`` pages, and
        whether the card's free-space reserve (not ``max_bytes``) is what sets it."""
        cap = self._cap_pages
        if self.min_free_bytes <= 0:
            return cap, False
        space = self._free(self.path.parent)
        if space is None:
            return cap, False
        # The WAL may still grow to its bound, and past it by one transaction's frames before
        # the checkpoint: that room is not the database's.
        frames = (need + 8) * (self._page_size + 24)
        wal_growth = max(0, self.wal_bytes + frames - _file_size(_wal(self.path)))
        # Pages written only to the WAL so far take their place in the file at the checkpoint.
        db_growth = max(0, page_count * self._page_size - _file_size(self.path))
        spare = max(0, space[0] - self.min_free_bytes - wal_growth - db_growth) \
            // self._page_size
        if page_count + spare >= cap:
            return cap, False
        return page_count + spare, True

    def _make_room(self, db: sqlite3.Connection, incoming: int) -> tuple[int, int, int]:
        """Inside the append's transaction, before its inserts: evict the oldest rows until
        ``incoming`` bytes fit in the pages the file may have. SQLite's ``max_page_count``
        then stops any write that would still outgrow them. Returns (rows evicted, their
        bytes, how many of them for the card's reserve)."""
        page_count, free_pages = self._pages(db)
        # Half again for the b-tree's cells and pages left part-full, and the index pages.
        need = incoming * 3 // (2 * self._page_size) + 4
        limit, for_reserve = self._page_limit(page_count, need)
        db.execute(f"PRAGMA max_page_count={max(limit, page_count)}")
        evicted, freed = 0, 0
        while page_count - free_pages + need > limit:
            want = (page_count - free_pages + need - limit) * self._page_size
            n, b = self._evict(max(want, 16 * self._page_size))
            if n == 0:
                break
            evicted, freed = evicted + n, freed + b
            page_count, free_pages = self._pages(db)
        return evicted, freed, evicted if for_reserve else 0

    def _at_page_limit(self) -> bool:
        try:
            page_count, _ = self._pages(self._db)
            limit = int(self._db.execute("PRAGMA max_page_count").fetchone()[0])
        except sqlite3.Error:
            return False
        return page_count >= limit - 1

    def _evict_more(self) -> None:
        """After an append the page limit stopped: a tenth of the bound evicted on its own."""
        db = self._db
        try:
            with transaction(db):
                n, b = self._evict(max(self.max_bytes // 10, 64 * self._page_size))
                self._bump(db, evicted=n)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool write failed: {exc}") from exc
        self._rows -= n
        self._bytes -= b
        self._totals["evicted"] += n
        self._oldest_time_ns = self._read_oldest_time() if self._rows else None

    def _evict(self, need: int) -> tuple[int, int]:
        freed, count, last_id = 0, 0, None
        for row_id, length in self._db.execute(
            "SELECT id, length(CAST(line AS BLOB)) FROM spool ORDER BY id"
        ):
            freed += int(length) + ROW_OVERHEAD
            count += 1
            last_id = row_id
            if freed >= need:
                break
        if last_id is not None:
            self._db.execute("DELETE FROM spool WHERE id <= ?", (last_id,))
        return count, freed

    def _insert_held(self, db: sqlite3.Connection, held: Sequence[HeldLine]) -> int:
        db.executemany(
            "INSERT INTO held(boot_id, boot_ns, received_at_ns, body) VALUES (?, ?, ?, ?)",
            ((h.boot_id, h.boot_ns, h.received_at_ns, h.body) for h in held))
        self._held_rows += len(held)
        if self._held_rows <= self.held_max_rows:
            return 0
        over = self._held_rows - self.held_max_rows
        db.execute("DELETE FROM held WHERE id IN (SELECT id FROM held ORDER BY id LIMIT ?)",
                   (over,))
        self._held_rows = self.held_max_rows
        return over

    def _insert_quarantine(self, db: sqlite3.Connection,
                           rows: Any, count: int) -> None:
        db.executemany(
            "INSERT INTO quarantine(at_ns, status, reason, line) VALUES (?, ?, ?, ?)", rows)
        self._quarantine_rows += count
        if self._quarantine_rows > self.quarantine_max_rows:
            db.execute(
                "DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?",
                (self.quarantine_max_rows,),
            )
            self._quarantine_rows = self.quarantine_max_rows

    @contextlib.contextmanager
    def _side_counts_kept(self) -> Iterator[None]:
        """Around a transaction that moves the side tables' counters as it goes: when it
        fails (and so was rolled back), the counters are read again from the disk."""
        try:
            yield
        except BaseException:
            self._reload_side_counts()
            raise

    def _reload_side_counts(self) -> None:
        """After a rollback: the row counts of the bounded side tables, as on disk."""
        try:
            self._held_rows = int(self._scalar("SELECT count(*) FROM held"))
            self._unsynced_rows = int(self._scalar("SELECT count(*) FROM unsynced"))
            self._quarantine_rows = int(self._scalar("SELECT count(*) FROM quarantine"))
            self._dead_rows = int(self._scalar("SELECT count(*) FROM dead_letter"))
        except sqlite3.Error:
            pass

    def _bump(self, db: sqlite3.Connection, **deltas: int) -> None:
        rows = [(name, n) for name, n in deltas.items() if n]
        if rows:
            db.executemany(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                rows,
            )

    # -- forwarding ----------------------------------------------------------------------

    def fetch(self, limit: int) -> list[tuple[int, str]]:
        """The oldest ``limit`` rows, oldest first (none while the file cannot open)."""
        try:
            db = self._db
        except NotOpen:
            return []
        return [
            (int(i), str(s))
            for i, s in db.execute("SELECT id, line FROM spool ORDER BY id LIMIT ?", (limit,))
        ]

    def delete_range(self, first: int, last: int) -> int:
        """Delete delivered rows ``first..last``; returns how many were still there.

        Ids only grow (AUTOINCREMENT), so the range holds exactly the rows fetched as one
        batch, less any that eviction or quarantine removed meanwhile.
        """
        try:
            db = self._db
            with transaction(db):
                lengths = db.execute(
                    "DELETE FROM spool WHERE id BETWEEN ? AND ? "
                    "RETURNING length(CAST(line AS BLOB))", (first, last),
                ).fetchall()
                removed = len(lengths)
                self._bump(db, written=removed)
        except sqlite3.Error as exc:
            raise SpoolError(f"deleting delivered rows failed: {exc}") from exc
        self._rows -= removed
        self._bytes -= sum(int(n) for (n,) in lengths) + ROW_OVERHEAD * removed
        self._totals["written"] += removed
        self._oldest_time_ns = self._read_oldest_time() if self._rows else None
        return removed

    def quarantine(self, rows: Sequence[tuple[int, str]], *, status: int | None, reason: str,
                   at_ns: int) -> None:
        """Move rows InfluxDB refused out of the spool, with the server's reason."""
        removed, removed_bytes = 0, 0
        try:
            db = self._db
            with self._side_counts_kept(), transaction(db):
                self._insert_quarantine(db, ((at_ns, status, reason, line) for _, line in rows),
                                        len(rows))
                for row_id, _ in rows:
                    cur = db.execute(
                        "DELETE FROM spool WHERE id = ? RETURNING length(CAST(line AS BLOB))",
                        (row_id,),
                    )
                    for (length,) in cur.fetchall():
                        removed += 1
                        removed_bytes += int(length) + ROW_OVERHEAD
                self._bump(db, quarantined=len(rows))
        except sqlite3.Error as exc:
            raise SpoolError(f"quarantining refused rows failed: {exc}") from exc
        self._rows -= removed
        self._bytes -= removed_bytes
        self._totals["quarantined"] += len(rows)
        self._oldest_time_ns = self._read_oldest_time() if self._rows else None

    # -- held readings (clock without RTC) -------------------------------------------------

    def release_held(self, boot_id: str, offset_ns: int, *, limit: int = 5000) -> int:
        """Move up to ``limit`` held rows of boot ``boot_id`` to the spool, oldest first, each
        stamped ``boot_ns + offset_ns`` (``offset_ns`` = wall - boottime, sampled once the
        clock is synchronised). One transaction: a row is in ``held`` or in ``spool``, never
        both, never neither. Returns how many moved."""
        try:
            db = self._db
            with transaction(db):
                rows = db.execute(
                    "SELECT id, boot_ns, body FROM held WHERE boot_id = ? ORDER BY id LIMIT ?",
                    (boot_id, limit)).fetchall()
                if not rows:
                    return 0
                lines = [f"{body} {int(boot_ns) + offset_ns}" for _, boot_ns, body in rows]
                added_bytes = sum(len(s) for s in lines) + ROW_OVERHEAD * len(lines)
                evicted, evicted_bytes, for_reserve = self._make_room(db, added_bytes)
                db.executemany("INSERT INTO spool(line) VALUES (?)", ((s,) for s in lines))
                db.execute("DELETE FROM held WHERE boot_id = ? AND id <= ?",
                           (boot_id, rows[-1][0]))
                over = self._bytes - evicted_bytes + added_bytes - self.max_bytes
                if over > 0:
                    n, b = self._evict(over)
                    evicted, evicted_bytes = evicted + n, evicted_bytes + b
                self._bump(db, spooled=len(lines), evicted=evicted, released=len(lines),
                           evicted_for_reserve=for_reserve)
        except sqlite3.Error as exc:
            raise SpoolError(f"releasing held readings failed: {exc}") from exc
        if self._rows == 0:
            self._oldest_time_ns = split_time(lines[0])[1]
        self._rows += len(lines) - evicted
        self._bytes += added_bytes - evicted_bytes
        self._held_rows -= len(lines)
        self._totals["spooled"] += len(lines)
        self._totals["evicted"] += evicted
        self._space_totals["evicted_for_reserve"] += for_reserve
        self._clock_totals["released"] += len(lines)
        if evicted:
            self._oldest_time_ns = self._read_oldest_time()
        return len(lines)

    def keep_apart(self, boot_id: str, *, reason: str, at_ns: int) -> int:
        """Move held rows of every boot but ``boot_id`` to ``unsynced``: their boot ended
        before its clock was synchronised, so no correction is known. Never sent. Returns
        how many moved."""
        try:
            db = self._db
            with self._side_counts_kept(), transaction(db):
                moved = db.execute(
                    "INSERT INTO unsynced(at_ns, boot_id, boot_ns, received_at_ns, reason, body)"
                    " SELECT ?, boot_id, boot_ns, received_at_ns, ?, body FROM held"
                    " WHERE boot_id != ? ORDER BY id", (at_ns, reason, boot_id)).rowcount
                db.execute("DELETE FROM held WHERE boot_id != ?", (boot_id,))
                self._unsynced_rows += moved
                dropped = 0
                if self._unsynced_rows > self.unsynced_max_rows:
                    dropped = self._unsynced_rows - self.unsynced_max_rows
                    db.execute("DELETE FROM unsynced WHERE id IN "
                               "(SELECT id FROM unsynced ORDER BY id LIMIT ?)", (dropped,))
                    self._unsynced_rows = self.unsynced_max_rows
                self._bump(db, kept_apart=moved, unsynced_evicted=dropped)
        except sqlite3.Error as exc:
            raise SpoolError(f"keeping held readings apart failed: {exc}") from exc
        self._held_rows -= moved
        self._clock_totals["kept_apart"] += moved
        self._clock_totals["unsynced_evicted"] += dropped
        return moved

    @property
    def held_rows(self) -> int:
        return self._held_rows

    @property
    def unsynced_rows(self) -> int:
        return self._unsynced_rows

    def clock_totals(self) -> dict[str, int]:
        """Lifetime counts of the clock's work (held, released, kept_apart, ...)."""
        return dict(self._clock_totals)

    def held(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            db = self._db
        except NotOpen:
            return []
        cur = db.execute(
            "SELECT id, boot_id, boot_ns, received_at_ns, body FROM held ORDER BY id LIMIT ?",
            (limit,))
        return [{"id": r[0], "boot_id": r[1], "boot_ns": r[2], "received_at_ns": r[3],
                 "body": r[4]} for r in cur]

    def unsynced(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            db = self._db
        except NotOpen:
            return []
        cur = db.execute(
            "SELECT id, at_ns, boot_id, boot_ns, received_at_ns, reason, body FROM unsynced"
            " ORDER BY id DESC LIMIT ?", (limit,))
        return [{"id": r[0], "at_ns": r[1], "boot_id": r[2], "boot_ns": r[3],
                 "received_at_ns": r[4], "reason": r[5], "body": r[6]} for r in cur]

    # -- redelivery ----------------------------------------------------------------------

    def seen_time(self, key: int) -> int | None:
        try:
            db = self._db
        except NotOpen:
            return None
        row = db.execute("SELECT received_at_ns FROM seen WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def prune_seen(self, older_than_ns: int) -> int:
        try:
            cur = self._db.execute("DELETE FROM seen WHERE received_at_ns < ?",
                                   (older_than_ns,))
        except sqlite3.Error as exc:
            raise SpoolError(f"pruning redelivery keys failed: {exc}") from exc
        return cur.rowcount

    # -- inspection ----------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows waiting to be sent (a counter: no query, no file access)."""
        return self._rows

    def statistics(self) -> SpoolStats:
        try:
            file_bytes = spool_file_bytes(self.path)
        except OSError:
            file_bytes = 0
        return SpoolStats(
            rows=self._rows,
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            file_bytes=file_bytes,
            oldest_time_ns=self._oldest_time_ns,
            quarantine_rows=self._quarantine_rows,
            dead_letter_rows=self._dead_rows,
            totals=dict(self._totals),
            min_free_bytes=self.min_free_bytes,
            evicted_for_reserve=self._space_totals["evicted_for_reserve"],
            open_error=self.open_error,
        )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            db = self._db
        except NotOpen:
            return []
        cur = db.execute(
            "SELECT id, at_ns, source, topic, kind, error, payload FROM dead_letter "
            "ORDER BY id DESC LIMIT ?", (limit,))
        return [
            {"id": r[0], "at_ns": r[1], "source": r[2], "topic": r[3], "kind": r[4],
             "error": r[5], "payload": bytes(r[6]).decode("utf-8", "backslashreplace")}
            for r in cur
        ]

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            db = self._db
        except NotOpen:
            return []
        cur = db.execute(
            "SELECT id, at_ns, status, reason, line FROM quarantine ORDER BY id DESC LIMIT ?",
            (limit,))
        return [
            {"id": r[0], "at_ns": r[1], "status": r[2], "reason": r[3], "line": r[4]} for r in cur
        ]


class Spool:
    """The spool for the event loop: every database call runs on one dedicated thread."""

    def __init__(self, db: SpoolDB, *, disk: DiskHealth | None = None) -> None:
        self.db = db
        # Refused writes are reported here (full card, I/O error), then raised to the caller,
        # which keeps what it could not commit and tries again.
        self.disk = disk
        self._ratelog = RateLimitedLog(log, 60.0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        # Set after each commit so the forwarder wakes without polling.
        self.appended = asyncio.Event()
        # Set after a commit that held readings, so the clock watcher releases them at once
        # when the clock is already synchronised.
        self.held_appended = asyncio.Event()

    @classmethod
    def open(cls, path: Path, *, disk: DiskHealth | None = None, **kwargs: Any) -> Spool:
        return cls(SpoolDB(path, **kwargs), disk=disk)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _write(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A write on the spool's thread; a refusal is reported to ``disk`` and raised."""
        try:
            result = await self._run(fn, *args, **kwargs)
        except SpoolError as exc:
            if self.disk is not None:
                self.disk.failed("spool", what, exc.__cause__ or exc)
            raise
        if self.disk is not None:
            self.disk.succeeded("spool")
        return result

    async def append(
        self,
        lines: Sequence[str],
        *,
        dead: Sequence[DeadLetter] = (),
        seen: Sequence[tuple[int, int]] = (),
        held: Sequence[HeldLine] = (),
        refused: Sequence[Refused] = (),
    ) -> int:
        evicted: int = await self._write("commit", self.db.append, lines, dead=dead, seen=seen,
                                         held=held, refused=refused)
        if self.db.rows:
            # Also the first commit after a file that could not open did: its rows wait too.
            self.appended.set()
        if held:
            self.held_appended.set()
        if evicted:
            self._ratelog.warning(("spool", "evicted"),
                                  "spool full: evicted=%d oldest rows to stay under "
                                  "max_bytes=%d",
                        evicted, self.db.max_bytes)
        return evicted

    async def fetch(self, limit: int) -> list[tuple[int, str]]:
        rows: list[tuple[int, str]] = await self._run(self.db.fetch, limit)
        return rows

    async def delete_range(self, first: int, last: int) -> int:
        n: int = await self._write("delete", self.db.delete_range, first, last)
        return n

    async def quarantine(self, rows: Sequence[tuple[int, str]], *, status: int | None,
                         reason: str) -> None:
        await self._write("quarantine", self.db.quarantine, rows, status=status, reason=reason,
                          at_ns=time.time_ns())

    async def release_held(self, boot_id: str, offset_ns: int, *, limit: int = 5000) -> int:
        n: int = await self._write("release", self.db.release_held, boot_id, offset_ns,
                                   limit=limit)
        if n:
            self.appended.set()
        return n

    async def keep_apart(self, boot_id: str, *, reason: str) -> int:
        n: int = await self._write("keep_apart", self.db.keep_apart, boot_id, reason=reason,
                                   at_ns=time.time_ns())
        return n

    async def unsynced(self, limit: int = 100) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._run(self.db.unsynced, limit)
        return rows

    @property
    def held_rows(self) -> int:
        return self.db.held_rows

    async def seen_time(self, key: int) -> int | None:
        t: int | None = await self._run(self.db.seen_time, key)
        return t

    async def prune_seen(self, older_than_ns: int) -> int:
        n: int = await self._write("prune", self.db.prune_seen, older_than_ns)
        return n

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._run(self.db.dead_letters, limit)
        return rows

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._run(self.db.quarantined, limit)
        return rows

    @property
    def rows(self) -> int:
        return self.db.rows

    def statistics(self) -> SpoolStats:
        return self.db.statistics()

    async def close(self) -> None:
        await self._run(self.db.close)
        self._executor.shutdown(wait=True)


class SeenLookup:
    """A read-only view of the redelivery keys for the loop thread.

    WAL lets this connection read while the spool thread writes; lookups happen only for
    redelivered (DUP) messages, so the rare synchronous read does not hold up the loop. Opened
    at the first lookup. A lookup the card refuses answers "not seen": the message is then
    processed again, and its points, stamped as before, overwrite themselves in InfluxDB.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self.failures = 0

    def get(self, key: int) -> int | None:
        try:
            if self._db is None:
                self._db = _open_read_only(self._path, busy_timeout_s=5.0)
            row = self._db.execute("SELECT received_at_ns FROM seen WHERE key = ?",
                                   (key,)).fetchone()
        except sqlite3.Error as exc:
            self.failures += 1
            log.warning("redelivery key lookup failed (%s): the message is processed again",
                        exc)
            return None
        return None if row is None else int(row[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# -- inspection from another process ---------------------------------------------------------

FILE_NAME = "spool.sqlite3"
"""The spool's file name in ``data_dir``."""

# Read as empty when a file has no such table: older spool files have no held/unsynced yet.
_SIDE_TABLES = ("held", "unsynced", "quarantine", "dead_letter")

SpoolReadFailure = Literal["open", "busy", "schema", "damaged"]


class SpoolReadError(SpoolError):
    """A spool file could not be inspected; the message is SQLite's own.

    ``kind`` says what a technician can do about it: ``open``, the file cannot be opened (owner,
    permissions); ``busy``, the gateway held its lock past the busy timeout (try again);
    ``schema``, SQLite but not a spool of this gateway, or damaged; ``damaged``, not a database
    at all, or corrupt.
    """

    def __init__(self, message: str, *, kind: SpoolReadFailure, path: Path) -> None:
        super().__init__(message)
        self.kind: SpoolReadFailure = kind
        self.path = path


@dataclass(frozen=True, slots=True)
class SpoolSnapshot:
    """A spool file as another process sees it (:func:`inspect_spool`).

    Row counts come from the first and last ids, not from a scan: rows leave each table from
    the front, so this is exact but for rows taken from the middle (quarantined lines, held
    rows of one boot) and costs two index lookups however big the file is.
    """

    path: Path
    db_bytes: int
    wal_bytes: int
    shm_bytes: int
    rows: int
    oldest_time_ns: int | None
    held_rows: int
    unsynced_rows: int
    quarantine_rows: int
    dead_letter_rows: int
    totals: dict[str, int]
    clock_totals: dict[str, int]

    @property
    def file_bytes(self) -> int:
        """The database and its WAL, as :attr:`SpoolStats.file_bytes` counts them."""
        return self.db_bytes + self.wal_bytes


def _is_full(exc: BaseException | None) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _shm(path: Path) -> Path:
    return path.with_name(path.name + "-shm")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def spool_file_bytes(path: Path) -> int:
    """The spool's database file and its WAL (0 for what does not exist).

    The ``-shm`` file is left out: it is SQLite's shared-memory index of the WAL, a few KiB
    that do not grow with the data.
    """
    return _file_size(path) + _file_size(_wal(path))


def _open_read_only(path: Path, *, busy_timeout_s: float) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                           timeout=busy_timeout_s, isolation_level=None)


def inspect_spool(path: Path, *, busy_timeout_s: float = 0.5) -> SpoolSnapshot:
    """Read the spool file at ``path`` without disturbing the gateway that writes it.

    Read-only, in one read transaction (a consistent snapshot; WAL lets the gateway go on
    writing meanwhile), waiting at most ``busy_timeout_s`` for a lock. The ``spool`` and
    ``counters`` tables must be there; older spool files without the newer side tables
    (``held``, ``unsynced``) read as having none of those rows. Raises
    :class:`SpoolReadError` when the file cannot be read.
    """
    db_bytes, wal_bytes, shm_bytes = (_file_size(p) for p in (path, _wal(path), _shm(path)))
    try:
        db = _open_read_only(path, busy_timeout_s=busy_timeout_s)
    except sqlite3.Error as exc:
        raise SpoolReadError(str(exc), kind="open", path=path) from exc
    try:
        with transaction(db, immediate=False):
            tables = {str(name) for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = _rows_by_ids(db, "spool")
            oldest = db.execute("SELECT line FROM spool ORDER BY id LIMIT 1").fetchone()
            totals = dict.fromkeys(COUNTERS, 0)
            clock_totals = dict.fromkeys(CLOCK_COUNTERS, 0)
            for name, value in db.execute("SELECT name, value FROM counters"):
                if name in SPACE_COUNTERS:
                    continue
                (clock_totals if name in clock_totals else totals)[str(name)] = int(value)
            side = {t: _rows_by_ids(db, t) if t in tables else 0 for t in _SIDE_TABLES}
    except sqlite3.OperationalError as exc:
        busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        raise SpoolReadError(str(exc), kind="busy" if busy else "schema", path=path) from exc
    except sqlite3.DatabaseError as exc:
        raise SpoolReadError(str(exc), kind="damaged", path=path) from exc
    finally:
        db.close()
    return SpoolSnapshot(
        path=path, db_bytes=db_bytes, wal_bytes=wal_bytes, shm_bytes=shm_bytes, rows=rows,
        oldest_time_ns=None if oldest is None else split_time(str(oldest[0]))[1],
        held_rows=side["held"], unsynced_rows=side["unsynced"],
        quarantine_rows=side["quarantine"], dead_letter_rows=side["dead_letter"],
        totals=totals, clock_totals=clock_totals,
    )


def _rows_by_ids(db: sqlite3.Connection, table: str) -> int:
    first, last = db.execute(f"SELECT min(id), max(id) FROM {table}").fetchone()
    return 0 if first is None else int(last) - int(first) + 1
