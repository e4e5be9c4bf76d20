"""A damaged SQLite file is set aside, not fatal: check at start, move aside, keep what reads.

An SD card corrupts files: a power cut in the middle of a write on a card that lies about its
flushes, or a worn card that returns garbage for a page. SQLite then says "database disk image
is malformed" or "file is not a database", and a gateway that simply opened its files would not
start. At start each file is checked (:func:`check`: ``PRAGMA quick_check``); a damaged one is
renamed with a timestamp, companions (``-wal``, ``-shm``) too (:func:`set_aside`), and its
owner decides: the history (derived data) starts fresh; the state and the spool get what can
still be read copied into a fresh file (:func:`salvage`).

Salvage reads each table in rowid order, in chunks. A chunk that fails means a damaged page:
the reader probes further ids (1, 2, 4, ... ahead) until a read works, then narrows the gap
down by halving, so only the rows on the damaged pages are lost. Pure Python: no ``sqlite3``
command-line tool (its ``.recover`` is better still, but not on every Pi).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

CHUNK = 500
# How far past a damaged page a read is tried, at most (ids are 64-bit).
MAX_SKIP = 1 << 40


@dataclass(frozen=True, slots=True)
class TableSalvage:
    table: str
    copied: int
    # Ids missing between the first and last id read (an upper bound for tables whose ids are
    # dense), or None when the ids cannot be known.
    lost: int | None
    error: str | None


def check(path: Path) -> str | None:
    """None when the file is absent or intact (or cannot be read for another reason than
    damage: a full card, its owner); else SQLite's words for what is wrong.

    Opens the file as its owner would (a WAL left by a crash is replayed, as at any open) and
    runs ``PRAGMA quick_check``. Never raises for a damaged file.
    """
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return str(exc)
        # Not damage (its owner, a full card, a lock): the owner's own open says so.
        return None
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    return "; ".join(problems[:3]) if problems else None


def _companions(path: Path) -> list[tuple[str, Path]]:
    return [("", path), ("-wal", path.with_name(path.name + "-wal")),
            ("-shm", path.with_name(path.name + "-shm")),
            ("-journal", path.with_name(path.name + "-journal"))]


def set_aside(path: Path, *, now: datetime, keep: int = 2) -> Path:
    """Rename ``path`` and its companions to ``<name>.damaged-YYYYMMDDTHHMMSSZ[-wal|-shm]``;
    returns the main file's new path. Only the newest ``keep`` sets are kept (a worn card must
    not fill up with copies of its own damage)."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix, p in _companions(path):
        if p.exists():
            p.rename(target.with_name(target.name + suffix))
    sets = sorted(p for p in path.parent.glob(f"{path.name}.damaged-*")
                  if p.name.endswith("Z"))
    for old in sets[:-keep] if keep > 0 else sets:
        for _, p in _companions(old):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return target


def salvage(source: Path, target: sqlite3.Connection,
            tables: Sequence[str]) -> list[TableSalvage]:
    """Copy every readable row of ``tables`` from ``source`` into ``target`` (same table names,
    the columns both have, rowids kept, ``INSERT OR IGNORE``). ``target`` is in autocommit mode;
    each chunk is committed as it is copied. Never raises for damage in ``source``."""
    try:
        src = sqlite3.connect(source, timeout=5)
        # A truncated file's header counts more pages than the file has: SQLite calls that
        # corrupt unless the schema is "writable", and then reads the pages that are there.
        src.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error as exc:
        return [TableSalvage(t, 0, None, str(exc)) for t in tables]
    with contextlib.closing(src):
        return [_table(src, target, t) for t in tables]


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in db.execute(f'PRAGMA table_info("{table}")')]


def _table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str) -> TableSalvage:
    try:
        have = _columns(src, table)
    except sqlite3.Error as exc:
        return TableSalvage(table, 0, None, str(exc))
    want = _columns(dst, table)
    if not have or not want:
        missing = "source" if not have else "target"
        return TableSalvage(table, 0, None, f"no table {table!r} in the {missing}")
    cols = [c for c in want if c in have]
    names = ", ".join(f'"{c}"' for c in cols)
    select = f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT ?'
    insert = (f'INSERT OR IGNORE INTO "{table}" (rowid, {names}) '
              f'VALUES ({", ".join("?" for _ in range(len(cols) + 1))})')
    top = _highest(src, table)
    copied, first_id, last_id, first_error = 0, None, None, None
    after = -(1 << 63)
    while True:
        rows, error = _read(src, select, after)
        if rows:
            dst.execute("BEGIN")
            dst.executemany(insert, rows)
            dst.execute("COMMIT")
            copied += len(rows)
            first_id = int(rows[0][0]) if first_id is None else first_id
            last_id = after = int(rows[-1][0])
        if error is None:
            if len(rows) < CHUNK:
                break
            continue
        first_error = first_error or error
        skip = _skip(src, select, after, top)
        if skip is None:
            break
        after += skip
    lost = None
    if first_id is not None and last_id is not None and top is not None:
        lost = max(0, max(top, last_id) - first_id + 1 - copied)
    return TableSalvage(table, copied, lost, first_error)


def _read(src: sqlite3.Connection, select: str, after: int
          ) -> tuple[list[tuple[Any, ...]], str | None]:
    """Up to a chunk of rows after ``after``; the rows read before an error, and the error."""
    rows: list[tuple[Any, ...]] = []
    try:
        cur = src.execute(select, (after, CHUNK))
        while batch := cur.fetchmany(50):
            rows.extend(batch)
    except sqlite3.DatabaseError as exc:
        return rows, str(exc)
    return rows, None


def _readable(src: sqlite3.Connection, select: str, after: int) -> bool:
    try:
        src.execute(select, (after, 1)).fetchall()
    except sqlite3.DatabaseError:
        return False
    return True


def _skip(src: sqlite3.Connection, select: str, after: int, top: int | None) -> int | None:
    """The smallest step past ``after`` from which rows read again, or None: nothing does."""
    limit = MAX_SKIP if top is None else max(1, top - after)
    step = 1
    while not _readable(src, select, after + step):
        if step >= limit:
            return None
        step = min(step * 2, limit)
    lo, hi = step // 2, step  # lo fails (or is 0), hi reads
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _readable(src, select, after + mid):
            hi = mid
        else:
            lo = mid
    return hi


def _highest(src: sqlite3.Connection, table: str) -> int | None:
    """The table's highest rowid: from the b-tree, else from ``sqlite_sequence``."""
    with contextlib.suppress(sqlite3.DatabaseError):
        row = src.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
    with contextlib.suppress(sqlite3.DatabaseError):
        row = src.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
    return None
