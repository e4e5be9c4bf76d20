"""The spool on its own: durability, eviction, quarantine, dead letters, redelivery keys."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.core.disk import classify
from gateway.core.errors import SpoolError
from gateway.store.spool import (
    FILE_NAME,
    ROW_OVERHEAD,
    DeadLetter,
    HeldLine,
    SeenLookup,
    Spool,
    SpoolDB,
    SpoolReadError,
    inspect_spool,
    spool_file_bytes,
)
from tests.conftest import ROOT, fill_card, small_card, wait_for


def line(i: int) -> str:
    # Fixed width, so every row costs the same bytes.
    return f"polder,device=p1,gateway=g,site=s level_cm={1000 + i}i {1_800_000_000_000_000_000 + i}"


def test_rows_survive_reopen_and_keep_order(tmp_path: Path) -> None:
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**7)
    db.append([line(i) for i in range(100)])
    db.close()
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**7)
    rows = db.fetch(1000)
    assert [r[1] for r in rows] == [line(i) for i in range(100)]
    st = db.statistics()
    assert st.rows == 100
    assert st.bytes == sum(len(line(i)) + ROW_OVERHEAD for i in range(100))
    assert st.oldest_time_ns == 1_800_000_000_000_000_000
    assert st.totals["spooled"] == 100
    db.close()


def test_uses_wal_mode(tmp_path: Path) -> None:
    SpoolDB(tmp_path / "s.db", max_bytes=10**6).close()
    mode = sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_delete_only_what_was_delivered(tmp_path: Path) -> None:
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**7)
    db.append([line(i) for i in range(10)])
    rows = db.fetch(4)
    assert db.delete_range(rows[0][0], rows[-1][0]) == 4
    assert [r[1] for r in db.fetch(100)] == [line(i) for i in range(4, 10)]
    assert db.statistics().totals["written"] == 4
    assert db.statistics().oldest_time_ns == 1_800_000_000_000_000_004
    db.close()


def test_full_spool_evicts_oldest_and_counts_it(tmp_path: Path) -> None:
    one = len(line(0)) + ROW_OVERHEAD
    db = SpoolDB(tmp_path / "s.db", max_bytes=one * 50)
    for start in range(0, 80, 10):
        db.append([line(i) for i in range(start, start + 10)])
    st = db.statistics()
    assert st.bytes <= one * 50
    assert st.totals["evicted"] == 30
    kept = [r[1] for r in db.fetch(1000)]
    assert kept == [line(i) for i in range(30, 80)]
    db.close()
    # The count of what was lost survives a restart.
    assert SpoolDB(tmp_path / "s.db", max_bytes=one * 50).statistics().totals["evicted"] == 30


def test_quarantine_moves_rows_with_reason(tmp_path: Path) -> None:
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**7, quarantine_max_rows=3)
    db.append([line(i) for i in range(6)])
    rows = db.fetch(6)
    db.quarantine(rows[:5], status=400, reason="field type conflict", at_ns=1)
    assert [r[1] for r in db.fetch(10)] == [line(5)]
    q = db.quarantined()
    assert len(q) == 3  # bounded: the newest three are kept
    assert {r["reason"] for r in q} == {"field type conflict"}
    assert db.statistics().totals["quarantined"] == 5
    db.close()


def test_dead_letters_are_bounded(tmp_path: Path) -> None:
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**7, dead_letter_max_rows=5)
    for i in range(12):
        db.append([], dead=[DeadLetter("native", "garden/a/b/telemetry", "malformed",
                                       f"bad {i}", b"\xff{", i)])
    letters = db.dead_letters()
    assert [d["error"] for d in letters] == [f"bad {i}" for i in range(11, 6, -1)]
    assert letters[0]["payload"] == "\\xff{"
    assert db.statistics().dead_letter_rows == 5
    assert db.statistics().totals["dead_lettered"] == 12
    db.close()


def test_seen_keys_readable_from_second_connection(tmp_path: Path) -> None:
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**7)
    db.append([line(1)], seen=[(-42, 123), (7, 456)])
    lookup = SeenLookup(tmp_path / "s.db")
    assert lookup.get(-42) == 123
    assert lookup.get(8) is None
    assert db.prune_seen(200) == 1
    assert lookup.get(-42) is None
    assert lookup.get(7) == 456
    lookup.close()
    db.close()


async def test_async_spool_runs_off_the_loop(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s.db", max_bytes=10**7)
    assert not spool.appended.is_set()
    await spool.append([line(1), line(2)])
    assert spool.appended.is_set()
    rows = await spool.fetch(10)
    assert len(rows) == 2
    assert await spool.delete_range(rows[0][0], rows[0][0]) == 1
    assert spool.statistics().rows == 1
    await spool.close()


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from gateway.store.spool import SpoolDB
    db = SpoolDB(Path(sys.argv[1]), max_bytes=10**9)
    i = 0
    while True:
        db.append([f"m,device=d v={j}i {j}" for j in range(i, i + 100)])
        i += 100
        # Only now is the batch "acknowledged": report it, as the gateway would PUBACK.
        print(i, flush=True)
""")


