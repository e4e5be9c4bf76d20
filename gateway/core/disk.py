"""The SD card as the gateway sees it: free space, the writes it refused, the files set aside.

A Raspberry Pi's card fills up (a long WAN outage, a chatty log) and goes bad (a power cut
during a write, a worn card). Neither may stop the gateway. Each part that writes a SQLite
file (the spool, the state, the history) reports a refused write here with
:meth:`DiskHealth.failed`, keeps what it could not commit (the spool: unacknowledged) or counts
what it could not record about itself (an outage row, a history bucket), and carries on; its
next successful write calls :meth:`DiskHealth.succeeded`.

From those reports and ``statvfs`` of ``data_dir``, :meth:`DiskHealth.snapshot` says one of:

- ``ok``;
- ``low``: free space under ``spool.min_free_bytes``; the spool stops growing and evicts its
  oldest rows (counted) to keep the reserve;
- ``disk_full``: a write failed for want of space (``SQLITE_FULL``, ``ENOSPC``), or less than
  256 KiB is free;
- ``io_error``: a write failed otherwise (``SQLITE_IOERR``, a read-only or vanished card).

A write failure is logged at most once a minute per file, with the count since; the change of
state goes to the listeners (the alerts). Files found damaged at start and set aside are
:class:`Notice`s, kept in ``data_dir/disk-notices.json`` until an operator acknowledges them.

Used from the event loop's thread only (the spool's own thread raises; its async face reports).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

DiskState = Literal["ok", "low", "disk_full", "io_error"]
Failure = Literal["full", "io"]

# Under this much free space an I/O error is taken for a full card: SQLite reports a -shm file
# it could not extend as SQLITE_IOERR_SHMSIZE, not as SQLITE_FULL.
NEARLY_FULL_BYTES = 256 * 1024

NOTICES_FILE = "disk-notices.json"
# Notices kept (newest), acknowledged ones included until they fall off.
MAX_NOTICES = 50

_IO_CODES = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
             sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_IO_ERRNOS = {errno.EIO, errno.EROFS, errno.ENOENT, errno.EACCES, errno.ENXIO}


class NotOpen(sqlite3.OperationalError):
    """A SQLite file that could not be opened (yet): raised by its owner's writes and reads
    until it opens. ``cause`` is the error that kept it shut."""

    def __init__(self, path: Path, cause: BaseException | None) -> None:
        super().__init__(f"{path.name} is not open: {cause}")
        self.path = path
        self.cause = cause


def classify(exc: BaseException, *, free_bytes: int | None = None) -> Failure | None:
    """``full`` or ``io`` when ``exc`` is the card's doing, else None (a bug: let it rise)."""
    if isinstance(exc, NotOpen):
        return "io" if exc.cause is None else classify(exc.cause, free_bytes=free_bytes)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            text = str(exc).lower()
            if "disk is full" in text:
                return "full"
            return "io" if "disk i/o" in text or "malformed" in text else None
        primary = code & 0xFF
        if primary == sqlite3.SQLITE_FULL:
            return "full"
        if primary in _IO_CODES:
            nearly_full = free_bytes is not None and free_bytes < NEARLY_FULL_BYTES
            return "full" if primary == sqlite3.SQLITE_IOERR and nearly_full else "io"
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return "full"
        return "io" if exc.errno in _IO_ERRNOS else None
    return None


@dataclass(frozen=True, slots=True)
class Notice:
    """A damaged file found at start and what was done with it."""

    id: int
    at_ns: int
    file: str
    action: str  # "set_aside", "salvaged"
    detail: str
    set_aside_as: str | None
    salvaged: int
    lost: int | None
    acknowledged: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """The card's state changed (for the alerts)."""

    old: DiskState
    new: DiskState
    at_ns: int
    detail: str


