"""The fleet hands a box its models: which retained model message the box follows.

``broker (retained model message) ─▶ model pull (this module) ─▶ adoption
(:mod:`edge.fleet.adoption`: fetch, verify, store, shadow, promote)``, beside
the publisher that sends the box's bills (:mod:`edge.fleet.publisher`, whose
connection carries the messages both ways). With ``fleet.models`` the box
follows ``{prefix}/{site}/model`` and, with ``fleet.group``,
``{prefix}/groups/{group}/model``: the site's message wins over the group's,
an empty one withdraws it, and a message that is not one is ``refused``
(said, never fatal).

A message is carried through once. The broker hands the retained messages
over again at every reconnection; those are the same messages, so a model
refused for a bad checksum is not fetched again in a loop. A message published
while the box is connected (MQTT's retain flag is then off) is a new one and
tried again, as is everything after a restart. A newer or withdrawn message
cancels the work on the one before.

The state of the message in hand (``downloading``, ``verifying``,
``shadowing``, ``promoted``, ``rejected``, ``refused``, ``failed``,
``serving``, ``withdrawn``) is logged (``fleet_model_{state}``), published
retained on ``{prefix}/{site}/{box}/model`` and answered in ``GET /api/fleet``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from edge.config import FleetConfig
from edge.fleet.adoption import ACTOR, DEFAULT_MAX_BYTES, Adoption, PullState, shadow_id
from edge.fleet.messages import BadModelMessage, ModelOrder, Topics, parse_model_message
from edge.rollout import RolloutControl, RolloutError

PROGRESS_REPORT_S = 5.0
"""A download's bytes and a shadow's figures go to the broker at most this often
(always to ``GET /api/fleet``)."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Offer:
    """What one topic (``site`` or ``group``) asks for: a model, or why its message is not one."""

    source: str
    order: ModelOrder | None = None
    error: str | None = None


