"""Wires the stages of every stream and owns their lifecycle.

source ─▶ (due?) detect ─▶ track trays and dishes (:mod:`edge.track.tray_tracker`) ─▶
bills (:mod:`edge.billing.biller`, then the billing service: journal, then events) and
views (annotation + WebRTC, only while watched). One :class:`StreamRunner` per stream; one
:class:`~edge.detect.worker.DetectionWorker` for all streams. The
:class:`Pipeline` is also what the HTTP control plane talks to
(:class:`edge.web.app.DaemonControl`): status, readiness, live config.

Shutdown order (uvicorn's): the caller stops listening and
closes peers, then :meth:`Pipeline.stop` stops sources, drains the stream
loops and releases the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from edge.billing.biller import Namer, TrayBiller, make_biller, make_menu
from edge.billing.line import CheckoutLine
from edge.billing.menu import Menu
from edge.billing.model import Bill, TrayState
from edge.config import CheckoutConfig, SiteConfig, StreamConfig
from edge.detect.contract import read_model_info
from edge.detect.engine_store import ENGINE_SUBDIR
from edge.detect.precision import PRECISION_SUBDIR
from edge.detect.worker import DetectionWorker, LoadedModel
from edge.errors import ConfigError, ModelError
from edge.frames import Detections, Frame, TrackedFrame
from edge.learn.service import LearningService
from edge.metrics import Metrics
from edge.rollout import RolloutError
from edge.rollout.controller import Rollout
from edge.rollout.shadow import ShadowBook, ShadowStream
from edge.rollout.store import ModelStore
from edge.slot import LatestSlot, SlotClosed
from edge.sources import Source, make_source
from edge.track.lag import LagCompensator
from edge.track.tray_tracker import TRAY_KEY

log = structlog.get_logger()

TRAY_UPDATE_S = 0.5  # open-bill updates per stream at most this often (and on change)


class BillSink(Protocol):
    """Where closed bills and open trays go (:class:`edge.billing.service.BillingService`)."""

    def submit(self, bill: Bill) -> None:
        """Commit ``bill`` durably, then tell everyone (never blocks)."""

    def tray_update(self, stream_id: str, trays: tuple[TrayState, ...]) -> None:
        """The open bills of ``stream_id`` now (droppable)."""

    def last_tray_id(self, stream_id: str) -> int:
        """The highest tray number billed on ``stream_id`` (0: none)."""


class StreamView:
    """What viewers of one stream subscribe to (see :mod:`edge.web.webrtc`), and
    the menu in force that the cashier's overlay names dishes by (``menu``,
    replaced on a live change)."""

    def __init__(self, stream_id: str, class_names: Sequence[str], metrics: Metrics,
                 menu: Menu) -> None:
        self.stream_id = stream_id
        self.class_names = tuple(class_names)
        self.menu = menu
        self._metrics = metrics
        self._slots: list[LatestSlot[TrackedFrame]] = []

    def subscribe(self) -> LatestSlot[TrackedFrame]:
        """A new slot fed with every tracked frame from now on."""
        slot: LatestSlot[TrackedFrame] = LatestSlot(
            asyncio.get_running_loop(),
            on_drop=self._metrics.drops.labels(self.stream_id, "view_slot").inc,
        )
        self._slots.append(slot)
        return slot

    def unsubscribe(self, slot: LatestSlot[TrackedFrame]) -> None:
        """Stop feeding ``slot`` and close it."""
        if slot in self._slots:
            self._slots.remove(slot)
        slot.close()

    @property
    def watched(self) -> bool:
        """True while at least one viewer subscribes."""
        return bool(self._slots)

    def publish(self, tf: TrackedFrame) -> None:
        """Hand ``tf`` to every subscriber (never blocks)."""
        for slot in self._slots:
            slot.put(tf)

    def close(self) -> None:
        """Close every subscriber's slot."""
        for slot in list(self._slots):
            self.unsubscribe(slot)


