"""The batched committer: many messages' lines in one spool transaction, then their acks.

:class:`Committer` gathers what sources produced (:class:`~gateway.pipeline.ingest.Outcome`)
into one spool transaction every ``commit_interval_s`` (or sooner when ``commit_max_readings``
is reached, or when half the broker's in-flight window is waiting for acknowledgements) and
only then runs each message's ``ack`` callback: for MQTT that is the PUBACK, so a message is
acknowledged only after its readings are on disk (DESIGN.md, delivery guarantee, point 1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.aio import wait_event
from gateway.core.backoff import Backoff
from gateway.core.errors import SpoolError
from gateway.core.ratelog import RateLimitedLog
from gateway.pipeline.ingest import Collected, Outcome
from gateway.store.spool import DeadLetter, HeldLine, Refused, Spool

log = logging.getLogger(__name__)

Ack = Callable[[], None]


class SeenKeys(Protocol):
    """Committed redelivery keys (the spool's ``seen`` table, read by
    :class:`gateway.store.spool.SeenLookup`): a key's first receive time, or None."""

    def get(self, key: int) -> int | None: ...


@dataclass(slots=True)
class _Batch:
    lines: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    seen: list[tuple[int, int]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    held: list[HeldLine] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    # Messages the acks acknowledge (one ack may acknowledge a whole MQTT read).
    waiting: int = 0

    def size(self) -> int:
        return len(self.lines) + len(self.held)


class Committer:
    """Batches outcomes into spool transactions, then acknowledges their messages."""

    def __init__(self, *, spool: Spool, interval_s: float, max_readings: int,
                 unacked_interval_s: float | None = None,
                 max_pending_acks: int = 500, max_pending_lines: int = 200_000,
                 retry_min_s: float = 1.0, retry_max_s: float = 30.0) -> None:
        self._spool = spool
        # A batch holding a message that waits for its acknowledgement is committed within
        # interval_s: the broker's window is held until then. A batch of readings nobody can be
        # asked for again (serial, Modbus, QoS 0) waits up to unacked_interval_s: a power cut
        # loses at most that much of them, and a slow sensor does not cost an fsync per line.
        self._interval = interval_s
        self._unacked_interval = interval_s if unacked_interval_s is None else unacked_interval_s
        self._max = max_readings
        self._max_acks = max_pending_acks
        # QoS 1 input is bounded by the broker's window (nothing is acknowledged until it is
        # committed); input without acknowledgement (QoS 0) is bounded here, while the disk
        # refuses commits, and what is dropped is counted.
        self._max_pending = max_pending_lines
        self.dropped = 0
        self._batch = _Batch()
        self._has_items = asyncio.Event()
        # Set when the batch became due sooner: full, or its first acknowledgement arrived.
        self._sooner = asyncio.Event()
        # A refused commit (full card) is tried again after retry_min_s, doubling to
        # retry_max_s at most.
        self._backoff = Backoff(retry_min_s, retry_max_s)
        self._backing_off = False
        self._ratelog = RateLimitedLog(log, 60.0)
        # Redelivery keys not yet committed: key -> receive time.
        self.uncommitted_seen: dict[int, int] = {}
        self.commits = 0
        self.committed_lines = 0
        self.failures = 0

    def add(self, outcome: Outcome, ack: Ack | None = None,
            seen: tuple[int, int] | None = None) -> None:
        """One message's outcome; ``ack`` runs after its commit."""
        self._take(outcome.lines, () if outcome.dead is None else (outcome.dead,),
                   outcome.held, outcome.refused, () if seen is None else (seen,), ack,
                   0 if ack is None else 1)

    def add_batch(self, batch: Collected, *, seen: Sequence[tuple[int, int]] = (),
                  ack: Ack | None = None, waiting: int = 0) -> None:
        """Many messages at once (the PUBLISH packets of one MQTT read): ``ack`` runs after
        their commit and acknowledges the ``waiting`` of them that wait for it."""
        self._take(batch.lines, batch.dead, batch.held, batch.refused, seen, ack, waiting)

    def _take(self, lines: Sequence[str], dead: Sequence[DeadLetter], held: Sequence[HeldLine],
              refused: Sequence[Refused], seen: Sequence[tuple[int, int]], ack: Ack | None,
              waiting: int) -> None:
        batch = self._batch
        if ack is None and batch.size() >= self._max_pending:
            n = len(lines) + len(held)
            self.dropped += n
            if self.dropped == n or self.dropped % 10_000 < n:
                log.error("spool cannot keep up: dropped=%d unacknowledged readings so far",
                          self.dropped)
            return
        batch.lines += lines
        if held:
            batch.held += held
        if refused:
            batch.refused += refused
        if dead:
            batch.dead += dead
        if seen:
            batch.seen += seen
            self.uncommitted_seen.update(seen)
        if ack is not None:
            batch.acks.append(ack)
            batch.waiting += waiting
            if len(batch.acks) == 1:
                self._sooner.set()
        self._has_items.set()
        if self._is_full(batch):
            self._sooner.set()

    @property
    def pending(self) -> int:
        return self._batch.size()

    def _is_full(self, batch: _Batch) -> bool:
        return batch.size() >= self._max or batch.waiting >= self._max_acks

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._has_items.wait()
            began = loop.time()
            while not self._is_full(self._batch):
                interval = self._interval if self._batch.acks else self._unacked_interval
                remaining = began + interval - loop.time()
                if remaining <= 0:
                    break
                self._sooner.clear()
                await wait_event(self._sooner, remaining)
            await self.commit()

    async def commit(self) -> None:
        """Commit what is gathered now, then acknowledge it.

        When the disk refuses (full, read-only), nothing is acknowledged: the lines go back in
        front of the next batch and the broker keeps the messages until a commit succeeds.
        """
        batch, self._batch = self._batch, _Batch()
        self._has_items.clear()
        self._sooner.clear()
        if not (batch.lines or batch.dead or batch.seen or batch.acks or batch.held
                or batch.refused):
            return
        try:
            if batch.held or batch.refused:
                await self._spool.append(batch.lines, dead=batch.dead, seen=batch.seen,
                                         held=batch.held, refused=batch.refused)
            else:
                await self._spool.append(batch.lines, dead=batch.dead, seen=batch.seen)
        except SpoolError as exc:
            self.failures += 1
            # At most a line a minute: a full card refuses every retry.
            self._ratelog.log(logging.ERROR, ("spool", "commit"),
                              "spool commit failed lines=%d, nothing acknowledged, retrying: %s",
                              len(batch.lines), exc)
            later = self._batch
            batch.lines.extend(later.lines)
            batch.dead.extend(later.dead)
            batch.seen.extend(later.seen)
            batch.acks.extend(later.acks)
            batch.waiting += later.waiting
            batch.held.extend(later.held)
            batch.refused.extend(later.refused)
            self._batch = batch
            self._has_items.set()
            # Waiting out the backoff is not being stuck: the watchdog asks (backing_off).
            self._backing_off = True
            try:
                await asyncio.sleep(self._backoff.next())
            finally:
                self._backing_off = False
            return
        self._backoff.reset()
        for key, _ in batch.seen:
            self.uncommitted_seen.pop(key, None)
        self.commits += 1
        self.committed_lines += len(batch.lines)
        for ack in batch.acks:
            ack()

    async def flush(self) -> None:
        """Commit everything gathered so far (shutdown, after the sources stopped)."""
        await self.commit()

    def statistics(self) -> dict[str, int]:
        return {"commits": self.commits, "committed_lines": self.committed_lines,
                "pending_lines": self.pending, "failures": self.failures,
                "dropped": self.dropped, "backing_off": int(self._backing_off)}
