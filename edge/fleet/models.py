"""The fleet hands a box its models: follow the retained model message, fetch, prove, promote.

``broker (retained model message) ─▶ model pull ─▶ model store ─▶ rollout (shadow ─▶
promote)``, beside the publisher that sends the box's bills
(:mod:`edge.fleet.publisher`, whose connection carries the messages both
ways). With ``fleet.models`` the box follows ``{prefix}/{site}/model`` and,
with ``fleet.group``, ``{prefix}/groups/{group}/model``; the site's message
wins over the group's, an empty one withdraws it.

What the box does with a message, one step at a time, each said on the
retained topic ``{prefix}/{site}/{box}/model`` and in ``GET /api/fleet``:

1. A model the store serves already: ``serving``, nothing else.
2. Otherwise ``downloading``, resumable (:mod:`edge.fleet.download`); the
   network's failures are retried with backoff, for as long as the message
   stands.
3. ``verifying``: size and SHA-256 of what is on disk against the message. A
   mismatch removes the file and is ``refused``; the same message is not tried
   again until it is published anew or the daemon restarts (a loop would
   fetch the same wrong bytes forever). Only a verified file goes into the
   store, and the store checks the detector contract (``refused`` otherwise).
4. ``shadowing`` for ``fleet.model_shadow_s``, then ``promoted`` when the
   shadow's figures pass the gates (``model_min_bills``,
   ``model_min_agreement``, no inference error), else ``rejected`` and
   retired. An operator who promotes or retires it by hand meanwhile ends the
   wait; the report says what happened.

A model an operator (or the rollout, by itself) retired on this box is not
shadowed again by the fleet: the box's own evidence beats the fleet's wish.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import aiohttp
import structlog

from edge.config import FleetConfig
from edge.fleet.download import (
    DownloadFailed,
    DownloadRefused,
    client_timeout,
    fetch,
    partial_path,
    sha256_of,
)
from edge.fleet.messages import BadModelMessage, ModelOrder, Topics, parse_model_message
from edge.fsutil import make_private_dir
from edge.rollout import RolloutControl, RolloutError
from edge.sources.backoff import Backoff

if TYPE_CHECKING:
    from edge.rollout.store import ModelEntry

PullState = Literal["downloading", "verifying", "shadowing", "promoted", "rejected",
                    "refused", "failed", "serving", "withdrawn"]

ACTOR = "fleet"
"""Who the store's history names for what the fleet does."""

DOWNLOADS_DIR = "downloads"
"""Partial downloads, under the store's folder (its ``incoming/`` is emptied at
every start, which would lose what a restart should resume)."""

SHADOW_POLL_S = 1.0
"""The shadow's figures are read this often."""

HISTORY_SEARCHED = 1000
"""Store history events searched for a model's last change (the store keeps as many)."""

BUSY_ATTEMPTS = 5
BUSY_WAIT_S = 1.0
"""A rollout operation refused with 409 is tried this many times, this far apart."""