class StreamRunner:
    """One stream: its source, tracker and view, and the loop between them."""

    def __init__(self, config: StreamConfig, site: SiteConfig, worker: DetectionWorker,  # noqa: PLR0917
                 metrics: Metrics, billing: BillSink | None = None,
                 namer: Namer | None = None,
                 asked: Callable[[Bill], None] | None = None) -> None:
        self.config = config
        self.site = site
        self.worker = worker
        self.metrics = metrics
        self.billing = billing
        self.namer = namer  # names each bill line (edge.learn.openset); None: the detector
        self.asked = asked  # sees each bill: its unknown or doubtful lines are questions
        self.source: Source = make_source(config, metrics, asyncio.get_running_loop())
        self.tracker: TrayBiller | None = None  # made at the first frame (needs its size)
        # tray numbers go on across tracker resets and restarts (one "Tray 3" a day)
        self._next_tray_id = 1 + (billing.last_tray_id(config.id) if billing is not None else 0)
        self._tray_sig: tuple[Any, ...] = ()
        self._tray_sent = 0.0
        self.view = StreamView(config.id, worker.class_names, metrics,
                               make_menu(site, worker.class_names))
        self.lag = LagCompensator()
        self.frames_done = 0
        self.last_latency_s: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_frame: Frame | None = None  # what close_open bills at
        self.shadow: ShadowStream | None = None  # a candidate model's copy (edge.rollout)

    def start(self) -> list[asyncio.Task[None]]:
        """Start the source and the stream loop; returns their tasks."""
        self.worker.open_stream(self.config.id)
        self._tasks = [
            asyncio.create_task(self.source.run(), name=f"source-{self.config.id}"),
            asyncio.create_task(self._loop(), name=f"stream-{self.config.id}"),
        ]
        return self._tasks

    async def _loop(self) -> None:
        """Frames in, tracked frames out; never holds video longer than
        ``detector.max_wait_ms`` for a detection (late ones land on a later frame,
        moved along their tracks by :class:`~edge.track.lag.LagCompensator`)."""
        sid = self.config.id
        stage_latency = self.metrics.stage_latency
        pending: tuple[Frame, asyncio.Future[Detections]] | None = None
        try:
            while True:
                source = self.source
                try:
                    frame: Frame = await source.frames.get()
                except SlotClosed:
                    if source is not self.source:  # swapped by reconfigure: go on
                        continue
                    return
                now = time.monotonic()
                stage_latency.labels(sid, "decode").observe(now - frame.capture_time)
                if pending is None and self.worker.due(frame):
                    pending = (frame, self.worker.submit(frame))
                    budget = self.worker.config.max_wait_ms / 1000.0
                    if budget > 0:
                        await asyncio.wait((pending[1],), timeout=budget)
                detections = None
                if pending is not None and pending[1].done():
                    detected, future = pending
                    pending = None
                    if not future.cancelled():
                        detections = future.result()
                        stage_latency.labels(sid, "detect").observe(
                            time.monotonic() - frame.capture_time)
                        if detected.seq != frame.seq:
                            self.metrics.late_detections.labels(sid).inc()
                            detections = self.lag.shift(detections, detected.seq, frame.seq)
                tracker = self._tracker_for(frame)
                step = tracker.update(frame, detections)
                tracks = step.tracks
                self.lag.record(frame.seq, tracks)
                self._bill(step.closed, step.trays, frame.capture_time)
                if self.shadow is not None:
                    self.shadow.update(frame)
                done = time.monotonic()
                stage_latency.labels(sid, "track").observe(done - frame.capture_time)
                self.metrics.frames.labels(sid, "tracked").inc()
                self.metrics.tracks.labels(sid).set(len(tracks))
                self.last_latency_s = done - frame.capture_time
                self.frames_done += 1
                if self.view.watched:
                    self.view.publish(TrackedFrame(
                        frame.stamped("track", done), detections, tracks,
                        bills=tuple((t.tray_id, len(t.items), t.total) for t in step.trays),
                        checkout_line=tracker.line.points,
                        unknown=frozenset(i.track_id for t in step.trays for i in t.items
                                          if i.unknown)))
        finally:
            if pending is not None:
                pending[1].cancel()

    def _tracker_for(self, frame: Frame) -> TrayBiller:
        """The tracker for ``frame``: made at the first frame, and anew when the
        picture's size changed (the open trays are billed, flagged)."""
        h, w = frame.image.shape[:2]
        if self.tracker is not None and (
                (self.tracker.tracker.width, self.tracker.tracker.height) != (w, h)):
            self._drop_tracker("frame_size_changed")
        if self.tracker is None:
            self.tracker = make_biller(self.config, self.site, self.worker.class_names, w, h,
                                       first_tray_id=self._next_tray_id, namer=self.namer)
        self._last_frame = frame
        return self.tracker

    def _drop_tracker(self, cause: str) -> None:
        """Bill the open trays (flagged) and let the next frame make a new tracker
        that numbers its trays on."""
        self.close_open(cause)
        if self.tracker is not None:
            self._next_tray_id = self.tracker.next_tray_id
        self.tracker = None

    def apply_site(self, site: SiteConfig) -> None:
        """Use ``site``'s tracker, billing and menu settings from the next frame on.

        The trays in view keep their tracks and their dishes' evidence: bills
        that close from now on follow the new settings (a new price or name,
        ``billing.min_item_hits``, the tracker's thresholds; see
        :meth:`edge.billing.biller.TrayBiller.retune`).
        """
        self.site = site
        self.view.menu = make_menu(site, self.worker.class_names)
        if self.tracker is not None:
            self.tracker.retune(site, self.worker.class_names)
            log.info("settings_applied", stream=self.config.id,
                     open_trays=len(self.tracker.open_trays()))

    async def reconfigure(self, config: StreamConfig) -> None:
        """Take a changed stream config (same id) without losing the trays in view.

        A changed source (URL, transport, options, timeouts) is swapped under
        the running loop: the tracker, the view and its viewers stay. A moved
        checkout line applies in place; a changed direction of travel cannot
        (the trays' motion model is built along it), nor can a picture of
        another size from the new source: then the open trays close into
        bills flagged ``stream_changed`` for the cashier, never silently, and
        a new tracker numbers its trays on.
        """
        old, self.config = self.config, config
        if _source_part(old) != _source_part(config):
            source = make_source(config, self.metrics, asyncio.get_running_loop())
            previous, self.source = self.source, source
            self._tasks[0] = asyncio.create_task(source.run(), name=f"source-{config.id}")
            await previous.stop()  # the loop sees its slot close and goes on with the new one
            log.info("stream_source_swapped", stream=config.id)
        if old.checkout == config.checkout or self.tracker is None:
            return
        if old.checkout.direction == config.checkout.direction:
            tracker = self.tracker.tracker
            self.tracker.use_line(CheckoutLine(config.checkout, tracker.width, tracker.height))
            log.info("checkout_line_moved", stream=config.id,
                     open_trays=len(self.tracker.open_trays()))
            return
        self._drop_tracker("direction_changed")

    def close_open(self, cause: str) -> None:
        """Bill the open trays now, flagged ``stream_changed`` (the tracker is
        about to go: ``cause`` says why, in the log)."""
        if self.tracker is None or self._last_frame is None:
            return
        n_open = len(self.tracker.open_trays())
        bills = self.tracker.close_open(self._last_frame, "stream_changed")
        if n_open:
            log.warning("open_trays_closed", stream=self.config.id, cause=cause,
                        bills=[b.bill_id for b in bills], without_items=n_open - len(bills))
        for bill in bills:
            self._submit(bill)

    def _submit(self, bill: Bill) -> None:
        """Journal ``bill``, stamped with the model that serves (and show it to a shadow)."""
        if self.worker.loaded:
            model = self.worker.serving
            bill = dataclasses.replace(bill, model_id=model.model_id,
                                       model_version=model.version)
        if self.shadow is not None:
            self.shadow.book.serving_bill(bill)
        if self.billing is not None:
            self.billing.submit(bill)
        if self.asked is not None:
            self.asked(bill)
        unknown = sum(1 for item in bill.items if item.unknown)
        if unknown:
            self.metrics.unknown_lines.labels(self.config.id).inc(unknown)

    def _bill(self, closed: tuple[Bill, ...], trays: tuple[TrayState, ...], now: float) -> None:
        sid = self.config.id
        for bill in closed:
            # no log line here: the journal announces a bill once it is durable
            # (``bill_closed``); a kill between a line and the commit lost bills
            self._submit(bill)
        sig = tuple((t.tray_id, tuple(i.key for i in t.items)) for t in trays)
        if self.billing is not None and (sig != self._tray_sig
                                         or now - self._tray_sent >= TRAY_UPDATE_S):
            self._tray_sig, self._tray_sent = sig, now
            self.billing.tray_update(sid, trays)

    async def stop(self) -> None:
        """Stop the source, then let the loop drain and end."""
        await self.source.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.worker.close_stream(self.config.id)
        self.view.close()

    def status(self) -> dict[str, Any]:
        """Stream status for ``GET /api/streams``."""
        st = dict(self.source.status())
        st.update({
            "id": self.config.id, "enabled": self.config.enabled,
            "detect_rate_hz": round(self.worker.detect_rate(self.config.id), 2),
            "latency_ms": None if self.last_latency_s is None
            else round(self.last_latency_s * 1000, 1),
            "peers": int(self.metrics.value("dishtracker_webrtc_peers", stream=self.config.id)),
            "model": {"id": self.worker.serving.model_id,
                      "version": self.worker.serving.version} if self.worker.loaded else None,
        })
        return st


