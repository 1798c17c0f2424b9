"""One model message carried through: fetch, verify, store, shadow, promote or retire.

``model message ─▶ adoption (this module) ─▶ model store ─▶ rollout``: the
model pull (:mod:`edge.fleet.models`) decides which message the box follows
and starts one :class:`Adoption` for it; a newer message cancels it. Each
step is reported as a state:

1. The store serves this file already: ``serving``, nothing else.
2. ``downloading`` into ``<store>/downloads/<sha256>.part``, resumable
   (:mod:`edge.fleet.download`): the store empties its ``incoming/`` at every
   start, which would lose what a restart should resume. The network's
   failures are retried with backoff for as long as the message stands.
3. ``verifying``: size and SHA-256 of what is on disk against the message. A
   mismatch removes the file and is ``refused``: a retry would fetch the same
   wrong bytes. Only a verified file goes into the store, which checks the
   detector contract; its ``model_version`` must be the message's ``version``.
4. ``shadowing`` for ``fleet.model_shadow_s``, then ``promoted`` when the
   shadow's figures pass the gates (``model_min_bills``,
   ``model_min_agreement``, no inference error), else ``rejected`` and
   retired. An operator who promotes or retires the shadow by hand ends the
   wait, and the report says who did what.

A model an operator (or the rollout, by itself) retired on this box is not
shadowed again by the fleet: the box's own evidence beats the fleet's wish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
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
from edge.fleet.messages import ModelOrder
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
"""Partial downloads, under the store's folder."""

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
"""Largest model file fetched unless told otherwise (``rollout.max_upload_mb``)."""

SHADOW_POLL_S = 1.0
"""The shadow's figures are read this often."""

BUSY_ATTEMPTS = 5
BUSY_WAIT_S = 1.0
"""A rollout operation refused with 409 is tried this many times, this far apart."""

HISTORY_SEARCHED = 1000
"""Store history events searched for a model's last change (the store keeps as many)."""

log = structlog.get_logger(__name__)


class Reporter(Protocol):
    """Where an adoption says how it goes (:class:`edge.fleet.models.ModelPuller`)."""

    def report(self, state: PullState, detail: str, **fields: Any) -> None:
        """A new state of the message (logged, published)."""
        ...

    def update(self, **fields: Any) -> None:
        """Figures of the current state (download bytes, shadow figures)."""
        ...


