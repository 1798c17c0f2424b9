"""Closed bills to the journal, then to whoever listens.

``bill ─▶ journal ─▶ events``: the stream runners hand every closed
:class:`~edge.billing.model.Bill` to :meth:`BillingService.submit` on the
event loop, which never blocks. One dedicated thread owns the SQLite
connection (:class:`~edge.billing.journal.Journal`) and commits the bills in
the order they were submitted; only a committed bill is published to the
:class:`~edge.billing.events.EventHub`.

When a commit fails (disk full, I/O error) the bill stays in memory at the
head of the queue, the fault shows in ``/readyz`` and the metrics, and the
commit is retried with backoff; later bills wait behind it, so every
stream's bills reach the journal in order and none is lost while the process
lives. :meth:`BillingService.close` drains the queue (bounded) and, as a last
resort, logs the bills it could not commit in full.

HTTP reads and corrections run in the same thread, one at a time, and so
do the fleet publisher's outbox reads and writes (:class:`Outbox` is what
:class:`edge.fleet.publisher.FleetPublisher` needs from this service).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from edge.billing.corrections import AnyCorrection
from edge.billing.events import Event, EventHub
from edge.billing.journal import BillPage, Journal
from edge.billing.model import Bill, TrayState
from edge.billing.outbox import OutboxRow
from edge.config import MenuEntry
from edge.errors import JournalError
from edge.metrics import Metrics

JOURNAL_FILE = "journal.sqlite3"
"""The journal's file name inside ``storage.dir``."""

MAX_PENDING_SNAPSHOTS = 200
"""Pending bills that keep their JPEG; further ones queue without it (memory
stays bounded through a long disk-full episode; the bill itself is kept)."""

log = structlog.get_logger(__name__)
T = TypeVar("T")