def _source_part(config: StreamConfig) -> StreamConfig:
    """What of a stream's config its source depends on (all but the checkout)."""
    return config.model_copy(update={"checkout": CheckoutConfig(), "scene": None})


class Pipeline:
    """All streams of a site; implements the control plane's ``DaemonControl``."""

    def __init__(self, config: SiteConfig, metrics: Metrics | None = None, *,
                 billing: BillSink | None = None, store: ModelStore | None = None,
                 learning: LearningService | None = None) -> None:
        self._config = config
        self.billing = billing
        # learning on the job (edge.learn): names the lines, learns from corrections
        self.learning = learning
        self.metrics = metrics or Metrics()
        # the TensorRT engine takes every configured stream's frame in one call
        self.worker = DetectionWorker(config.detector, self.metrics,
                                      engine_dir=config.storage.dir / ENGINE_SUBDIR,
                                      precision_dir=config.storage.dir / PRECISION_SUBDIR,
                                      max_batch=max(1, len(config.streams)))
        self.runners: dict[str, StreamRunner] = {}
        self._worker_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeat = time.monotonic()
        self._apply_lock = asyncio.Lock()
        # the model registry and its swaps; without a store (tests, benches) the
        # configured model serves for the pipeline's life
        self.rollout = (None if store is None
                        else Rollout(self, store, config.rollout, self.metrics))
        self._class_names: tuple[str, ...] = ()

    @property
    def config(self) -> SiteConfig:
        """The config in force (the last good one)."""
        return self._config

    async def start(self) -> None:
        """Load the model, start the worker, the heartbeat and every enabled stream."""
        if self.rollout is not None and self.learning is not None:
            self.rollout.before_serve(self._learn_model)
        if self.rollout is not None:
            await self.rollout.start(self._config.detector.model)
        else:
            await self.worker.load()
        self._class_names = self.worker.class_names
        serving = self.worker.serving
        log.info("model_loaded", model=serving.model_id or str(self._config.detector.model),
                 version=serving.version, classes=len(self.worker.class_names),
                 embeddings=self.worker.embedding_dim)
        if self.worker.embedding_dim is None:
            log.info("model_without_embeddings",
                     hint="the model has no 'embeddings' output (docs/FORMATS.md): dishes are "
                          "told apart by its classes alone")
        unpriced = [n for n in self.worker.class_names
                    if n != TRAY_KEY and n not in self._config.menu]
        if unpriced:  # never billed: say so once, an operator may have forgotten them
            log.warning("menu_missing_classes", classes=unpriced,
                        hint="add them to [menu] with a name and price (billable = false "
                             "for clutter)")
        if self.learning is not None:
            await self.learning.start()
            await self._learn_model(serving)
        self._worker_task = asyncio.create_task(self.worker.run(), name="detect-worker")
        self._heartbeat_task = asyncio.create_task(self._beat(), name="heartbeat")
        for sc in self._config.streams:
            if sc.enabled:
                self._start_stream(sc)

    async def _learn_model(self, model: LoadedModel) -> None:
        """Learning follows the model about to serve (its bank, its examples)."""
        assert self.learning is not None
        path = (self.rollout.store.get(model.model_id).path
                if self.rollout is not None and model.model_id else self._config.detector.model)
        await self.learning.use_model(path, model.model_id, model.class_names,
                                      model.embedding_dim, fallback=self._config.detector.model)

    def _start_stream(self, sc: StreamConfig) -> None:
        learning = self.learning
        runner = StreamRunner(sc, self._config, self.worker, self.metrics, self.billing,
                              learning.learner.name if learning is not None else None,
                              learning.bill_closed if learning is not None else None)
        runner.start()
        self.runners[sc.id] = runner
        log.info("stream_started", stream=sc.id)

    def classes_changed(self) -> None:
        """The worker's class space grew (a new model knows more dishes): every
        stream's tracker, menu and overlay learn the new names; the trays in
        view keep their tracks (:meth:`StreamRunner.apply_site`)."""
        names = self.worker.class_names
        if names == self._class_names:
            return
        self._class_names = names
        for runner in self.runners.values():
            runner.view.class_names = names
            runner.apply_site(self._config)
        log.info("model_classes_added", classes=len(names))

    def start_shadow(self, book: ShadowBook, streams: Sequence[str]) -> None:
        """Give ``streams`` a shadow copy of their tracking and billing for
        ``book`` (the others have none)."""
        wanted = set(streams)
        for sid, runner in self.runners.items():
            if sid not in wanted:
                runner.shadow = None
            elif runner.shadow is None or runner.shadow.book is not book:
                runner.shadow = ShadowStream(runner.config, self._config,
                                             self.worker.class_names, book)
        self.worker.shadow_streams = wanted & set(self.runners)

    def stop_shadow(self) -> None:
        """Drop every stream's shadow copy."""
        self.worker.shadow_streams = set()
        for runner in self.runners.values():
            runner.shadow = None

    def shadow_detections(self, frame: Frame, detections: Detections) -> None:
        """The shadowed candidate's detections of ``frame``, to its stream's shadow."""
        runner = self.runners.get(frame.stream_id)
        if runner is not None and runner.shadow is not None:
            runner.shadow.offer(frame, detections)

    def tasks(self) -> list[asyncio.Task[None]]:
        """Tasks whose failure must stop the daemon (the supervisor watches them)."""
        out = [t for t in (self._worker_task, self._heartbeat_task) if t is not None]
        for r in self.runners.values():
            out += r._tasks[1:]  # the stream loops; a source ends on its own (non-looping file)
        return out

    async def _beat(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(0.5)

    def heartbeat_age_s(self) -> float:
        """Seconds since the event loop last ran the heartbeat task."""
        return time.monotonic() - self._heartbeat

    def progress_marker(self) -> int:
        """Total frames processed by all streams (the watchdog checks that it moves)."""
        return sum(r.frames_done for r in self.runners.values())

    def views(self) -> dict[str, StreamView]:
        """Per-stream views for the WebRTC hub."""
        return {sid: r.view for sid, r in self.runners.items()}

    def stream_status(self) -> list[dict[str, Any]]:
        """Status of every configured stream (disabled ones included)."""
        out = []
        for sc in self._config.streams:
            r = self.runners.get(sc.id)
            out.append(r.status() if r else {"id": sc.id, "enabled": sc.enabled,
                                              "state": "stopped" if sc.enabled else "disabled"})
        return out

    def readiness(self) -> tuple[bool, list[str]]:
        """Ready when the model is loaded and every enabled stream of the config in
        force is delivering (one without a runner is down too)."""
        reasons = []
        if not self.worker.loaded:
            reasons.append("model not loaded")
        overload = self.worker.overload()
        if overload is not None:
            reasons.append(overload)
        for sc in self._config.streams:
            if not sc.enabled:
                continue
            r = self.runners.get(sc.id)
            state = "not running" if r is None else str(r.source.status().get("state"))
            if state != "running":
                reasons.append(f"stream {sc.id} is {state}")
        return not reasons, reasons

    async def check_config(self, new: SiteConfig) -> None:
        """Build and check what ``new`` would start, without starting or stopping anything.

        Every stream that would (re)start gets its source built (URL and query
        parsed, e.g. ``synthetic://?fps=…``) on a scratch metrics registry; a
        changed model file is read and checked against the model contract
        (it is promoted live with the model registry, else it loads at the
        next start). Scene files were merged by
        :func:`edge.config.parse_config` already.

        Raises
        ------
        ConfigError
            One line per problem (``.errors``), ``field.path: reason``.
        """
        old = self._config
        lines: list[str] = []
        scratch = Metrics()
        loop = asyncio.get_running_loop()
        old_streams = {s.id: s for s in old.streams}
        for i, sc in enumerate(new.streams):
            if not sc.enabled or (sc.id in self.runners and old_streams.get(sc.id) == sc):
                continue
            try:
                make_source(sc, scratch, loop)
            except (ConfigError, ValueError) as err:
                reason = str(err).removeprefix(f"streams[{sc.id}].")
                lines.append(f"streams.{i}.{reason}" if reason.startswith("url:")
                             else f"streams.{i}: {reason}")
        if new.detector.model != old.detector.model:
            try:
                await asyncio.to_thread(read_model_info, new.detector.model)
            except ModelError as err:
                lines.append(f"detector.model: {err}")
        if lines:
            exc = ConfigError("the config cannot be applied; nothing changed:\n  "
                              + "\n  ".join(lines))
            exc.errors = lines  # type: ignore[attr-defined]
            raise exc

    async def apply_config(  # noqa: PLR0912  # one branch per live-changeable setting
            self, new: SiteConfig) -> dict[str, list[str]]:
        """Apply what can change live; report what needs a restart.

        Live: detector threshold and rates; the menu, tracker and billing
        settings (the trays in view keep their tracks and evidence; bills that
        close from now on follow them: :meth:`StreamRunner.apply_site`);
        streams added, removed or changed (a changed one keeps its tracker and
        viewers where it can: :meth:`StreamRunner.reconfigure`; a removed or
        disabled one bills its open trays, flagged ``stream_changed``); with
        the model registry (the daemon's), ``detector.model``: registered and
        promoted between two frames (:meth:`Rollout.use_config_model`; one that
        does not load refuses the whole config). Backend, threads, precision,
        server and storage need a restart (the model too without a registry).

        All or nothing: :meth:`check_config` builds and checks everything new
        before anything stops; when it refuses, the old config keeps running.

        Raises
        ------
        ConfigError
            ``new`` cannot be applied (see :meth:`check_config`); nothing changed.
        """
        async with self._apply_lock:
            await self.check_config(new)
            old = self._config
            applied: list[str] = []
            restart: list[str] = []
            for table in ("server", "storage"):
                if getattr(old, table) != getattr(new, table):
                    restart.append(table)
            od, nd = old.detector, new.detector
            model = od.model
            if nd.model != od.model and self.rollout is not None:
                await self._use_model(nd.model)  # first: a refusal leaves everything as it was
                model = nd.model
                applied.append("detector.model")
            for key in ("model", "backend", "threads", "precision"):
                if getattr(od, key) != getattr(nd, key) and f"detector.{key}" not in applied:
                    restart.append(f"detector.{key}")
            for key in ("score_threshold", "max_rate_hz", "min_rate_hz"):
                if getattr(od, key) != getattr(nd, key):
                    applied.append(f"detector.{key}")
            self.worker.reconfigure(nd.model_copy(update={
                "model": model, "backend": od.backend, "threads": od.threads,
                "precision": od.precision}))
            for table in ("tracker", "billing", "menu"):
                if getattr(old, table) != getattr(new, table):
                    applied.append(table)
            if old.learning != new.learning and self.learning is not None:
                self.learning.retune(new.learning)
                applied.append("learning")
            old_streams = {s.id: s for s in old.streams}
            new_streams = {s.id: s for s in new.streams}
            self._config = new.model_copy(update={
                "server": old.server, "storage": old.storage,
                "detector": self.worker.config,
            })
            for sid, sc in old_streams.items():
                if sid not in self.runners or new_streams.get(sid) == sc:
                    continue
                applied.append(f"streams.{sid}")
                changed = new_streams.get(sid)
                if changed is not None and changed.enabled:
                    await self.runners[sid].reconfigure(changed)
                else:  # removed or disabled: its open trays are billed, flagged
                    self.runners[sid].close_open("stream_stopped")
                    await self.runners.pop(sid).stop()
            if (old.tracker, old.billing, old.menu) != (new.tracker, new.billing, new.menu):
                for runner in self.runners.values():  # the trays in view carry on
                    runner.apply_site(self._config)
            for sid, sc in new_streams.items():
                if sc.enabled and sid not in self.runners:
                    self._start_stream(sc)
                    if f"streams.{sid}" not in applied:
                        applied.append(f"streams.{sid}")
            log.info("config_applied", applied=applied, restart_required=restart)
            return {"applied": applied, "restart_required": restart}

    async def _use_model(self, path: Path) -> None:
        """Promote the config's new model (:meth:`Rollout.use_config_model`); a
        model that does not load is a :class:`ConfigError`."""
        assert self.rollout is not None
        try:
            await self.rollout.use_config_model(path)
        except RolloutError as err:
            exc = ConfigError(f"the config cannot be applied; nothing changed:\n  "
                              f"detector.model: {err}")
            exc.errors = [f"detector.model: {err}"]  # type: ignore[attr-defined]
            raise exc from err

    async def stop(self) -> None:
        """Stop sources, drain stream loops, stop the worker, release the model."""
        for runner in list(self.runners.values()):
            await runner.stop()
        if self.rollout is not None:
            await self.rollout.close()
        if self.learning is not None:
            await self.learning.close()
        for task in (self._worker_task, self._heartbeat_task):
            if task is not None:
                task.cancel()
                # one that crashed was reported by the supervisor (stage_crashed):
                # stopping goes on, so the journal and the fleet still close
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.worker.close()
        log.info("pipeline_stopped")
