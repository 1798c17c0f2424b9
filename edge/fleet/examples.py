"""Examples across the fleet: what one box's cashiers teach, the boxes of its site learn.

``correction ─▶ journal (examples) ─▶ ExampleShare ─▶ broker ─▶ ExampleShare of
another box ─▶ its journal (add_remote_examples) ─▶ its index``

With ``fleet.share_examples`` the publisher's connection (:mod:`edge.fleet.publisher`)
carries a bill's examples out and the site's examples in
(:mod:`edge.fleet.example_messages`: one retained message per bill, never an image).

**Out, from the journal's rows.** A correction writes or takes back examples in
its own transaction (:mod:`edge.billing.teach`); each local example records what
the fleet last published of it (``examples.shared``). :meth:`ExampleShare.pump`
reads the bills whose examples differ from what was published, publishes each
bill's examples as they are now (QoS 1, retained) and, after the broker's
``PUBACK``, records the state it published (one that changed meanwhile stays
unshared and goes out again). So nothing is
lost to a broker outage, a restart or a ``kill -9`` (what was not acknowledged
goes out at the next connection), a re-send carries the newest state, and
examples made while sharing was off go out once it is on. The outbox is not used:
its rows carry a payload fixed at commit (a re-send could revive an example an
undo took back since), and the examples table already is the state to converge to.

**In, merged idempotently.** Each connection subscribes to
``{prefix}/{site}/+/examples/+``; the broker hands over the retained messages of
every box of the site, so a box that was away, restarted or joined later gets
them all. A message of the box itself is ignored; any other is checked strictly
(size, fields, embedding shapes, finite values; an embedding size must be the one
this box knows for the model) and a bad one is logged (``fleet_examples_invalid``)
and counted, never fatal. Examples whose state this box already merged are
dropped at once (the retained copies come again at every reconnection); the rest
go, latest state per uid, to :meth:`edge.learn.service.LearningService.merge_remote`
in batches: journal first (``Journal.add_remote_examples``, idempotent by uid, a
removal propagates), then the index, so the next tray is named with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from edge.billing.journal import Journal
from edge.billing.teach import StoredExample
from edge.errors import JournalError
from edge.fleet.example_messages import (
    MAX_EXAMPLES,
    MAX_KEY_CHARS,
    MAX_MESSAGE_BYTES,
    BadExamplesMessage,
    can_share,
    examples_message,
    examples_topic,
    parse_examples,
)
from edge.fleet.messages import Topics
from edge.metrics import Metrics

if TYPE_CHECKING:
    from edge.learn.service import JournalAccess

WINDOW = 16
"""Bills whose examples are in flight at once (published, not yet acknowledged)."""
POLL_S = 5.0
"""The journal is asked for unshared examples at least this often without a correction."""
MERGE_BATCH = 1024
"""Received examples merged in one journal transaction."""
MAX_WAITING = 100_000
"""Received examples waiting for their merge; more are dropped (counted) and come
again with the retained messages at the next connection."""

Publish = Callable[[str, bytes], Awaitable[object]]
"""Publishes a payload on a topic, retained at QoS 1; returns once acknowledged."""
Merge = Callable[[Sequence[StoredExample]], Awaitable[int]]
"""Stores received examples and puts them in the index; rows changed."""

log = structlog.get_logger(__name__)


class ExampleShare:
    """Sends this box's examples and merges those of its site's other boxes.

    Parameters
    ----------
    topics : Topics
        The box's topics.
    journal : JournalAccess
        The bill service: the journal's example rows, and a call after each
        correction (the wake-up to publish).
    merge : callable
        :meth:`edge.learn.service.LearningService.merge_remote`.
    metrics : Metrics
        ``dishtracker_fleet_published_total{kind="examples"}``.
    model_dim : callable, optional
        The embedding size of a model by registry id (the model store), None
        when unknown: a received embedding of another size is refused.
    """

    def __init__(self, topics: Topics, journal: JournalAccess, merge: Merge, metrics: Metrics,
                 *, model_dim: Callable[[str], int | None] | None = None) -> None:
        self.topics = topics
        self.journal = journal
        self.merge = merge
        self.metrics = metrics
        self.model_dim = model_dim
        self.wake = asyncio.Event()
        self._arrived = asyncio.Event()
        self._waiting: dict[str, StoredExample] = {}  # uid -> latest state received
        self._merging: dict[str, bool] = {}  # uid -> removed, in the merge in flight
        self._merged: dict[str, bool] = {}  # uid -> removed, as merged
        self._dims: dict[str, int] = {}
        self._counts = dict.fromkeys(("messages_published", "examples_published", "received",
                                      "own", "invalid", "examples_merged", "rows_changed",
                                      "dropped", "merge_failures"), 0)
        self._unshared_bills: int | None = None
        self._last_invalid: str | None = None
        journal.add_correction_listener(lambda _bill: self.wake.set())

    @property
    def follows(self) -> str:
        """The subscription: every box's examples of the site."""
        return self.topics.site_examples

    def wants(self, topic: str) -> bool:
        """Whether ``topic`` is an examples topic of the site."""
        return examples_topic(topic, self.topics) is not None

    def status(self) -> dict[str, Any]:
        """For ``GET /api/fleet`` (``examples``) and the health report."""
        return {"follows": self.follows, "unshared_bills": self._unshared_bills,
                "waiting": len(self._waiting) + len(self._merging),
                "last_invalid": self._last_invalid, **self._counts}

    # ---- in ------------------------------------------------------------------------

    def offer(self, topic: str, payload: bytes) -> None:
        """A message arrived on :attr:`follows`: check it and queue what is new."""
        where = examples_topic(topic, self.topics)
        if where is None:
            return
        box, bill_id = where
        if box == self.topics.box:
            self._counts["own"] += 1
            return
        if not payload:  # a retained message cleared by hand: nothing to learn
            return
        self._counts["received"] += 1
        try:
            examples = parse_examples(payload, site=self.topics.site, box=box, bill_id=bill_id)
            self._check_dims(examples)
        except BadExamplesMessage as err:
            self._counts["invalid"] += 1
            self._last_invalid = f"{topic}: {err}"[:300]
            log.warning("fleet_examples_invalid", topic=topic, error=str(err)[:300])
            return
        for ex in examples:
            if self._expected(ex.uid) == ex.removed:
                self._waiting.pop(ex.uid, None)
            elif ex.uid in self._waiting or len(self._waiting) < MAX_WAITING:
                self._waiting[ex.uid] = ex
            else:
                self._counts["dropped"] += 1
        if self._waiting:
            self._arrived.set()

    def _expected(self, uid: str) -> bool | None:
        """The state a uid will have once the merge in flight is done (None: unknown)."""
        return self._merging[uid] if uid in self._merging else self._merged.get(uid)

    def _check_dims(self, examples: Sequence[StoredExample]) -> None:
        """Refuse embeddings whose size is not the one known for their model (the
        index holds one matrix per model)."""
        for ex in examples:
            d = ex.embedding.shape[0]
            want = self._dims.get(ex.model_id)
            if want is None and self.model_dim is not None:
                want = self.model_dim(ex.model_id)
            if want is not None and want != d:
                raise BadExamplesMessage(f"examples: model {ex.model_id}'s embeddings have "
                                         f"{want} values on this box, the message's {d}")
        for ex in examples:
            self._dims.setdefault(ex.model_id, ex.embedding.shape[0])

    async def run(self) -> None:
        """Merge what arrives, in batches, for the daemon's life (a task of its own:
        it outlives reconnections)."""
        try:
            dims = await self.journal.run_journal(lambda j: j.example_dims())
            self._dims.update({m: d for m, d in dims.items() if m not in self._dims})
        except JournalError as err:  # counted and logged by the journal's service
            log.error("fleet_examples_dims_unread", error=str(err))
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._waiting:
                uids = list(self._waiting)[:MERGE_BATCH]
                batch = [self._waiting.pop(u) for u in uids]
                self._merging = {ex.uid: ex.removed for ex in batch}
                try:
                    changed = await self.merge(batch)
                except JournalError as err:
                    self._counts["merge_failures"] += 1
                    log.error("fleet_examples_merge_failed", error=str(err), examples=len(batch))
                    for ex in batch:  # again later, unless a newer state arrived meanwhile
                        self._waiting.setdefault(ex.uid, ex)
                    self._merging = {}
                    await asyncio.sleep(POLL_S)
                    continue
                self._merged.update(self._merging)
                self._merging = {}
                self._counts["examples_merged"] += len(batch)
                self._counts["rows_changed"] += changed

    # ---- out -----------------------------------------------------------------------

    async def pump(self, publish: Publish) -> None:
        """Publish unshared examples for one connection; raises the first failed
        publication (the connection is lost), runs until cancelled otherwise."""
        while True:
            self.wake.clear()
            try:
                bills = await self.journal.run_journal(lambda j: j.examples_to_share(WINDOW))
            except JournalError:
                await self._idle(POLL_S)
                continue
            if not bills:
                await self._count_unshared()
                await self._idle(POLL_S)
                continue
            messages = [(bill_id, exs, self._message(bill_id, exs)) for bill_id, exs in bills]
            results = await asyncio.gather(
                *(publish(self.topics.examples(bill_id), payload)
                  for bill_id, _, payload in messages), return_exceptions=True)
            acked = [exs for (_, exs, _), result in zip(messages, results, strict=True)
                     if not isinstance(result, BaseException)]
            if acked:
                self._counts["messages_published"] += len(acked)
                self._counts["examples_published"] += sum(len(exs) for exs in acked)
                self.metrics.fleet_published.labels(kind="examples").inc(len(acked))
                marks = [ex for exs in acked for ex in exs]
                try:
                    await self.journal.run_journal(functools.partial(
                        Journal.mark_examples_shared, examples=marks))
                except JournalError:  # published again later: a retained state, idempotent
                    await self._idle(POLL_S)
                await self._count_unshared()
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    def _message(self, bill_id: str, examples: list[StoredExample]) -> bytes:
        """The bill's message: the examples another box can take (a key too long
        for the message is not shared), at most what one message may hold."""
        fit = sorted((ex for ex in examples if can_share(ex)),
                     key=lambda ex: ex.removed)[:MAX_EXAMPLES]
        payload = examples_message(self.topics, bill_id, fit)
        while len(payload) > MAX_MESSAGE_BYTES and fit:
            fit = fit[:len(fit) * 3 // 4]
            payload = examples_message(self.topics, bill_id, fit)
        if len(fit) < len(examples):
            log.warning("fleet_examples_not_all_shared", bill_id=bill_id, shared=len(fit),
                        examples=len(examples),
                        reason=f"a message holds at most {MAX_EXAMPLES} examples and "
                               f"{MAX_MESSAGE_BYTES} bytes; keys of 1-{MAX_KEY_CHARS} "
                               "printable characters")
        return payload

    async def _count_unshared(self) -> None:
        with contextlib.suppress(JournalError):
            self._unshared_bills = await self.journal.run_journal(
                lambda j: j.unshared_example_bills())

    async def _idle(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout_s)

