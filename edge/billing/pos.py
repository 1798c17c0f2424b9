"""Hand-overs to the POS: the journal's ``pos`` outbox rows to a webhook, at least once.

``journal (outbox) ─▶ POS webhook``, beside the fleet publisher: when a
cashier hands a bill over (``POST /api/bills/{id}/handover``) and
``till.pos_webhook_url`` is set, the journal writes an outbox row for the
``pos`` target in the hand-over's own transaction, and one more for every
later correction of that bill (:mod:`edge.billing.outbox`). This stage POSTs
the unsent rows in ``id`` order, one at a time, and marks a row sent only
after a 2xx answer. A failure (refused connection, timeout, any other
status) is retried with exponential backoff, and the rows behind it wait, so
the POS sees a bill's hand-over before its corrections. A row stays unsent in
the journal across restarts until the POS acknowledges it: delivery is at
least once, and the POS dedupes by the ``Idempotency-Key`` header (the
``bill_id`` for a hand-over, the message id ``{bill_id}:c{id}`` for a
correction). The body is documented in ``docs/API.md``.

The URL is read from the config in force before each attempt, so a changed
``till.pos_webhook_url`` applies live; without one, rows wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aiohttp
import structlog

from edge.billing.outbox import OutboxRow
from edge.errors import JournalError

TARGET = "pos"
"""The outbox target of this stage's rows."""

BATCH = 32
"""Rows read from the journal at once."""

SCHEMA = 1
"""``schema`` of every webhook body."""

log = structlog.get_logger(__name__)


class PosOutbox(Protocol):
    """What the delivery needs from the journal
    (:class:`edge.billing.service.BillingService` provides it)."""

    async def outbox_pending(self, limit: int, target: str = "fleet") -> list[OutboxRow]:
        """The first ``limit`` unsent rows of ``target``, oldest first."""
        ...

    async def outbox_mark_sent(self, ids: Sequence[int]) -> int:
        """Mark rows sent; how many changed."""
        ...


def webhook_body(row: OutboxRow) -> dict[str, Any]:
    """The JSON body POSTed for ``row``: a header that names the message and
    the row's payload (``handover`` and ``bill``, or ``correction`` and
    ``effective``)."""
    return {"schema": SCHEMA, "type": row.kind, "message_id": row.message_id,
            "bill_id": row.bill_id, "stream_id": row.stream_id,
            "committed_at": row.created_at, **json.loads(row.payload)}


def idempotency_key(row: OutboxRow) -> str:
    """``Idempotency-Key`` of a row: the bill id for its hand-over, else the message id."""
    return row.bill_id if row.kind == "handover" else row.message_id


class PosDelivery:
    """POSTs the ``pos`` outbox rows to the webhook of the config in force.

    Parameters
    ----------
    outbox : PosOutbox
        The journal's outbox (the billing service).
    url : callable
        Returns ``till.pos_webhook_url`` in force (None: hold the rows).
    retry_initial_s, retry_max_s : float
        Backoff between failed attempts, seconds (doubling up to the max).
    poll_s : float
        The outbox is read at least this often without a wake-up, seconds.
    timeout_s : float
        One POST's whole time limit, seconds.
    """

    def __init__(self, outbox: PosOutbox, url: Callable[[], str | None], *,
                 retry_initial_s: float = 1.0, retry_max_s: float = 60.0,
                 poll_s: float = 5.0, timeout_s: float = 10.0) -> None:
        self.outbox = outbox
        self.url = url
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start delivering in a task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="pos-delivery")

    def wake(self) -> None:
        """New rows may be there: read the outbox now (call on the loop)."""
        self._wake.set()

    async def close(self) -> None:
        """Stop; unsent rows stay in the journal for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Deliver until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            delay = self.retry_initial_s
            while True:
                self._wake.clear()  # before the read: a commit during it wakes the next
                if await self._round(session):
                    delay = self.retry_initial_s
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)

    async def _round(self, session: aiohttp.ClientSession) -> bool:
        """Send what is pending; False when an attempt failed (back off)."""
        url = self.url()
        if url is None:
            return True
        try:
            rows = await self.outbox.outbox_pending(BATCH, TARGET)
        except JournalError as err:
            log.error("pos_outbox_read_failed", error=str(err))
            return False
        for row in rows:
            if not await self._post(session, url, row):
                return False
            try:
                await self.outbox.outbox_mark_sent([row.id])
            except JournalError as err:  # sent again later: the POS dedupes
                log.error("pos_mark_sent_failed", message_id=row.message_id, error=str(err))
                return False
            self.delivered += 1
            log.info("pos_delivered", message_id=row.message_id, kind=row.kind)
        if len(rows) == BATCH:
            self._wake.set()  # more behind them
        return True

    async def _post(self, session: aiohttp.ClientSession, url: str, row: OutboxRow) -> bool:
        try:
            async with session.post(url, json=webhook_body(row),
                                    headers={"Idempotency-Key": idempotency_key(row)}) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True
                reason = f"HTTP {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            reason = repr(err)
        self.failures += 1
        log.warning("pos_delivery_failed", message_id=row.message_id, reason=reason,
                    failures=self.failures)
        return False