class BillingService:
    """The journal thread, the pending queue and the event hub.

    Parameters
    ----------
    path : Path
        The journal file (``storage.dir / "journal.sqlite3"``).
    metrics : Metrics
        Counts commits, their time, pending bills and journal errors.
    hub : EventHub, optional
        Where committed bills and tray states go; a new one by default.
    retry_initial_s, retry_max_s : float
        Backoff between commit attempts while the journal fails, seconds.
    tray_interval_s : float
        Tray states of one stream are published at most this often, seconds.
    outbox : bool
        Enqueue every new bill and correction for the fleet, in the commit's
        transaction (see :mod:`edge.billing.outbox`).
    """

    def __init__(self, path: Path, metrics: Metrics, *, hub: EventHub | None = None,
                 retry_initial_s: float = 0.5, retry_max_s: float = 30.0,
                 tray_interval_s: float = 0.2, outbox: bool = False) -> None:
        self.path = path
        self.outbox = outbox
        self._outbox_listeners: list[Callable[[], None]] = []
        self._pos_listeners: list[Callable[[], None]] = []
        self._correction_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.metrics = metrics
        self.hub = hub if hub is not None else EventHub()
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.tray_interval_s = tray_interval_s
        self._pending: deque[Bill] = deque()
        self._submitted: dict[str, float] = {}  # bill_id -> monotonic time of submit
        self._fault: str | None = None
        self._journal: Journal | None = None
        self._last_tray: dict[str, int] = {}  # stream -> highest tray number billed
        self._executor: ThreadPoolExecutor | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = False
        self._trays_latest: dict[str, tuple[TrayState, ...]] = {}
        self._trays_sent: dict[str, tuple[float, str]] = {}  # loop time, JSON
        self._tray_timers: dict[str, asyncio.TimerHandle] = {}

    async def open(self) -> None:
        """Open the journal in its thread and start committing.

        Raises
        ------
        JournalError
            The journal cannot be opened (see :class:`~edge.billing.journal.Journal`).
        """
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        try:
            self._journal = await self._run(functools.partial(Journal, outbox=self.outbox),
                                            self.path)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._last_tray = await self._run(self._journal.last_tray_ids)
        self._writer = asyncio.create_task(self._write_loop(), name="journal-writer")
        log.info("journal_opened", path=str(self.path))

    def tasks(self) -> list[asyncio.Task[None]]:
        """Tasks whose failure must stop the daemon (its supervisor watches them)."""
        return [self._writer] if self._writer is not None else []

    # ---- the pipeline's side ------------------------------------------------

    def submit(self, bill: Bill) -> None:
        """Queue a closed bill for its commit; returns at once (call on the loop)."""
        if self._closing or self._writer is None:
            log.error("bill_not_journaled", reason="billing service is not running",
                      bill=bill.to_json())
            return
        if len(self._pending) >= MAX_PENDING_SNAPSHOTS and bill.snapshot_jpeg is not None:
            bill = dataclasses.replace(bill, snapshot_jpeg=None)
            log.warning("bill_snapshot_dropped", bill_id=bill.bill_id,
                        pending=len(self._pending))
        self._pending.append(bill)
        self._last_tray[bill.stream_id] = max(self._last_tray.get(bill.stream_id, 0),
                                              bill.tray_id)
        self._submitted.setdefault(bill.bill_id, time.monotonic())
        self.metrics.bills_pending.set(len(self._pending))
        self._wake.set()

    def last_tray_id(self, stream_id: str) -> int:
        """The highest tray number billed on ``stream_id`` (0: none): a stream's
        tray numbers go on from it after a restart."""
        return self._last_tray.get(stream_id, 0)

    def tray_update(self, stream_id: str, trays: tuple[TrayState, ...]) -> None:
        """Latest open trays of a stream (call on the loop, e.g. every frame).

        Published at most every :attr:`tray_interval_s` per stream and only
        when changed; older states are dropped.
        """
        if self._closing:
            return
        self._trays_latest[stream_id] = trays
        if stream_id in self._tray_timers:
            return
        loop = asyncio.get_running_loop()
        last = self._trays_sent.get(stream_id)
        delay = 0.0 if last is None else max(0.0, last[0] + self.tray_interval_s - loop.time())
        self._tray_timers[stream_id] = loop.call_later(delay, self._flush_trays, stream_id)

    def _flush_trays(self, stream_id: str) -> None:
        self._tray_timers.pop(stream_id, None)
        trays = self._trays_latest.pop(stream_id, None)
        if trays is None:
            return
        event = Event.of("tray", {"stream_id": stream_id,
                                  "trays": [t.to_json() for t in trays]})
        last = self._trays_sent.get(stream_id)
        if last is not None and last[1] == event.data:
            return
        self._trays_sent[stream_id] = (asyncio.get_running_loop().time(), event.data)
        self.hub.publish_tray(stream_id, event)

    # ---- health ---------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """Why the journal is failing, or None while commits succeed."""
        return self._fault

    @property
    def healthy(self) -> bool:
        """True while the journal takes commits."""
        return self._fault is None

    @property
    def pending(self) -> int:
        """Bills waiting for their commit."""
        return len(self._pending)

    def readiness(self) -> list[str]:
        """Reasons the daemon is not ready because of the journal (empty when fine)."""
        return [self._fault] if self._fault is not None else []

    def status(self) -> dict[str, Any]:
        """``{"fault": str | None, "pending": int}`` for the page."""
        return {"fault": self._fault, "pending": len(self._pending)}

    # ---- reads and corrections (HTTP) -------------------------------------------

    async def get(self, bill_id: str) -> dict[str, Any] | None:
        """The journaled bill with its corrections and effective bill, or None."""
        return await self._read(lambda j: j.get(bill_id))

    async def list_bills(self, limit: int = 50, *, before: int | None = None,
                         stream: str | None = None, since: float | None = None,
                         until: float | None = None) -> BillPage:
        """A page of journaled bills, newest first (see :meth:`Journal.list_bills`)."""
        return await self._read(lambda j: j.list_bills(limit, before=before, stream=stream,
                                                       since=since, until=until))

    async def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Bills committed after ``seq``, oldest first (event replay)."""
        return await self._read(lambda j: j.after(seq, limit))

    async def snapshot(self, bill_id: str) -> bytes | None:
        """JPEG of a bill's closing frame, or None."""
        return await self._read(lambda j: j.snapshot(bill_id))

    async def between(self, since: float, until: float,
                      stream: str | None = None) -> list[dict[str, Any]]:
        """Every bill closed in ``[since, until)``, oldest first (the day's report)."""
        return await self._read(lambda j: j.between(since, until, stream))

    async def correct(self, bill_id: str, correction: AnyCorrection,
                      menu: Mapping[str, MenuEntry], *,
                      actor: str | None = None) -> dict[str, Any] | None:
        """Store a correction made by ``actor``; the updated bill (None for an
        unknown bill).

        Publishes ``bill_corrected`` so every open page updates.

        Raises
        ------
        CorrectionConflict
            The bill's state refuses it (void; nothing to undo).
        CorrectionError
            The correction does not fit the bill or the menu.
        JournalError
            The journal failed to store it.
        """
        try:
            view = await self._run(functools.partial(self._need().add_correction,
                                                     actor=actor),
                                   bill_id, correction, menu)
        except JournalError as err:
            self.metrics.journal_errors.labels(op="correct").inc()
            log.error("correction_failed", bill_id=bill_id, error=str(err))
            raise
        if view is not None:
            self.hub.publish(Event.of("bill_corrected", view))
            for listener in self._correction_listeners:
                listener(view)
            log.info("bill_corrected", bill_id=bill_id, action=correction.action, actor=actor)
            self._outbox_changed(pos=view["handed_over_at"] is not None)
        return view

    async def handover(self, bill_id: str, *, actor: str | None = None,
                       pos: bool = False) -> dict[str, Any] | None:
        """Mark a bill handed over to the POS (once); the bill, or None if unknown.

        ``pos``: also queue it for the POS webhook. A first hand-over
        publishes ``bill_corrected`` (the bill now carries ``handed_over_at``).

        Raises
        ------
        CorrectionConflict
            The bill is void.
        JournalError
            The journal failed to store it.
        """
        try:
            view = await self._run(functools.partial(self._need().handover, actor=actor,
                                                     pos=pos), bill_id)
        except JournalError as err:
            self.metrics.journal_errors.labels(op="handover").inc()
            log.error("handover_failed", bill_id=bill_id, error=str(err))
            raise
        if view is not None:
            self.hub.publish(Event.of("bill_corrected", view))
            log.info("bill_handed_over", bill_id=bill_id, actor=view["handed_over_by"],
                     at=view["handed_over_at"])
            self._outbox_changed(pos=pos)
        return view

    # ---- the fleet outbox ---------------------------------------------------------

    def add_outbox_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the loop after each commit that added outbox rows."""
        self._outbox_listeners.append(listener)

    def add_correction_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(bill view)`` on the loop after each stored correction
        (the shadow's "who was right", :mod:`edge.rollout.shadow`)."""
        self._correction_listeners.append(listener)

    def add_pos_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the loop after each commit that may have added
        rows for the POS webhook."""
        self._pos_listeners.append(listener)

    async def outbox_pending(self, limit: int, target: str = "fleet") -> list[OutboxRow]:
        """The first ``limit`` unsent outbox rows of ``target``, oldest first."""
        return await self._run(lambda: self._need().outbox_pending(limit, target))

    async def outbox_mark_sent(self, ids: Sequence[int]) -> int:
        """Mark outbox rows sent (acknowledged by the broker); how many changed."""
        return await self._run(self._need().outbox_mark_sent, list(ids))

    async def outbox_prune(self, keep_s: float) -> int:
        """Delete outbox rows sent more than ``keep_s`` seconds ago; how many went."""
        return await self._run(self._need().outbox_prune, keep_s)

    async def outbox_depth(self, target: str = "fleet") -> tuple[int, float | None]:
        """``(unsent outbox rows of target, created_at of the oldest or None)``."""
        return await self._run(self._need().outbox_depth, target)

    def _outbox_changed(self, *, pos: bool = False) -> None:
        if self.outbox:
            for listener in self._outbox_listeners:
                listener()
        if pos:
            for listener in self._pos_listeners:
                listener()

    async def limit_journal_size(self, max_bytes: int | None) -> None:
        """Cap the journal file (see :meth:`Journal.limit_size`); None lifts the cap."""
        await self._run(self._need().limit_size, max_bytes)

    # ---- lifecycle --------------------------------------------------------------

    async def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is pending (for at most ``timeout_s``), end the event
        streams and close the journal. Bills that still could not be committed
        are logged in full (``bills_not_committed``)."""
        if self._closed:
            return
        self._closed = self._closing = True
        for timer in self._tray_timers.values():
            timer.cancel()
        self._tray_timers.clear()
        if self._writer is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout_s)
            except asyncio.TimeoutError:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
        if self._pending:
            log.error("bills_not_committed", count=len(self._pending), path=str(self.path),
                      fault=self._fault, bills=[b.to_json() for b in self._pending])
        self.hub.close()
        if self._journal is not None:
            with contextlib.suppress(Exception):
                await self._run(self._journal.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # its queue is empty: the close ran last
        log.info("journal_closed", path=str(self.path), not_committed=len(self._pending))

    async def _write_loop(self) -> None:
        delay = self.retry_initial_s
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            bill = self._pending[0]
            started = time.perf_counter()
            try:
                view, durable_mono, durable_wall = await self._run(self._commit, bill)
            except Exception as err:  # the bill stays at the head of the queue
                self.metrics.journal_errors.labels(op="commit").inc()
                self._set_fault(f"journal {self.path} cannot commit bills "
                                f"({len(self._pending)} pending): {err}")
                log.error("bill_commit_failed", bill_id=bill.bill_id, stream=bill.stream_id,
                          pending=len(self._pending), error=str(err), retry_in_s=delay)
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           min(delay, 0.5) if self._closing else delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.metrics.bill_commit_seconds.observe(time.perf_counter() - started)
            self._pending.popleft()
            submitted = self._submitted.pop(bill.bill_id, durable_mono)
            self.metrics.bills_pending.set(len(self._pending))
            delay = self.retry_initial_s
            if self._fault is not None:
                log.info("journal_recovered", path=str(self.path), pending=len(self._pending))
                self._set_fault(None)
            if view is None:
                log.info("bill_already_journaled", bill_id=bill.bill_id)
                continue
            self.metrics.bills_committed.labels(stream=bill.stream_id).inc()
            # the one line that announces a bill, once it is durable (a kill -9 after
            # it cannot lose the bill); durable_ms: from the capture of the frame in
            # which the tray crossed, submit_ms: from the stream loop's submit
            log.info("bill_committed", bill_id=bill.bill_id, stream=bill.stream_id,
                     tray=bill.tray_id, reason=bill.reason, total=bill.total,
                     items=len(bill.items), needs_review=bill.needs_review,
                     review=list(bill.review),
                     durable_ms=round((durable_wall - bill.closed_at) * 1000.0, 2),
                     submit_ms=round((durable_mono - submitted) * 1000.0, 2))
            self.hub.publish(Event.of("bill", view, view["seq"]))
            self._outbox_changed()

    def _commit(self, bill: Bill) -> tuple[dict[str, Any] | None, float, float]:
        """In the journal thread: commit, then read back the view to publish.

        Returns the view (None when already journaled or unreadable) and the
        moment the commit returned (durable): ``time.monotonic()``, ``time.time()``.
        """
        journal = self._need()
        new = journal.commit(bill)
        durable_mono, durable_wall = time.monotonic(), time.time()
        if not new:
            return None, durable_mono, durable_wall
        try:
            return journal.get(bill.bill_id), durable_mono, durable_wall
        except JournalError as err:  # committed, only the event is lost; the page reloads
            log.error("bill_readback_failed", bill_id=bill.bill_id, error=str(err))
            return None, durable_mono, durable_wall

    def _set_fault(self, fault: str | None) -> None:
        changed = (fault is None) != (self._fault is None)
        self._fault = fault
        if changed:
            self.hub.publish(Event.of("journal", self.status()))

    def _need(self) -> Journal:
        if self._journal is None:
            raise JournalError(f"{self.path}: the journal is not open")
        return self._journal

    async def run_journal(self, op: Callable[[Journal], T]) -> T:
        """Run ``op(journal)`` in the journal's thread (what corrections teach,
        :mod:`edge.learn.service`); a failure is counted and logged, then raised."""
        return await self._read(op)

    async def _read(self, op: Callable[[Journal], T]) -> T:
        try:
            return await self._run(lambda: op(self._need()))
        except JournalError as err:
            self.metrics.journal_errors.labels(op="read").inc()
            log.error("journal_read_failed", error=str(err))
            raise

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise JournalError(f"{self.path}: the journal is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