def test_sigkill_loses_nothing_that_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    acknowledged = 0

    def enough() -> bool:
        nonlocal acknowledged
        out = proc.stdout.readline() if proc.stdout else ""
        if out.strip():
            acknowledged = int(out)
        return acknowledged >= 5000

    wait_for(enough, timeout=30, interval=0, what="5000 committed rows")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    # Whatever the writer reported before it died must be there, in order, without gaps.
    db = SpoolDB(path, max_bytes=10**9)
    values = [int(r[1].split("v=")[1].split("i")[0]) for r in db.fetch(10**7)]
    assert len(values) >= acknowledged
    assert values == list(range(len(values)))
    db.close()


def test_open_failure_is_a_spool_error(tmp_path: Path) -> None:
    from gateway.core.errors import SpoolError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(SpoolError, match="cannot open spool"):
        SpoolDB(tmp_path / "afile" / "s.db", max_bytes=10**6)


def test_a_full_disk_is_reported_as_such_and_the_counts_stay_true(tmp_path: Path) -> None:
    with small_card(tmp_path / "card", 4 << 20) as card:
        db = SpoolDB(card / "s.db", max_bytes=10**9)
        db.append([line(0)])
        # The card is full: SQLite answers SQLITE_FULL and rolls the whole transaction back.
        filler = fill_card(card)
        dead = DeadLetter("mqtt", "t", "json", "bad", b"{", 1)
        held = HeldLine("polder,device=p1 level_cm=1i", "boot-a", 5, 6)
        with pytest.raises(SpoolError, match="database or disk is full") as raised:
            db.append([line(i) for i in range(1, 2000)], dead=[dead], held=[held])
        cause = raised.value.__cause__
        assert cause is not None
        assert classify(cause) == "full"
        st = db.statistics()
        assert (st.rows, st.dead_letter_rows, db.held_rows) == (1, 0, 0)
        filler.unlink()  # room again
        db.append([line(1)], dead=[dead], held=[held])
        st = db.statistics()
        assert (st.rows, st.dead_letter_rows, db.held_rows) == (2, 1, 1)
        db.close()


# -- inspection from another process ---------------------------------------------------------


