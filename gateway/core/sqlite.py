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
from collections.abc import Iterator
from contextlib import contextmanager


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