PROGRESS_REPORT_S = 5.0
"""A download's progress goes to the broker at most this often (always to ``GET /api/fleet``)."""

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
"""Largest model file fetched unless told otherwise (``rollout.max_upload_mb``)."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Offer:
    """What one topic (``site`` or ``group``) asks for: a model, or why its message is not one."""

    source: str
    order: ModelOrder | None = None
    error: str | None = None


class ModelPuller:
    """Follows the fleet's model messages for one box and carries each one through.

    Parameters
    ----------
    config : FleetConfig
        ``group``, ``model_shadow_s``, ``model_min_bills``, ``model_min_agreement``,
        and the backoff of ``reconnect_initial_s`` / ``reconnect_max_s``.
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
        self._shadowing: str | None = None

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

    def report(self) -> dict[str, Any] | None:
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
                    self._set("refused", None, offer.source, offer.error)
                elif offer is not None and offer.order is not None:
                    job = asyncio.create_task(self._follow(offer.source, offer.order),
                                              name="fleet-model")
        finally:
            if job is not None:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job

    def _effective(self) -> _Offer | None:
        return self._offers.get("site") or self._offers.get("group")

    async def _stop(self, job: asyncio.Task[None], offer: _Offer | None) -> None:
        """Stop the work on the message before ``offer``; a candidate it shadows is
        retired unless ``offer`` names the same file (then its work goes on with it)."""
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        shadowing, self._shadowing = self._shadowing, None
        same = (offer is not None and offer.order is not None and self._report is not None
                and offer.order.sha256 == self._report["sha256"])
        if shadowing is not None and not same and _shadow_id(self.rollout.status()) == shadowing:
            with contextlib.suppress(RolloutError):
                await self.rollout.retire(shadowing, actor=ACTOR)
        if offer is None and self._report is not None:
            self._set("withdrawn", None, self._report.get("source"),
                      f"the model message was withdrawn while {self._report['state']}")

    # ---- one message, step by step ---------------------------------------------------------

    async def _follow(self, source: str, order: ModelOrder) -> None:
        entry = self._stored(order.sha256)
        if entry is not None and entry.version != order.version:
            self._set("refused", order, source, _versions_differ(entry, order))
            return
        if entry is not None and entry.state == "serving":
            self._set("serving", order, source, f"model {entry.id} serves already")
            return
        if entry is not None and entry.state == "retired":
            refusal = self._retired_here(entry)
            if refusal is not None:
                self._set("rejected", order, source, refusal)
                return
        if entry is None:
            entry = await self._fetch(source, order)
            if entry is None:
                return
        if entry.version != order.version:
            self._set("refused", order, source, _versions_differ(entry, order))
            return
        await self._prove(source, order, entry)

    def _stored(self, sha256: str) -> ModelEntry | None:
        try:
            return self.rollout.store.get(sha256)
        except RolloutError:
            return None

    def _last_change(self, entry: ModelEntry) -> dict[str, Any] | None:
        """The store's latest history event of ``entry``."""
        return next((e for e in self.rollout.store.history(limit=HISTORY_SEARCHED)
                     if e["model"] == entry.id), None)

    def _retired_here(self, entry: ModelEntry) -> str | None:
        """Why the fleet leaves a retired model alone: who retired it, if not the fleet."""
        last = self._last_change(entry)
        if last is None or last.get("actor") == ACTOR:
            return None
        return (f"model {entry.id} was retired on this box by {_who(last)}; the fleet does "
                "not shadow it again: shadow it by hand, or publish another model")

    async def _fetch(self, source: str, order: ModelOrder) -> ModelEntry | None:
        """Download, verify and store ``order``'s file; its entry, or None when refused."""
        folder = self.rollout.store.root / DOWNLOADS_DIR
        part = partial_path(folder, order.sha256)
        await asyncio.to_thread(_only_partial, folder, part)
        backoff = Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s,
                          healthy_s=0.0)
        detail = f"from {order.shown_url}"
        async with aiohttp.ClientSession(timeout=client_timeout()) as session:
            while True:
                self._set("downloading", order, source, detail,
                          bytes_done=part.stat().st_size if part.exists() else 0,
                          bytes_total=order.size)
                try:
                    size = await fetch(session, order.url, part, size=order.size,
                                       max_bytes=self.max_bytes, progress=self._progress)
                    break
                except DownloadRefused as err:
                    self._set("refused", order, source, f"{err}; the file was removed")
                    return None
                except DownloadFailed as err:
                    wait = backoff.next_delay()
                    log.warning("fleet_model_download_failed", sha256=order.sha256,
                                url=order.shown_url, reason=str(err), retry_in_s=round(wait, 2))
                    detail = f"{err}; retrying in {wait:.1f} s"
                    self._set("downloading", order, source, detail)
                    await asyncio.sleep(wait)
                    detail = f"from {order.shown_url}, retrying after: {err}"
        self._set("verifying", order, source, f"{size} bytes downloaded")
        problem = await asyncio.to_thread(_mismatch, part, order)
        if problem is not None:
            part.unlink(missing_ok=True)
            self._set("refused", order, source, f"{problem}; the file was removed")
            return None
        try:
            entry, _ = await asyncio.to_thread(
                self.rollout.store.add_file, part, source="fleet", actor=ACTOR,
                name=_file_name(order), move=True)
        except RolloutError as err:
            self._set("refused", order, source, f"the file is not a usable model: {err}")
            return None
        return entry

    def _progress(self, done: int, total: int | None) -> None:
        if self._report is None:
            return
        self._report["bytes_done"], self._report["bytes_total"] = done, total
        now = time.monotonic()
        if now - self._reported_at >= PROGRESS_REPORT_S:
            self._reported_at = now
            self.changed.set()

    async def _prove(self, source: str, order: ModelOrder, entry: ModelEntry) -> None:
        """Shadow ``entry``, watch its figures, promote or retire it."""
        shadowed = entry.state == "shadow" and _shadow_id(self.rollout.status()) == entry.id
        if not shadowed and not await self._act(
                lambda: self.rollout.shadow(entry.id, actor=ACTOR), order, source):
            return
        self._shadowing = entry.id
        shadow_s = self.config.model_shadow_s
        self._set("shadowing", order, source, f"model {entry.id} for {shadow_s:g} s")
        deadline = time.monotonic() + shadow_s
        while True:
            status = self.rollout.status()
            if _shadow_id(status) != entry.id:
                self._shadowing = None
                self._ended_by_hand(source, order, entry)
                return
            figures = _figures(status["shadow"])
            if self._report is not None:
                self._report["shadow"] = figures
            left = deadline - time.monotonic()
            if figures["errors"] or left <= 0:
                break
            await asyncio.sleep(min(SHADOW_POLL_S, left))
        self._shadowing = None
        failed = self._gates(figures)
        if failed is None:
            if await self._act(lambda: self.rollout.promote(entry.id, actor=ACTOR),
                               order, source):
                self._set("promoted", order, source, f"model {entry.id} serves: "
                          f"{_said(figures)}", shadow=figures)
            return
        if await self._act(lambda: self.rollout.retire(entry.id, actor=ACTOR), order, source):
            self._set("rejected", order, source, f"{failed}; model {entry.id} retired",
                      shadow=figures)

    def _gates(self, figures: dict[str, Any]) -> str | None:
        """Why ``figures`` do not pass the configured gates, or None when they do."""
        agreement = figures["agreement"]
        if figures["errors"]:
            return f"{figures['errors']} inference error(s) in the shadow"
        if figures["compared"] < self.config.model_min_bills:
            return (f"{figures['compared']} bill(s) compared, fewer than "
                    f"model_min_bills = {self.config.model_min_bills}")
        # no bill to compare says nothing against the model: the bills gate decides that
        if agreement is not None and agreement < self.config.model_min_agreement:
            return (f"agreement {agreement:.3f} is below model_min_agreement = "
                    f"{self.config.model_min_agreement:g}")
        return None

    def _ended_by_hand(self, source: str, order: ModelOrder, entry: ModelEntry) -> None:
        """The shadow ended without the fleet: say who did what."""
        now = self._stored(entry.sha256)
        state = now.state if now is not None else "gone from the store"
        last = self._last_change(entry)
        who = _who(last) if last is not None else "someone else"
        if state == "serving":
            self._set("serving", order, source, f"promoted during the shadow by {who}")
        else:
            self._set("rejected", order, source,
                      f"no longer shadowed: {state} since a change by {who}")

    async def _act(self, call: Callable[[], Awaitable[dict[str, Any]]], order: ModelOrder,
                   source: str) -> bool:
        """Run a rollout operation; a refusal is the state ``failed``. A 409 (another
        change under way, e.g. an operator's) is tried again a few times first."""
        for attempt in range(BUSY_ATTEMPTS):
            try:
                await call()
            except RolloutError as err:
                if err.status == HTTPStatus.CONFLICT and attempt + 1 < BUSY_ATTEMPTS:
                    await asyncio.sleep(BUSY_WAIT_S)
                    continue
                self._set("failed", order, source, str(err))
                return False
            return True
        raise AssertionError("unreachable")

    def _set(self, state: PullState, order: ModelOrder | None, source: str | None,
             detail: str, **extra: Any) -> None:
        """Record and log a state; the publisher sends it (retained)."""
        before = self._report or {}
        changed = before.get("state") != state
        sha256 = order.sha256 if order else None
        carried = {k: before.get(k) if sha256 and before.get("sha256") == sha256 else None
                   for k in ("bytes_done", "bytes_total", "shadow")}
        self._report = {"state": state, "version": order.version if order else None,
                        "sha256": sha256, "source": source, "detail": detail,
                        "at": time.time(), **carried, **extra}
        self._reported_at = time.monotonic()
        self.changed.set()
        if changed or state != "downloading":
            level = log.warning if state in ("refused", "failed", "rejected") else log.info
            level(f"fleet_model_{state}", version=self._report["version"],
                  sha256=self._report["sha256"], source=source, detail=detail)


