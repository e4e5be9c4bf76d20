"""``gateway.core.sqlite.transaction`` against real SQLite files: commit, rollback, the original
error kept when SQLite rolled back by itself, a failed COMMIT, nesting refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.sqlite import transaction


def connect(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "t.sqlite3"
    with transaction(conn := connect(path)):
        conn.execute("CREATE TABLE t (x TEXT NOT NULL)")
    conn.close()
    return path


@pytest.fixture
def conn(path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(path)
    yield conn
    conn.close()


def rows(path: Path) -> list[str]:
    """What another connection sees: only what was committed."""
    other = connect(path)
    try:
        return [str(x) for (x,) in other.execute("SELECT x FROM t ORDER BY rowid")]
    finally:
        other.close()


class Boom(Exception):
    pass


def insert_then_raise(conn: sqlite3.Connection, error: BaseException) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES ('a')")
        raise error


def test_a_block_that_ends_normally_is_committed(path: Path, conn: sqlite3.Connection) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES ('a')")
        conn.execute("INSERT INTO t VALUES ('b')")
        assert conn.in_transaction
        assert rows(path) == []  # not visible before the commit
    assert not conn.in_transaction
    assert rows(path) == ["a", "b"]


@pytest.mark.parametrize("error", [Boom("the block broke"), KeyboardInterrupt()])
def test_an_error_rolls_back_and_propagates_unchanged(
    path: Path, conn: sqlite3.Connection, error: BaseException,
) -> None:
    with pytest.raises(type(error)) as raised:
        insert_then_raise(conn, error)
    assert raised.value is error
    assert not getattr(error, "__notes__", None)
    assert not conn.in_transaction
    assert rows(path) == []
    with transaction(conn):  # the connection is fine afterwards
        conn.execute("INSERT INTO t VALUES ('b')")
    assert rows(path) == ["b"]


def test_disk_full_is_the_error_seen_although_sqlite_already_rolled_back(
    path: Path, conn: sqlite3.Connection,
) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES ('kept')")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages + 1}")

    def fill() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES ('a')")
            conn.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 50)

    with pytest.raises(sqlite3.OperationalError) as raised:
        fill()
    assert raised.value.sqlite_errorname == "SQLITE_FULL"
    assert str(raised.value) == "database or disk is full"
    # SQLite rolled the whole transaction back itself: a ROLLBACK now would fail with "cannot
    # rollback - no transaction is active", and that error used to replace this one.
    assert not conn.in_transaction
    with pytest.raises(sqlite3.OperationalError, match="no transaction is active"):
        conn.execute("ROLLBACK")
    assert not getattr(raised.value, "__notes__", None)
    assert rows(path) == ["kept"]


def test_a_commit_that_fails_is_rolled_back(path: Path, conn: sqlite3.Connection) -> None:
    # A deferred foreign key is checked at COMMIT, which then fails with the transaction open.
    conn.execute("PRAGMA foreign_keys=ON")
    with transaction(conn):
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent INTEGER REFERENCES parent(id)"
                     " DEFERRABLE INITIALLY DEFERRED)")

    def orphan() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES ('a')")
            conn.execute("INSERT INTO child VALUES (42)")

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        orphan()
    assert not conn.in_transaction  # not left open for the next BEGIN to trip on
    assert rows(path) == []


def test_a_rollback_that_fails_leaves_the_original_error_with_a_note(
    path: Path, conn: sqlite3.Connection,
) -> None:
    def refuse_rollback(action: int, arg1: str | None, *rest: object) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "ROLLBACK":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    error = Boom("the block broke")
    conn.set_authorizer(refuse_rollback)
    with pytest.raises(Boom) as raised:
        insert_then_raise(conn, error)
    assert raised.value is error
    assert raised.value.__notes__ == ["and the ROLLBACK after it failed: not authorized"]
    conn.set_authorizer(None)
    conn.execute("ROLLBACK")
    assert rows(path) == []


def test_immediate_takes_the_write_lock_at_begin_deferred_does_not(
    path: Path, conn: sqlite3.Connection,
) -> None:
    other = connect(path, timeout=0)
    try:
        with transaction(conn), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        with transaction(conn, immediate=False):
            conn.execute("SELECT count(*) FROM t").fetchone()
            with transaction(other):  # a reader does not hold other writers up
                other.execute("INSERT INTO t VALUES ('other')")
    finally:
        other.close()
    assert rows(path) == ["other"]


def test_nesting_is_refused_and_leaves_the_outer_transaction_alone(
    path: Path, conn: sqlite3.Connection,
) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES ('outer')")
        with (pytest.raises(sqlite3.OperationalError, match="within a transaction"),
              transaction(conn)):
            conn.execute("INSERT INTO t VALUES ('inner')")  # never runs
        assert conn.in_transaction  # the refused inner block did not roll the outer back
    assert rows(path) == ["outer"]


def test_a_connection_with_implicit_transactions_is_refused(path: Path) -> None:
    legacy = sqlite3.connect(path)  # isolation_level "" : Python BEGINs on its own
    try:
        with pytest.raises(ValueError, match="isolation_level=None"), transaction(legacy):
            pass
        assert not legacy.in_transaction
    finally:
        legacy.close()