class Adoption:
    """Carries one model message through, reporting each step.

    Parameters
    ----------
    order : ModelOrder
        The message.
    config : FleetConfig
        ``model_shadow_s``, the gates, and the download's backoff
        (``reconnect_initial_s`` to ``reconnect_max_s``).
    rollout : RolloutControl
        The rollout controller and its model store.
    reporter : Reporter
        Told each state and figure.
    max_bytes : int
        Largest model file fetched, bytes.
    """

    def __init__(self, order: ModelOrder, config: FleetConfig, rollout: RolloutControl,
                 reporter: Reporter, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.order = order
        self.config = config
        self.rollout = rollout
        self.reporter = reporter
        self.max_bytes = max_bytes
        self.shadowing: str | None = None
        """The id of the model this adoption shadows right now."""

    async def run(self) -> None:
        """Carry the message to a final state; cancelled when a newer one supersedes it."""
        order = self.order
        entry = self._stored(order.sha256)
        if entry is None:
            entry = await self._fetch()
            if entry is None:
                return
        if entry.version != order.version:
            self.reporter.report(
                "refused", f"the file's model_version is {entry.version!r}, the message says "
                           f"{order.version!r} (model {entry.id} stays {entry.state})")
            return
        if entry.state == "serving":
            self.reporter.report("serving", f"model {entry.id} serves already")
            return
        refusal = self._retired_here(entry) if entry.state == "retired" else None
        if refusal is not None:
            self.reporter.report("rejected", refusal)
            return
        await self._prove(entry)

    # ---- the file ---------------------------------------------------------------------

    def _stored(self, sha256: str) -> ModelEntry | None:
        try:
            return self.rollout.store.get(sha256)
        except RolloutError:
            return None

    async def _fetch(self) -> ModelEntry | None:
        """Download, verify and store the message's file; its entry, or None when refused."""
        order, report = self.order, self.reporter.report
        folder = self.rollout.store.root / DOWNLOADS_DIR
        part = partial_path(folder, order.sha256)
        held = await asyncio.to_thread(_only_partial, folder, part)
        backoff = Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s,
                          healthy_s=0.0)
        report("downloading", f"from {order.shown_url}", bytes_done=held,
               bytes_total=order.size)
        async with aiohttp.ClientSession(timeout=client_timeout()) as session:
            while True:
                try:
                    size = await fetch(session, order.url, part, size=order.size,
                                       max_bytes=self.max_bytes, progress=self._progress)
                    break
                except DownloadRefused as err:
                    report("refused", f"{err}; the file was removed")
                    return None
                except DownloadFailed as err:
                    wait = backoff.next_delay()
                    log.warning("fleet_model_download_failed", sha256=order.sha256,
                                url=order.shown_url, reason=str(err), retry_in_s=round(wait, 2))
                    self.reporter.update(detail=f"{err}; retrying in {wait:.1f} s")
                    await asyncio.sleep(wait)
        report("verifying", f"{size} bytes downloaded")
        problem = await asyncio.to_thread(_mismatch, part, order)
        if problem is not None:
            part.unlink(missing_ok=True)
            report("refused", f"{problem}; the file was removed")
            return None
        try:
            entry, _ = await asyncio.to_thread(
                self.rollout.store.add_file, part, source="fleet", actor=ACTOR,
                name=_file_name(order), move=True)
        except RolloutError as err:
            report("refused", f"the file is not a usable model: {err}")
            return None
        return entry

    def _progress(self, done: int, total: int | None) -> None:
        self.reporter.update(bytes_done=done, bytes_total=total)

    # ---- the shadow -------------------------------------------------------------------

    async def _prove(self, entry: ModelEntry) -> None:
        """Shadow ``entry``, watch its figures, promote or retire it."""
        shadowed = entry.state == "shadow" and shadow_id(self.rollout.status()) == entry.id
        if not shadowed and not await self._act(
                lambda: self.rollout.shadow(entry.id, actor=ACTOR)):
            return
        self.shadowing = entry.id
        shadow_s = self.config.model_shadow_s
        self.reporter.report("shadowing", f"model {entry.id} for {shadow_s:g} s")
        deadline = asyncio.get_running_loop().time() + shadow_s
        while True:
            status = self.rollout.status()
            if shadow_id(status) != entry.id:
                self.shadowing = None
                self._ended_by_hand(entry)
                return
            figures = _figures(status["shadow"])
            self.reporter.update(shadow=figures)
            left = deadline - asyncio.get_running_loop().time()
            if figures["errors"] or left <= 0:
                break
            await asyncio.sleep(min(SHADOW_POLL_S, left))
        self.shadowing = None
        failed = self._gates(figures)
        if failed is None:
            if await self._act(lambda: self.rollout.promote(entry.id, actor=ACTOR)):
                self.reporter.report("promoted", f"model {entry.id} serves: {_said(figures)}",
                                     shadow=figures)
            return
        if await self._act(lambda: self.rollout.retire(entry.id, actor=ACTOR)):
            self.reporter.report("rejected", f"{failed}; model {entry.id} retired",
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

    def _ended_by_hand(self, entry: ModelEntry) -> None:
        """The shadow ended without the fleet: say who did what."""
        now = self._stored(entry.sha256)
        state = now.state if now is not None else "gone from the store"
        last = self._last_change(entry)
        who = _who(last) if last is not None else "someone else"
        if state == "serving":
            self.reporter.report("serving", f"promoted during the shadow by {who}")
        else:
            self.reporter.report("rejected", f"no longer shadowed: {state} since a change "
                                             f"by {who}")

    async def _act(self, call: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
        """Run a rollout operation; a refusal is the state ``failed``. A 409 (another
        change under way, e.g. an operator's) is tried again a few times first."""
        for attempt in range(BUSY_ATTEMPTS):
            try:
                await call()
            except RolloutError as err:
                if err.status == HTTPStatus.CONFLICT and attempt + 1 < BUSY_ATTEMPTS:
                    await asyncio.sleep(BUSY_WAIT_S)
                    continue
                self.reporter.report("failed", str(err))
                return False
            return True
        raise AssertionError("unreachable")


def shadow_id(status: dict[str, Any]) -> str | None:
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


def _who(event: dict[str, Any]) -> str:
    """``actor (reason)`` of a store history event."""
    return f"{event.get('actor') or 'the rollout'} ({event.get('reason') or 'no reason given'})"


def _only_partial(folder: Path, keep: Path) -> int:
    """Make ``folder``, remove the partial downloads of other messages in it; the
    bytes ``keep`` holds already."""
    make_private_dir(folder)
    for other in folder.glob("*.part"):
        if other != keep:
            other.unlink(missing_ok=True)
    return keep.stat().st_size if keep.exists() else 0


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