def _versions_differ(entry: ModelEntry, order: ModelOrder) -> str:
    return (f"the file's model_version is {entry.version!r}, the message says "
            f"{order.version!r} (model {entry.id} stays {entry.state})")


def _who(event: dict[str, Any]) -> str:
    """``actor (reason)`` of a store history event."""
    return f"{event.get('actor') or 'the rollout'} ({event.get('reason') or 'no reason given'})"


def _shadow_id(status: dict[str, Any]) -> str | None:
    """The shadowed model's id in ``RolloutControl.status()``: its ``shadow`` holds
    ``id`` beside ``stats``, or the entry under ``model``."""
    shadow = status.get("shadow")
    if not isinstance(shadow, dict):
        return None
    model = shadow.get("model", shadow)
    return model.get("id") if isinstance(model, dict) else None


def _figures(shadow: dict[str, Any]) -> dict[str, Any]:
    """``compared``, ``agreement``, ``errors`` of a shadow's ``stats`` (absent ones: 0, None, 0)."""
    stats = shadow.get("stats") or {}
    agreement = stats.get("agreement")
    return {"compared": int(stats.get("compared") or 0),
            "agreement": None if agreement is None else float(agreement),
            "errors": int(stats.get("errors") or 0)}


def _said(figures: dict[str, Any]) -> str:
    agreement = figures["agreement"]
    return (f"{figures['compared']} bill(s) compared, agreement "
            f"{'n/a' if agreement is None else f'{agreement:.3f}'}, {figures['errors']} errors")


def _only_partial(folder: Path, keep: Path) -> None:
    """Make ``folder``; remove the partial downloads of other messages in it."""
    make_private_dir(folder)
    for other in folder.glob("*.part"):
        if other != keep:
            other.unlink(missing_ok=True)


def _mismatch(path: Path, order: ModelOrder) -> str | None:
    """What disagrees between the file at ``path`` and ``order`` (size, SHA-256), or None."""
    size = path.stat().st_size
    if order.size is not None and size != order.size:
        return f"the file is {size} bytes, the message says {order.size}"
    digest = sha256_of(path)
    if digest != order.sha256:
        return f"the file's sha256 is {digest}, the message says {order.sha256}"
    return None


def _file_name(order: ModelOrder) -> str:
    """The name the file arrives with: the URL's last path segment, else its version."""
    name = unquote(urlsplit(order.url).path.rsplit("/", 1)[-1])
    return name if name.endswith(".onnx") else f"{order.version}.onnx"