def statvfs_free(path: Path) -> tuple[int, int] | None:
    """(free bytes for an unprivileged writer, total bytes) of the filesystem holding ``path``."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def card_full(exc: BaseException, folder: Path,
              free: Callable[[Path], tuple[int, int] | None] = statvfs_free) -> bool:
    """Whether a file in ``folder`` would not open because the card is full (then its owner
    starts without it and opens it later), rather than for a reason to say at start."""
    space = free(folder) if folder.exists() else None
    return classify(exc, free_bytes=None if space is None else space[0]) == "full"


class DiskHealth:
    """What the card refused, how much room is left, and which files were set aside."""

    def __init__(self, data_dir: Path, *, min_free_bytes: int, clock: Clock = SYSTEM_CLOCK,
                 log_interval_s: float = 60.0,
                 free: Callable[[Path], tuple[int, int] | None] = statvfs_free) -> None:
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._log_interval = log_interval_s
        self._free = free
        # file -> (failure, message, since_ns)
        self._failing: dict[str, tuple[Failure, str, int]] = {}
        self.write_failures: Counter[str] = Counter()
        self.not_recorded: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        self._state: DiskState = "ok"
        self._since_ns = clock.now_ns()
        self.listeners: list[Callable[[Transition], None]] = []
        self._notices: list[Notice] = []
        self._notices_path = data_dir / NOTICES_FILE
        self._load_notices()

    # -- reports from the writers ----------------------------------------------------------

    def failed(self, file: str, what: str, exc: BaseException, *, lost: int = 0) -> bool:
        """A write to ``file`` (``spool``, ``state``, ``history``) failed. True when it is the
        card's doing (counted, logged at most once a minute, state updated): the caller carries
        on. False for anything else: the caller lets it rise."""
        space = self._free(self.data_dir)
        kind = classify(exc, free_bytes=None if space is None else space[0])
        if kind is None:
            return False
        now = self._clock.now_ns()
        message = str(exc)
        was = self._failing.get(file)
        self._failing[file] = (kind, message, was[2] if was is not None else now)
        self.write_failures[file] += 1
        if lost:
            self.not_recorded[what] += lost
        free_text = "unknown" if space is None else f"{space[0]}"
        self._log(file, "disk %s: %s %s failed: %s (free=%s bytes, %d failures so far)",
                  "full" if kind == "full" else "I/O error", file, what, message, free_text,
                  self.write_failures[file])
        self._update(detail=f"{file} {what}: {message}")
        return True

    def lost(self, what: str, n: int = 1) -> None:
        """Something the gateway could not record about itself (counted, never a stop)."""
        self.not_recorded[what] += n

    def succeeded(self, file: str) -> None:
        """A write to ``file`` went through: whatever it failed with before is over."""
        if file not in self._failing:
            return
        _, _, since = self._failing.pop(file)
        log.warning("disk: %s writable again after %.0fs (%d failed writes in all)", file,
                    (self._clock.now_ns() - since) / 1e9, self.write_failures[file])
        self._update(detail=f"{file} writable again")

    def check_space(self) -> DiskState:
        """Re-read the free space (the housekeeping does, once a minute); the state now."""
        self._update(detail="free space")
        return self._state

    def _log(self, key: str, msg: str, *args: Any) -> None:
        now = self._clock.monotonic()
        last = self._logged_at.get(key)
        if last is not None and now - last < self._log_interval:
            self._unlogged[key] += 1
            return
        self._logged_at[key] = now
        skipped = self._unlogged.pop(key, 0)
        if skipped:
            msg += " (%d more like this not logged)"
            args = (*args, skipped)
        log.error(msg, *args)

    def _compute(self, free: int | None) -> DiskState:
        kinds = {k for k, _, _ in self._failing.values()}
        if "full" in kinds:
            return "disk_full"
        if "io" in kinds:
            return "io_error"
        if free is not None and free < NEARLY_FULL_BYTES:
            return "disk_full"  # nothing refused yet, but nothing new will fit
        if free is not None and free < self.min_free_bytes:
            return "low"
        return "ok"

    def _update(self, *, detail: str) -> None:
        space = self._free(self.data_dir)
        new = self._compute(None if space is None else space[0])
        old = self._state
        if new == old:
            return
        self._state = new
        now = self._clock.now_ns()
        self._since_ns = now
        if new == "low" and old == "ok":
            log.warning("disk low: %s bytes free, under spool.min_free_bytes=%d: the spool "
                        "evicts its oldest rows rather than grow", space[0] if space else "?",
                        self.min_free_bytes)
        elif new in ("ok", "low"):
            log.warning("disk %s again (was %s)", new, old)
        t = Transition(old=old, new=new, at_ns=now, detail=detail)
        for listener in self.listeners:
            listener(t)

    # -- damaged files ---------------------------------------------------------------------

    def damaged(self, *, file: str, action: str, detail: str, set_aside_as: str | None,
                salvaged: int = 0, lost: int | None = None) -> Notice:
        """A file found damaged at start, and what was done: kept until acknowledged."""
        next_id = max((n.id for n in self._notices), default=0) + 1
        notice = Notice(id=next_id, at_ns=self._clock.now_ns(), file=file, action=action,
                        detail=detail, set_aside_as=set_aside_as, salvaged=salvaged, lost=lost)
        self._notices = [*self._notices, notice][-MAX_NOTICES:]
        self._save_notices()
        return notice

    def acknowledge(self, notice_id: int) -> bool:
        """The operator has seen it; False when there is no such notice."""
        found = False
        notices = []
        for n in self._notices:
            if n.id == notice_id:
                found = True
                n = Notice(**{**asdict(n), "acknowledged": True})
            notices.append(n)
        if found:
            self._notices = notices
            self._save_notices()
        return found

    @property
    def notices(self) -> list[Notice]:
        return list(self._notices)

    def _load_notices(self) -> None:
        try:
            raw = json.loads(self._notices_path.read_text(encoding="utf-8"))
            self._notices = [Notice(**n) for n in raw][-MAX_NOTICES:]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            log.warning("disk: %s unreadable (%s): earlier notices of damaged files are lost",
                        self._notices_path, exc)

    def _save_notices(self) -> None:
        tmp = self._notices_path.with_name(self._notices_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps([asdict(n) for n in self._notices]), encoding="utf-8")
            os.replace(tmp, self._notices_path)
        except OSError as exc:
            # Still shown from memory until the next start; not a reason to stop.
            self.failed("notices", "notice", exc, lost=1)

    # -- what the status says --------------------------------------------------------------

    @property
    def state(self) -> DiskState:
        return self._state

    def snapshot(self) -> dict[str, Any]:
        self._update(detail="free space")  # statvfs is cheap: the status is always current
        space = self._free(self.data_dir)
        failing = {f: {"failure": k, "error": m, "since_ns": s}
                   for f, (k, m, s) in sorted(self._failing.items())}
        return {
            "state": self._state,
            "since_ns": self._since_ns,
            "free_bytes": None if space is None else space[0],
            "total_bytes": None if space is None else space[1],
            "min_free_bytes": self.min_free_bytes,
            "failing": failing,
            "write_failures": dict(sorted(self.write_failures.items())),
            "not_recorded": dict(sorted(self.not_recorded.items())),
            "notices": [asdict(n) for n in self._notices if not n.acknowledged],
        }
