"""The forwarder: spool → InfluxDB, deleting rows only after a 2xx.

What each answer means (DESIGN.md, delivery guarantee):

- 2xx: the rows are deleted.
- 400/422: the server refuses some lines. Lines it names are quarantined with its message; when
  it names none, the batch is halved until the refused line is alone. The rest is delivered
  (InfluxDB overwrites identical points, so sending a line twice is harmless).
- 401/403: forwarding pauses in state ``auth_failed`` and tries again every ``auth_retry_s``,
  so fixed credentials resume delivery without a restart.
- v1 404 "database not found": create it when we have the right, else pause in state
  ``database_missing`` with a message saying who must create it.
- 413: the batch is split in halves.
- 429, 5xx, network errors: back off, capped exponential with jitter, at least Retry-After.

Before any of that, with a ``time_guard``
(:meth:`gateway.pipeline.timesync.TimeSync.refuse_reason`), a line whose timestamp must not
reach InfluxDB (before ``clock.min_valid_time``: a clock never set; far ahead of a synchronised
clock) is quarantined with the reason and never sent: the last line of defence for lines that
did not come through the pipeline's own check.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core.aio import wait_event
from gateway.core.backoff import Backoff
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.core.errors import (
    InfluxAuthError,
    InfluxError,
    InfluxRejectedError,
    InfluxRetryableError,
    InfluxTooLargeError,
    SpoolError,
)
from gateway.store.influx import InfluxDatabaseMissingError, InfluxWriter
from gateway.store.lineproto import split_time
from gateway.store.spool import Spool

log = logging.getLogger(__name__)

# InfluxDB 1.x names the line it could not parse: unable to parse 'cpu value=': missing fields
_UNPARSABLE = re.compile(r"unable to parse '((?:[^'\\]|\\.)*)'")

# The fewest waiting rows a quiet moment sends at once (influx.quiet_flush_s): a burst's tail.
QUIET_FLUSH_MIN_ROWS = 100

# A point's timestamp (ns) -> why it must not be sent, or None.
TimeGuard = Callable[[int], str | None]


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    state: str
    connected: bool | None
    last_error: str | None
    last_success_ns: int | None
    batches: int
    written: int
    quarantined: int
    retries: int
    next_attempt_in_s: float | None
    # Lines quarantined for their timestamp, never sent (also counted in ``quarantined``).
    refused_time: int = 0


class Forwarder:
    def __init__(
        self,
        *,
        spool: Spool,
        writer: InfluxWriter,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 60.0,
        auth_retry_s: float = 30.0,
        create_database: bool = True,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
        idle_probe_s: float = 30.0,
        quiet_flush_s: float | None = None,
        quiet_flush_min_rows: int = QUIET_FLUSH_MIN_ROWS,
        time_guard: TimeGuard | None = None,
    ) -> None:
        self._spool = spool
        self._writer = writer
        self._batch_size = batch_size
        self._flush_interval = flush_interval_s
        self._auth_retry = auth_retry_s
        self._create_database = create_database
        self._clock = clock
        self._backoff = Backoff(backoff_min_s, backoff_max_s, rng)
        self._state = "starting"
        self._connected: bool | None = None
        self._last_error: str | None = None
        self._last_success_ns: int | None = None
        self._batches = 0
        self._written = 0
        self._quarantined = 0
        self._retries = 0
        self._next_attempt_at: float | None = None
        self._pending_since: float | None = None
        self._idle_probe_s = idle_probe_s
        # A partial batch goes out once nothing new came for this long: the burst is over,
        # and its tail need not wait out the flush interval. Only a burst's: a park's trickle
        # (a reading every few hundred ms, each followed by a quiet moment) would otherwise
        # cost a request and a delete per reading; it waits out the interval.
        self._quiet_flush_s = quiet_flush_s
        self._quiet_min_rows = quiet_flush_min_rows
        self._db_checked = False
        self._time_guard = time_guard
        self._refused_time = 0
        # A batch InfluxDB took whose delete from the spool the card refused: (first, last).
        self._undeleted: tuple[int, int] | None = None

    def disable(self) -> None:
        """``influx.enabled: false``: the gateway keeps the spool and sends nothing."""
        self._state = "disabled"
        self._connected = None

    def statistics(self) -> ForwarderStats:
        next_in = None
        if self._next_attempt_at is not None:
            next_in = max(0.0, self._next_attempt_at - self._clock.monotonic())
        return ForwarderStats(
            state=self._state,
            connected=self._connected,
            last_error=self._last_error,
            last_success_ns=self._last_success_ns,
            batches=self._batches,
            written=self._written,
            quarantined=self._quarantined,
            retries=self._retries,
            next_attempt_in_s=next_in,
            refused_time=self._refused_time,
        )

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Forward forever; cancellation is the way to stop."""
        await self._probe()
        while True:
            await self._wait_for_work()
            await self.forward_once()

    async def _probe(self) -> None:
        """While there is nothing to send, ``/ping`` keeps the connection state current."""
        self._connected = await self._writer.ping()
        if not self._connected:
            self._last_error = f"InfluxDB at {self._writer.url} does not answer /ping"

    async def _wait_for_work(self) -> None:
        """Return when a full batch is waiting, when the oldest unsent line has waited
        ``flush_interval_s`` (counted from when it appeared, or from the last send), or when
        nothing was appended for ``quiet_flush_s`` after a burst (``quiet_flush_min_rows``
        waiting)."""
        spool = self._spool
        while True:
            spool.appended.clear()
            rows = spool.rows
            if rows >= self._batch_size:
                return
            if rows:
                if self._pending_since is None:
                    self._pending_since = self._clock.monotonic()
                wait = self._pending_since + self._flush_interval - self._clock.monotonic()
                if wait <= 0:
                    return
                quiet = self._quiet_flush_s if rows >= self._quiet_min_rows else None
                appended = await wait_event(spool.appended,
                                            wait if quiet is None else min(wait, quiet))
                if not appended and quiet is not None and quiet < wait:
                    return
            else:
                self._pending_since = None
                if self._state in ("idle", "writing", "starting"):
                    self._state = "idle"
                if not await wait_event(spool.appended, self._idle_probe_s):
                    await self._probe()

    async def forward_once(self) -> bool:
        """Send one batch (the oldest rows). Returns True when the batch was settled."""
        if (not self._db_checked and self._create_database
                and not await self._ensure_database()):
            return False
        if self._undeleted is not None and not await self._delete_delivered():
            return False
        try:
            rows = await self._fetch()
        except SpoolError as exc:
            await self._spool_refused(exc)
            return False
        if not rows:
            return True
        # What is left after this batch waits at most one more interval.
        self._pending_since = self._clock.monotonic()
        try:
            await self._deliver(rows)
        except SpoolError as exc:
            # Delivered (or refused) but not yet off the spool: a full card. Sending the
            # same rows again would be harmless (InfluxDB overwrites), but the delete is what
            # is retried, with backoff, before anything new is sent.
            await self._spool_refused(exc)
            return False
        except InfluxAuthError as exc:
            await self._pause("auth_failed", f"{exc} (check influx.username/password or token)")
            return False
        except InfluxDatabaseMissingError as exc:
            await self._database_missing(exc)
            return False
        except InfluxRetryableError as exc:
            await self._retry_later(exc)
            return False
        self._backoff.reset()
        self._next_attempt_at = None
        self._state = "writing" if self._spool.rows else "idle"
        return True

    async def drain(self, deadline: float) -> int:
        """On shutdown: deliver what can be delivered before ``deadline`` (monotonic)."""
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0:
            return self._spool.rows
        try:
            async with asyncio.timeout(remaining):
                while self._spool.rows:
                    if not await self._forward_no_wait():
                        break
        except TimeoutError:
            pass
        return self._spool.rows

    async def _forward_no_wait(self) -> bool:
        if not self._db_checked and self._create_database:
            try:
                await self._writer.ensure_database()
            except InfluxError as exc:
                log.warning("influx database=%s: create failed: %s", self._writer.database, exc)
            self._db_checked = True
        try:
            rows = await self._fetch()
        except SpoolError:
            return False
        if not rows:
            return True
        try:
            await self._deliver(rows)
        except InfluxError as exc:
            self._record_failure(str(exc), connected=exc.status is not None)
            return False
        except SpoolError as exc:
            # Delivered but not deleted: sent again next start, harmless (same points).
            self._record_failure(f"spool: {exc}", connected=True)
            return False
        return True

    async def _fetch(self) -> list[tuple[int, str]]:
        """The oldest batch, less what the time guard refuses (quarantined here)."""
        rows = await self._spool.fetch(self._batch_size)
        return rows if self._time_guard is None else await self._refuse_times(rows)

    async def _refuse_times(self, rows: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Quarantine the rows the time guard refuses; the rest, to send."""
        guard = self._time_guard
        assert guard is not None
        refused: dict[str, list[tuple[int, str]]] = {}
        keep: list[tuple[int, str]] = []
        for row in rows:
            stamp = split_time(row[1])[1]
            # No timestamp: InfluxDB stamps it on arrival, not ours to judge.
            reason = None if stamp is None else guard(stamp)
            if reason is None:
                keep.append(row)
            else:
                refused.setdefault(reason, []).append(row)
        for reason, bad in refused.items():
            await self._quarantine(bad, None, reason)
            self._refused_time += len(bad)
        return keep

    async def _ensure_database(self) -> bool:
        try:
            await self._writer.ensure_database()
        except InfluxAuthError as exc:
            # No right to create it: it may exist already; writes will tell.
            log.warning("influx database=%s could not be created (%s); will write to it if it "
                        "exists", self._writer.database, exc)
        except InfluxRetryableError as exc:
            await self._retry_later(exc)
            return False
        except InfluxError as exc:
            log.warning("influx database=%s: create failed: %s", self._writer.database, exc)
        self._db_checked = True
        return True

    async def _database_missing(self, exc: InfluxDatabaseMissingError) -> None:
        name = self._writer.database
        if not self._create_database:
            await self._pause("database_missing", f"{exc}; create database {name!r} or set "
                              "influx.create_database: true")
            return
        try:
            await self._writer.ensure_database()
        except InfluxAuthError as auth:
            who = self._writer.username or "(anonymous)"
            await self._pause(
                "database_missing",
                f"database {name!r} does not exist and user {who} may not create it ({auth}); "
                f"an InfluxDB admin must run: CREATE DATABASE \"{name}\"",
            )
        except InfluxRetryableError as retry:
            await self._retry_later(retry)
        except InfluxError as other:
            await self._pause("database_missing", f"cannot create database {name!r}: {other}")
        else:
            log.info("influx database=%s created", name)

    async def _deliver(self, rows: list[tuple[int, str]]) -> None:
        try:
            await self._writer.write([line for _, line in rows])
        except InfluxTooLargeError:
            if len(rows) == 1:
                await self._quarantine(rows, 413, "line larger than the server accepts")
                return
            half = len(rows) // 2
            await self._deliver(rows[:half])
            await self._deliver(rows[half:])
            return
        except InfluxRejectedError as exc:
            self._connected = True
            await self._handle_rejected(rows, exc)
            return
        except InfluxRetryableError as exc:
            self._connected = exc.status is not None
            raise
        self._connected = True
        self._batches += 1
        self._last_success_ns = self._clock.now_ns()
        self._last_error = None
        self._undeleted = (rows[0][0], rows[-1][0])
        await self._delete_delivered(raise_errors=True)

    async def _delete_delivered(self, *, raise_errors: bool = False) -> bool:
        """Take the last delivered batch off the spool; False (after a backoff) when the card
        refuses, unless ``raise_errors``."""
        assert self._undeleted is not None
        first, last = self._undeleted
        try:
            deleted = await self._spool.delete_range(first, last)
        except SpoolError as exc:
            if raise_errors:
                raise
            await self._spool_refused(exc)
            return False
        self._undeleted = None
        self._written += deleted
        return True

    async def _spool_refused(self, exc: SpoolError) -> None:
        """The spool refused a write (a full card: reported by the spool itself); back off."""
        delay = self._backoff.next()
        self._retries += 1
        if self._state != "spool_unwritable":
            log.error("forwarding paused: the spool refused a write (%s); retrying with "
                      "backoff", exc)
        self._state = "spool_unwritable"
        self._last_error = f"spool: {exc}"
        await self._wait(delay)

    async def _handle_rejected(self, rows: list[tuple[int, str]],
                               exc: InfluxRejectedError) -> None:
        message = str(exc)
        if len(rows) == 1:
            await self._quarantine(rows, exc.status, message)
            return
        named = {m.group(1).replace("\\'", "'") for m in _UNPARSABLE.finditer(message)}
        bad = [r for r in rows if r[1] in named]
        if bad:
            await self._quarantine(bad, exc.status, message)
            rest = [r for r in rows if r[1] not in named]
            if rest:
                await self._deliver(rest)
            return
        half = len(rows) // 2
        await self._deliver(rows[:half])
        await self._deliver(rows[half:])

    async def _quarantine(self, rows: list[tuple[int, str]], status: int | None,
                          reason: str) -> None:
        log.warning("influx refused lines=%d status=%s reason=%r: quarantined", len(rows),
                    status, reason[:300])
        await self._spool.quarantine(rows, status=status, reason=reason)
        self._quarantined += len(rows)

    def _record_failure(self, message: str, *, connected: bool) -> None:
        self._connected = connected
        self._last_error = message

    async def _pause(self, state: str, message: str) -> None:
        if self._state != state:
            log.error("forwarding paused state=%s: %s; retrying every %.0fs", state, message,
                      self._auth_retry)
        self._state = state
        self._record_failure(message, connected=True)
        await self._wait(self._auth_retry)

    async def _retry_later(self, exc: InfluxRetryableError) -> None:
        delay = self._backoff.next()
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        self._retries += 1
        if self._state != "backoff":
            log.warning("influx write failed, backing off: %s", exc)
        self._state = "backoff"
        self._record_failure(str(exc), connected=exc.status is not None)
        await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        self._next_attempt_at = self._clock.monotonic() + delay
        try:
            await self._clock.sleep(delay)
        finally:
            self._next_attempt_at = None
