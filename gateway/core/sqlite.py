"""One way to write a SQLite transaction: :func:`transaction`.

The spool, the registry and the history each own a connection in autocommit mode
(``isolation_level=None``) and group their writes by hand. Written out each time, the
BEGIN/COMMIT/ROLLBACK dance had two traps:

- after some errors SQLite has already rolled the whole transaction back itself (``SQLITE_FULL``,
  ``SQLITE_IOERR``, ``SQLITE_NOMEM``, some ``SQLITE_BUSY``); a ROLLBACK then fails with "cannot
  rollback - no transaction is active", and that error replaced the one that mattered ("database
  or disk is full");
- a COMMIT that fails leaves the transaction open, and the connection's next BEGIN fails too.

:func:`transaction` rolls back only while ``conn.in_transaction`` says there is something to
roll back, and always re-raises the original error. A ROLLBACK that fails anyway leaves the
original error in charge, with a note saying so.

Transactions do not nest: SQLite refuses a BEGIN inside a transaction ("cannot start a
transaction within a transaction", :class:`sqlite3.OperationalError`), and the outer transaction
is left as it was, for its own owner to commit or roll back. Savepoints would allow nesting;
nothing here needs it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.core.disk import NotOpen


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[None]:
    """``BEGIN`` (``BEGIN IMMEDIATE`` by default), then ``COMMIT`` if the block ends normally.

    ``immediate=True`` takes the write lock at once, so a writer waits for it (busy timeout) at
    the start instead of failing with SQLITE_BUSY halfway through; ``False`` is a deferred
    transaction, for readers and for writers that are the only one on their file.

    On any exception, from the block or from the COMMIT, the transaction is rolled back if
    SQLite has not already done so, and the exception propagates unchanged. ``conn`` must be in
    autocommit mode (``isolation_level=None``): Python's own implicit transactions would
    otherwise interleave with these.
    """
    if conn.isolation_level is not None:
        raise ValueError("transaction() needs a connection opened with isolation_level=None")
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        _rollback(conn, exc)
        raise


def _rollback(conn: sqlite3.Connection, exc: BaseException) -> None:
    if not conn.in_transaction:
        return  # SQLite already rolled back (SQLITE_FULL, SQLITE_IOERR, ...)
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as failed:
        # The original error says what went wrong; this one only says that cleaning up did too.
        exc.add_note(f"and the ROLLBACK after it failed: {failed}")


class SqliteFile:
    """A SQLite file that may not open at once: a card full at start must not stop the gateway.

    ``setup`` runs on each new connection (pragmas, schema). When opening fails, :attr:`db`
    raises :class:`gateway.core.disk.NotOpen` (an ``sqlite3.OperationalError`` carrying the
    cause) and tries again at most every ``retry_s``; the owner treats that like any refused
    write or read, and the first access after space returns opens the file.
    """

    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None], *,
                 retry_s: float = 10.0, clock: Clock = SYSTEM_CLOCK,
                 check_same_thread: bool = True,
                 on_open: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = path
        self._setup = setup
        self._retry_s = retry_s
        self._clock = clock
        self._check_same_thread = check_same_thread
        self._on_open = on_open
        self._db: sqlite3.Connection | None = None
        self.error: BaseException | None = None
        self._next_try = 0.0
        self.opened = 0
        self.try_open()

    def try_open(self) -> bool:
        """Open now if not open; False (and :attr:`error` set) when it cannot."""
        if self._db is not None:
            return True
        self._next_try = self._clock.monotonic() + self._retry_s
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None,
                                 check_same_thread=self._check_same_thread)
            self._setup(db)
            if self._on_open is not None:
                self._on_open(db)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            self.error = exc
            return False
        self._db = db
        self.error = None
        self.opened += 1
        return True

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None and self._clock.monotonic() >= self._next_try:
            self.try_open()
        if self._db is None:
            raise NotOpen(self.path, self.error)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
