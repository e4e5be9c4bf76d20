"""The alerts' durable outbox: every message is on the card before it is sent (issue 16).

``data_dir/outbox.sqlite3``, one row per message and target, kept to the spool's standards (WAL,
``synchronous=FULL``: a committed row survives a crash and a power cut; a write the card refuses
is reported to :class:`~gateway.core.disk.DiskHealth`). The alerter adds a message's rows in one
transaction before it queues the message in memory, deletes a row once its target accepted it
(or refused it for good, or it expired), and reads every row back at start, so a restart during
a storm loses nothing and a message acknowledged by its target is never sent again.

Rows come back in the order they go out: by priority (flood warnings and sensor faults before
device-down reminders), then as they were queued. A message keeps its ``id`` through restarts
and retries: a receiver drops a repeat by it (a crash between a target's answer and the delete
sends that one message again: at least once, never lost).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.core.disk import DiskHealth
from gateway.core.salvage import TableSalvage, salvage

log = logging.getLogger(__name__)

FILE_NAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq       INTEGER PRIMARY KEY,
    target    TEXT    NOT NULL,
    id        TEXT    NOT NULL,
    priority  INTEGER NOT NULL,
    queued_ns INTEGER NOT NULL,
    body      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (target, priority, seq);
"""


class Outbox:
    """Rows of messages not yet settled with their target. Opened lazily: a card that will not
    open the file now (full) gets another try on the next write."""

    def __init__(self, path: Path, *, disk: DiskHealth | None = None) -> None:
        self.path = path
        self._disk = disk
        self._db: sqlite3.Connection | None = None
        self.write_failures = 0
        # Rows in the file: counted once, then kept by add and settle (the status asks often:
        # every /health).
        self._rows: int | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                # 128 KiB of page cache, not SQLite's 2 MiB: a handful of alerts in flight.
                db.execute("PRAGMA cache_size=-128")
                db.executescript(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    def add(self, rows: Iterable[tuple[str, str, int, int, dict[str, Any]]]) -> list[int]:
        """``(target, id, priority, queued_ns, body)`` rows, committed together; their
        sequence numbers. Raises :class:`sqlite3.Error` when the card refuses (counted)."""
        try:
            db = self._open()
            seqs: list[int] = []
            with db:
                db.execute("BEGIN IMMEDIATE")
                for target, alert_id, priority, queued_ns, body in rows:
                    cur = db.execute(
                        "INSERT INTO outbox (target, id, priority, queued_ns, body) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (target, alert_id, priority, queued_ns,
                         json.dumps(body, separators=(",", ":"), ensure_ascii=False)))
                    seqs.append(int(cur.lastrowid or 0))
        except sqlite3.Error as exc:
            self._refused("add", exc)
            raise
        self._ok()
        if self._rows is not None:
            self._rows += len(seqs)
        return seqs

    def settle(self, seq: int) -> bool:
        """The row is done with (sent, refused for good, expired): gone. False when the card
        refused the delete (the row may be sent again after a restart: the id says so)."""
        try:
            deleted = self._open().execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
        except sqlite3.Error as exc:
            self._refused("settle", exc)
            return False
        self._ok()
        if self._rows is not None:
            self._rows -= deleted
        return True

    def pending(self) -> list[tuple[int, str, int, int, dict[str, Any]]]:
        """Every row, in sending order: ``(seq, target, priority, queued_ns, body)``."""
        try:
            rows = self._open().execute(
                "SELECT seq, target, priority, queued_ns, body FROM outbox "
                "ORDER BY priority, seq").fetchall()
        except sqlite3.Error as exc:
            self._refused("read", exc)
            return []
        out = []
        for seq, target, priority, queued_ns, body in rows:
            try:
                out.append((seq, target, priority, queued_ns, json.loads(body)))
            except ValueError:
                log.error("outbox row seq=%d is not JSON: dropped", seq)
                self.settle(seq)
        return out

    def salvage_from(self, damaged: Path) -> list[TableSalvage]:
        """Copy the rows that can still be read of a damaged outbox (set aside) into this one:
        the alerts not yet sent go out after all."""
        self._rows = None  # counted again after the copy
        return salvage(damaged, self._open(), ("outbox",))

    def count(self) -> int | None:
        """Rows waiting; None while the file cannot be read."""
        if self._rows is None:
            try:
                self._rows = int(self._open().execute(
                    "SELECT count(*) FROM outbox").fetchone()[0])
            except sqlite3.Error:
                return None
        return self._rows

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._rows = None

    def _refused(self, what: str, exc: sqlite3.Error) -> None:
        self.write_failures += 1
        if self._disk is not None:
            self._disk.failed("outbox", what, exc)
        log.error("outbox %s refused by the card (%s): the alert is kept in memory only",
                  what, exc)

    def _ok(self) -> None:
        if self._disk is not None:
            self._disk.succeeded("outbox")