class ModelPuller:
    """Follows the fleet's model messages for one box; one :class:`Adoption` at a time.

    Parameters
    ----------
    config : FleetConfig
        ``group``, and what the adoptions need (shadow time, gates, backoff).
    topics : Topics
        The box's topics.
    rollout : RolloutControl
        The daemon's rollout controller and its model store.
    max_bytes : int
        Largest model file fetched, bytes.
    """

    def __init__(self, config: FleetConfig, topics: Topics, rollout: RolloutControl, *,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.config = config
        self.topics = topics
        self.rollout = rollout
        self.max_bytes = max_bytes
        self.sources = {topics.site_model: "site"}
        if config.group is not None:
            self.sources[topics.group_model(config.group)] = "group"
        self.changed = asyncio.Event()
        """Set when the report changed (the publisher sends it then)."""
        self._offers: dict[str, _Offer] = {}
        self._received = 0
        self._offered = asyncio.Event()
        self._again = False
        self._report: dict[str, Any] | None = None
        self._reported_at = 0.0
        self._adoption: Adoption | None = None

    # ---- what the publisher calls -------------------------------------------------------

    @property
    def follows(self) -> list[str]:
        """The topics to subscribe to (QoS 1)."""
        return list(self.sources)

    def offer(self, topic: str, payload: bytes, *, retained: bool) -> None:
        """A message arrived on one of :attr:`follows`.

        ``retained`` is MQTT's flag: True for the stored message the broker
        hands over at each subscription (after every reconnect), False for one
        published while subscribed. Only the latter retries a message the box
        has finished with (refused, rejected); the former is the same message
        again.
        """
        source = self.sources.get(topic)
        if source is None:
            return
        self._received += 1
        try:
            order = parse_model_message(payload)
        except BadModelMessage as err:
            log.warning("fleet_model_message_invalid", topic=topic, error=str(err))
            offer = _Offer(source, error=f"the {source}'s model message on {topic} is not "
                                         f"valid: {err}")
        else:
            if order is not None:
                log.info("fleet_model_message", topic=topic, version=order.version,
                         sha256=order.sha256, url=order.shown_url, retained=retained)
            offer = _Offer(source, order)
        if offer.order is None and offer.error is None:
            self._offers.pop(source, None)
        else:
            self._offers[source] = offer
        self._again = self._again or not retained
        self._offered.set()

    def last_report(self) -> dict[str, Any] | None:
        """The last state (JSON-ready), None before the first message."""
        return None if self._report is None else dict(self._report)

    def status(self) -> dict[str, Any]:
        """``GET /api/fleet``'s ``models``: the topics followed, the model messages
        received (redeliveries of retained ones included) and the last state."""
        return {"follows": self.follows, "messages": self._received,
                **(self._report or {"state": None})}

    # ---- the task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the messages until cancelled; a new or withdrawn message stops the
        work of the one before. Ends only by cancellation, or a bug."""
        job: asyncio.Task[None] | None = None
        following: _Offer | None = None
        try:
            while True:
                waiter = asyncio.ensure_future(self._offered.wait())
                pending: set[asyncio.Future[Any]] = {waiter} if job is None else {waiter, job}
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if job is not None and job.done():
                    job.result()  # a bug in a step ends the task: the supervisor says so
                    job = None
                if not self._offered.is_set():
                    continue
                self._offered.clear()
                offer = self._effective()
                again, self._again = self._again, False
                if offer == following and (job is not None or not again):
                    continue
                if job is not None:
                    await self._stop(job, offer)
                    job = None
                following = offer
                if offer is not None and offer.error is not None:
                    self._adoption = None
                    self._set("refused", offer.error, order=None, source=offer.source)
                elif offer is not None and offer.order is not None:
                    reporter = _Reporter(functools.partial(self._set, order=offer.order,
                                                           source=offer.source), self._update)
                    self._adoption = Adoption(offer.order, self.config, self.rollout, reporter,
                                              max_bytes=self.max_bytes)
                    job = asyncio.create_task(self._adoption.run(), name="fleet-model")
        finally:
            if job is not None:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job

    def _effective(self) -> _Offer | None:
        return self._offers.get("site") or self._offers.get("group")

    async def _stop(self, job: asyncio.Task[None], offer: _Offer | None) -> None:
        """Stop the work on the message before ``offer``; a candidate it shadows is
        retired unless ``offer`` names the same file (its adoption goes on with it)."""
        adoption, self._adoption = self._adoption, None
        if job.done():  # it reached its final state just now: nothing to undo
            job.result()
            return
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        if adoption is None:
            return
        same = offer is not None and offer.order is not None \
            and offer.order.sha256 == adoption.order.sha256
        shadowing = adoption.shadowing
        if shadowing is not None and not same and shadow_id(self.rollout.status()) == shadowing:
            with contextlib.suppress(RolloutError):
                await self.rollout.retire(shadowing, actor=ACTOR)
        if offer is None and self._report is not None:
            self._set("withdrawn", f"the model message was withdrawn while "
                                   f"{self._report['state']}",
                      order=adoption.order, source=self._report.get("source"))

    # ---- the report ---------------------------------------------------------------------

    def _set(self, state: PullState, detail: str, *, order: ModelOrder | None,
             source: str | None, **fields: Any) -> None:
        """Record and log a state; the publisher sends it (retained)."""
        before = self._report or {}
        sha256 = order.sha256 if order else None
        carried = {k: before.get(k) if sha256 and before.get("sha256") == sha256 else None
                   for k in ("bytes_done", "bytes_total", "shadow")}
        self._report = {"state": state, "version": order.version if order else None,
                        "sha256": sha256, "source": source, "detail": detail,
                        "at": time.time(), **carried, **fields}
        self._reported_at = time.monotonic()
        self.changed.set()
        level = log.warning if state in ("refused", "failed", "rejected") else log.info
        level(f"fleet_model_{state}", version=self._report["version"], sha256=sha256,
              source=source, detail=detail)

    def _update(self, **fields: Any) -> None:
        """Figures of the current state: at once in the status, on the broker at most
        every :data:`PROGRESS_REPORT_S`."""
        if self._report is None:
            return
        self._report.update(fields)
        now = time.monotonic()
        if now - self._reported_at >= PROGRESS_REPORT_S:
            self._reported_at = now
            self.changed.set()


class _Reporter:
    """One adoption's voice: its states go into the puller's report, tagged with its message."""

    def __init__(self, report: Callable[..., None], update: Callable[..., None]) -> None:
        self._report = report
        self._update = update

    def report(self, state: PullState, detail: str, **fields: Any) -> None:
        self._report(state, detail, **fields)

    def update(self, **fields: Any) -> None:
        self._update(**fields)