def test_inspect_reads_a_spool_the_gateway_holds_open_and_leaves_it_writable(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILE_NAME
    db = SpoolDB(path, max_bytes=10**7)
    try:
        db.append([line(i) for i in range(5)], held=[
            HeldLine("polder,device=p1 level_cm=1i", "boot-a", 5, 6)])
        rows = db.fetch(2)
        db.delete_range(rows[0][0], rows[-1][0])
        db.quarantine(db.fetch(1), status=400, reason="bad", at_ns=1)
        snap = inspect_spool(path)
        assert snap.rows == 2
        assert snap.oldest_time_ns == 1_800_000_000_000_000_003
        assert (snap.held_rows, snap.unsynced_rows) == (1, 0)
        assert (snap.quarantine_rows, snap.dead_letter_rows) == (1, 0)
        assert snap.totals == {"spooled": 5, "written": 2, "evicted": 0, "quarantined": 1,
                               "dead_lettered": 0}
        assert snap.clock_totals["held"] == 1
        assert snap.file_bytes == db.statistics().file_bytes == spool_file_bytes(path)
        assert snap.wal_bytes > 0  # the gateway's WAL counts: it is data not yet checkpointed
        db.append([line(9)])  # never blocked
    finally:
        db.close()


def test_inspect_tolerates_a_spool_from_before_the_held_tables(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    db = SpoolDB(path, max_bytes=10**7)
    db.append([line(0)])
    db.close()
    old = sqlite3.connect(path)
    old.executescript("DROP TABLE held; DROP TABLE unsynced;")
    old.close()
    snap = inspect_spool(path)
    assert (snap.rows, snap.held_rows, snap.unsynced_rows) == (1, 0, 0)


def test_inspect_says_busy_when_the_writer_keeps_its_lock(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    SpoolDB(path, max_bytes=10**7).close()
    # A writer in exclusive locking mode keeps even WAL readers out after its first write.
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA locking_mode=EXCLUSIVE")
        writer.execute("INSERT INTO spool(line) VALUES ('m v=1i 1')")
        with pytest.raises(SpoolReadError, match="locked") as raised:
            inspect_spool(path, busy_timeout_s=0)
        assert raised.value.kind == "busy"
    finally:
        writer.close()


@pytest.mark.parametrize(("content", "kind", "message"), [
    (None, "open", "unable to open database file"),
    (b"not a database, just some bytes" * 200, "damaged", "file is not a database"),
    ("sqlite without a spool table", "schema", "no such table: spool"),
])
def test_inspect_failures_say_what_is_wrong(tmp_path: Path, content: bytes | str | None,
                                            kind: str, message: str) -> None:
    path = tmp_path / FILE_NAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE notes (text TEXT)")
        other.close()
    with pytest.raises(SpoolReadError) as raised:
        inspect_spool(path)
    assert (raised.value.kind, str(raised.value)) == (kind, message)
    assert isinstance(raised.value, SpoolError)


def test_range_delete_never_touches_rows_written_after_the_batch(tmp_path: Path) -> None:
    one = len(line(0)) + ROW_OVERHEAD
    db = SpoolDB(tmp_path / "s.db", max_bytes=one * 10)
    db.append([line(i) for i in range(10)])
    batch = db.fetch(10)
    # While the batch is in flight the spool overflows: the batch is evicted and new rows come.
    db.append([line(i) for i in range(100, 110)])
    assert [r[1] for r in db.fetch(100)] == [line(i) for i in range(100, 110)]
    # Ids only grow, so the late delete of the old range cannot hit the new rows.
    assert db.delete_range(batch[0][0], batch[-1][0]) == 0
    assert [r[1] for r in db.fetch(100)] == [line(i) for i in range(100, 110)]
    assert db.statistics().rows == 10
    db.close()


async def test_committer_bounds_unacknowledged_input_while_the_disk_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.core.errors import SpoolError
    from gateway.pipeline import Committer, Outcome

    spool = Spool.open(tmp_path / "s.db", max_bytes=10**7)

    async def full_disk(*a: object, **kw: object) -> int:
        raise SpoolError("database or disk is full")

    monkeypatch.setattr(spool, "append", full_disk)
    committer = Committer(spool=spool, interval_s=0.01, max_readings=10**6,
                          max_pending_lines=100, retry_min_s=0.0, retry_max_s=0.0)
    acked: list[int] = []
    for i in range(150):
        committer.add(Outcome([line(i)]))  # QoS 0: nothing to acknowledge
    committer.add(Outcome([line(999)]), ack=lambda: acked.append(1))
    await committer.commit()
    assert committer.failures == 1
    assert committer.dropped == 50
    assert committer.pending == 101  # kept for the next try, QoS 1 message included
    assert acked == []  # nothing acknowledged while the disk refuses
    monkeypatch.undo()
    await committer.commit()
    assert acked == [1]
    assert spool.statistics().rows == 101
    await spool.close()


async def test_committer_commits_unacknowledged_readings_at_the_longer_interval(
    tmp_path: Path,
) -> None:
    """Serial/Modbus/QoS 0 readings wait up to unacked_interval_s; a QoS 1 message joining
    the batch brings its commit forward to interval_s, and takes them along."""
    import asyncio

    from gateway.pipeline import Committer, Outcome
    from tests.conftest import running, until

    spool = Spool.open(tmp_path / "s.db", max_bytes=10**7)
    committer = Committer(spool=spool, interval_s=0.01, unacked_interval_s=0.4,
                          max_readings=10**6)
    loop = asyncio.get_running_loop()
    async with running(committer.run()):
        added = loop.time()
        committer.add(Outcome([line(1)]))
        committer.add(Outcome([line(2)]))
        await until(lambda: spool.rows == 2, 5)
        waited = loop.time() - added
        assert committer.commits == 1
        assert waited >= 0.4  # not before the unacknowledged deadline

        # A QoS 1 message: the batch is due at the short interval, long before 30 s.
        slow = Committer(spool=spool, interval_s=0.01, unacked_interval_s=30,
                         max_readings=10**6)
        acked: list[int] = []
        async with running(slow.run()):
            slow.add(Outcome([line(3)]))
            await asyncio.sleep(0)  # the committer is now waiting out the 30 s
            slow.add(Outcome([line(4)]), ack=lambda: acked.append(4))
            await until(lambda: acked == [4], 5)
            assert spool.rows == 4  # the unacknowledged line went with it
            assert slow.commits == 1
    await spool.close()
