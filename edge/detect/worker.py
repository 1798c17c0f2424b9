"""The detection worker: one inference thread serving every stream in batches.

Streams ask for detection of their newest frame when their rate says one is
due; the worker gathers the requests that arrive together (at most one per
stream) into one batch, runs the backend in its single executor thread (which
also loaded the model: backends such as TensorRT are not thread-safe), and
answers each stream. Under load it lowers the per-stream detection rate
(additive increase, multiplicative decrease on the worker's busy share)
instead of letting video wait: the tracker predicts the frames in between.
It also watches the video path's losses (:class:`VideoLoss`: frames the
decode and view slots dropped because the loop or the encoders fell
behind); when they last, :meth:`DetectionWorker.overload` says so
(``/readyz``). The losses do not lower the detection rate: on the 2-core
development box, shedding detection for them made the video worse, not
better (``docs/BENCHMARKS.md``, "Overload").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.config import DetectorConfig
from edge.detect import Detector, load_detector
from edge.detect.precision import select_model
from edge.frames import Detections, Frame
from edge.metrics import Metrics

LOAD_SCORE_THRESHOLD = 0.05  # the backend keeps weak boxes; the live threshold filters here
BUSY_HIGH = 0.85  # busy share above which rates go down
BUSY_LOW = 0.60  # and below which they creep back up
LOSS_HIGH = 0.10  # share of a stream's frames the video path dropped: overloaded above it
STARVED_WINDOWS = 10  # windows (about 1 s each) with the video losing that much: overloaded
LOSS_SMOOTHING = 0.3  # weight of the newest window in the loss's moving average: a bad
# second or two is no overload, a loss that lasts is


@dataclass(slots=True)
class _Request:
    frame: Frame
    future: asyncio.Future[Detections]


@dataclass(slots=True)
class RateControl:
    """Per-stream detection rate between ``min_hz`` and ``max_hz``."""

    min_hz: float
    max_hz: float
    hz: float = 0.0
    last: dict[str, float] = field(default_factory=dict)
    starved: int = 0  # consecutive windows in which the video lost over LOSS_HIGH
    loss: float = 0.0  # the video path's loss share, moving average over windows

    def __post_init__(self) -> None:
        self.hz = self.max_hz

    def due(self, stream_id: str, now: float) -> bool:
        """True if ``stream_id`` should detect a frame captured at ``now``."""
        last = self.last.get(stream_id)
        # a 10 % allowance keeps 20 Hz on a 20 fps stream despite capture jitter
        return last is None or now - last >= 0.9 / self.hz

    def mark(self, stream_id: str, now: float) -> None:
        """Record that ``stream_id`` detected a frame captured at ``now``."""
        self.last[stream_id] = now

    def adapt(self, busy: float, loss: float = 0.0) -> None:
        """Adjust to the worker's busy share over the last window (0-1): above
        :data:`BUSY_HIGH` the rate drops by a fifth, below :data:`BUSY_LOW` it
        rises by 0.5 Hz. ``loss``, the video path's share of frames dropped
        (:class:`VideoLoss`), is kept as a moving average
        (:data:`LOSS_SMOOTHING`) for :meth:`overload`."""
        self.loss += LOSS_SMOOTHING * (loss - self.loss)
        if busy > BUSY_HIGH:
            self.hz = max(self.min_hz, self.hz * 0.8)
        elif busy < BUSY_LOW:
            self.hz = min(self.max_hz, self.hz + 0.5)
        self.starved = self.starved + 1 if self.loss > LOSS_HIGH else 0

    def overload(self) -> str | None:
        """Why the box does not keep up with its video (None: it does)."""
        if self.starved < STARVED_WINDOWS:
            return None
        return (f"overloaded: the video drops {100 * self.loss:.0f} % of its frames (the "
                f"worst stream; detection at {self.hz:.1f} Hz per stream); watch fewer "
                "streams, lower their fps or size, or use a faster box")


class VideoLoss:
    """The share of frames the video path dropped per window, worst stream.

    Reads the drop counters ``decode_slot`` (the stream loop fell behind its
    source) and ``view_slot`` (the encoders fell behind the tracked frames)
    against the frames decoded, since the previous :meth:`sample`.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._last: dict[str, tuple[float, float]] = {}

    def sample(self, streams: set[str]) -> float:
        """Dropped / decoded since the last call, for the stream that lost most."""
        worst = 0.0
        value = self.metrics.value
        for sid in streams:
            drops = (value("dishtracker_frame_drops_total", stream=sid, cause="decode_slot")
                     + value("dishtracker_frame_drops_total", stream=sid, cause="view_slot"))
            decoded = value("dishtracker_frames_total", stream=sid, stage="decode")
            before = self._last.get(sid, (drops, decoded))
            self._last[sid] = (drops, decoded)
            if decoded > before[1]:
                worst = max(worst, (drops - before[0]) / (decoded - before[1]))
        for sid in set(self._last) - streams:
            del self._last[sid]
        return worst


@dataclass(slots=True, eq=False)
class LoadedModel:
    """A detector loaded in its own inference thread (backends such as TensorRT
    are used from the thread that loaded them).

    Attributes
    ----------
    model_id, version : str
        The registry's id (:mod:`edge.rollout.store`; empty before the registry
        names it) and the model's ``model_version``.
    class_names : tuple of str
        The model's own classes; ``remap`` maps its class ids into the
        worker's class space (:attr:`DetectionWorker.class_names`).
    times : list of float
        Seconds per network call in the current window of about 1 s;
        ``last_times`` the window before.
    failed : BaseException or None
        The error of a call that raised: the model gets no more frames.
    """

    detector: Detector
    executor: ThreadPoolExecutor
    model_id: str
    version: str
    class_names: tuple[str, ...]
    remap: npt.NDArray[np.int32] | None  # None: its ids are the worker's already
    embedding_dim: int | None
    times: list[float] = field(default_factory=list)
    last_times: list[float] = field(default_factory=list)
    failed: BaseException | None = None
    busy: float = 0.0  # seconds of calls in the current window

    def call(self, images: list[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detect ``images`` (in :attr:`executor`), class ids in the worker's space."""
        results = self.detector.detect(images)
        if self.remap is not None:
            results = [replace(d, classes=self.remap[d.classes]) for d in results]
        return results


ModelErrorHook = Callable[[LoadedModel, BaseException], bool]
"""Told of a model whose call raised; True when it takes care of it (a rollback)."""


class DetectionWorker:
    """Runs the serving detector for all streams, and a shadowed candidate beside it.

    Every model runs in its own single inference thread (:class:`LoadedModel`).
    The serving model can be swapped between two batches (:meth:`serve`); a
    shadow model (:meth:`set_shadow`) gets the frames of ``shadow_streams`` in
    the serving model's batches too, while its thread is busy at most
    ``shadow_busy_share`` of the time, and hands its detections to ``on_shadow``.
    Class ids from every model are mapped into one class space that only grows
    (:attr:`class_names`), so the trackers of the streams keep their dishes'
    class evidence across a swap.

    Parameters
    ----------
    config : DetectorConfig
        Model, backend, threads, score threshold, rate bounds.
    metrics : Metrics
        Where batch sizes, call times and rates are counted.
    loader : callable, optional
        ``(config) -> Detector``; defaults to :func:`edge.detect.load_detector`.
    engine_dir : Path, optional
        TensorRT engine cache (``storage.dir / "engines"``) for the default loader.
    precision_dir : Path, optional
        Cache of the FP32/INT8 probe (``storage.dir / "precision"``) for the default
        loader; ``None`` probes at every start (:mod:`edge.detect.precision`).
    max_batch : int
        Most frames per network call on TensorRT (the number of streams); the
        engine's optimization profile spans batches 1..``max_batch``.
    """

    def __init__(self, config: DetectorConfig, metrics: Metrics,
                 loader: Callable[[DetectorConfig], Detector] | None = None, *,
                 engine_dir: Path | None = None, max_batch: int = 1,
                 precision_dir: Path | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.rate = RateControl(config.min_rate_hz, config.max_rate_hz)
        self._loss = VideoLoss(metrics)
        self._loader = loader or functools.partial(_load, engine_dir=engine_dir,
                                                   max_batch=max_batch,
                                                   precision_dir=precision_dir)
        self._serving: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.shadow_busy_share = 0.5
        self.shadow_streams: set[str] = set()  # streams whose frames the shadow gets
        self.on_shadow: Callable[[Frame, Detections], None] | None = None
        self.on_model_error: ModelErrorHook | None = None
        self.on_window: Callable[[], None] | None = None  # after every window of ~1 s
        self._shadow_task: asyncio.Task[None] | None = None
        self._halt: BaseException | None = None
        self._pending: dict[str, _Request] = {}
        self._wake = asyncio.Event()
        self._busy = 0.0
        self._window_start = time.monotonic()
        self._counts: dict[str, int] = {}
        self._streams: set[str] = set()
        self.class_names: tuple[str, ...] = ()

    @property
    def loaded(self) -> bool:
        """True once the model is loaded."""
        return self._serving is not None

    @property
    def serving(self) -> LoadedModel:
        """The model that answers the streams (raises before :meth:`load`)."""
        if self._serving is None:
            raise RuntimeError("no model loaded")
        return self._serving

    @property
    def embedding_dim(self) -> int | None:
        """D of the serving model's embeddings output (None: it has none)."""
        return None if self._serving is None else self._serving.embedding_dim

    async def load(self) -> None:
        """Load the configured model in its inference thread and serve it (raises
        the backend's error)."""
        self._serving = await self.load_model(self.config.model)

    async def load_model(self, model: Path, *, model_id: str = "",
                         version: str | None = None) -> LoadedModel:
        """Load ``model`` in a new inference thread, beside whatever serves.

        Its classes join the worker's class space (new names are appended, so
        the ids of known ones never change). Raises the backend's error; the
        thread is gone then.
        """
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
        config = self.config.model_copy(update={"model": model})
        try:
            detector = await asyncio.get_running_loop().run_in_executor(
                executor, _load_warm, self._loader, config)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        info = detector.info
        names = tuple(info.class_names)
        known = {n: i for i, n in enumerate(self.class_names)}
        space = list(self.class_names)
        for name in names:
            if name not in known:
                known[name] = len(space)
                space.append(name)
        self.class_names = tuple(space)
        ids = [known[n] for n in names]
        remap = None if ids == list(range(len(ids))) else np.array(ids, dtype=np.int32)
        return LoadedModel(detector, executor, model_id,
                           info.model_version if version is None else version,
                           names, remap, info.embedding_dim)

    def serve(self, model: LoadedModel) -> LoadedModel | None:
        """Answer the streams with ``model`` from the next batch on; returns the
        model that served (close it with :meth:`close_model`). A batch in flight
        finishes on the old one."""
        old, self._serving = self._serving, model
        if self.shadow is model:
            self.shadow = None
        return old

    def halt(self, err: BaseException) -> None:
        """End :meth:`run` with ``err`` (the daemon stops, systemd restarts it): for a
        serving model that failed and could not be replaced. Never a half-alive
        daemon that shows video and detects nothing."""
        self._halt = err
        self._wake.set()

    def set_shadow(self, model: LoadedModel | None) -> LoadedModel | None:
        """Shadow ``model`` (None: stop shadowing); returns the former shadow."""
        old, self.shadow = self.shadow, model
        return old

    async def close_model(self, model: LoadedModel) -> None:
        """Release ``model`` in its own thread, after a call it may have in flight."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(model.executor, model.detector.close)
        finally:
            model.executor.shutdown(wait=False)

    def reconfigure(self, config: DetectorConfig) -> None:
        """Apply a new threshold and rate bounds live (a new model goes in with
        :meth:`serve`: the registry's promote)."""
        self.config = config
        self.rate.min_hz, self.rate.max_hz = config.min_rate_hz, config.max_rate_hz
        self.rate.hz = min(max(self.rate.hz, config.min_rate_hz), config.max_rate_hz)

    def due(self, frame: Frame) -> bool:
        """Whether this frame of its stream should be detected."""
        return self.rate.due(frame.stream_id, frame.capture_time)

    def open_stream(self, stream_id: str) -> None:
        """Start reporting ``stream_id``'s detection rate (0 until it detects)."""
        self._streams.add(stream_id)
        self.metrics.detect_rate.labels(stream_id).set(0.0)

    def close_stream(self, stream_id: str) -> None:
        """Stop reporting ``stream_id`` (its gauge disappears from ``/metrics``)."""
        self._streams.discard(stream_id)
        self.rate.last.pop(stream_id, None)
        with contextlib.suppress(KeyError):
            self.metrics.detect_rate.remove(stream_id)

    async def detect(self, frame: Frame) -> Detections:
        """Detect ``frame`` in the next batch and wait for the result."""
        return await self.submit(frame)

    def submit(self, frame: Frame) -> asyncio.Future[Detections]:
        """Queue ``frame`` for the next batch without waiting; a newer request of
        the same stream replaces an older one still waiting (which is cancelled)."""
        loop = asyncio.get_running_loop()
        if frame.stream_id not in self._streams:
            self.open_stream(frame.stream_id)
        old = self._pending.pop(frame.stream_id, None)
        if old is not None and not old.future.done():
            old.future.cancel()
            self.metrics.drops.labels(frame.stream_id, "detect_replaced").inc()
        req = _Request(frame, loop.create_future())
        self._pending[frame.stream_id] = req
        self.rate.mark(frame.stream_id, frame.capture_time)
        self._wake.set()
        return req.future

    async def run(self) -> None:
        """Serve batches until cancelled.

        A serving model whose call raises gets no more frames once
        ``on_model_error`` takes care of it (the requests of that batch are
        cancelled: the trackers predict until a model answers again); without
        a hook that does, the error ends the worker (the daemon restarts).
        """
        if self._serving is None:
            await self.load()
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._halt is not None:
                    raise self._halt
                await asyncio.sleep(0)  # let streams whose frames arrived together join
                batch = [r for r in self._pending.values() if not r.future.done()]
                self._pending.clear()
                if not batch:
                    continue
                model = self.serving
                if model.failed is not None:
                    for req in batch:
                        req.future.cancel()
                    continue
                images = [r.frame.image for r in batch]
                t0 = time.monotonic()
                try:
                    results = await loop.run_in_executor(model.executor, model.call, images)
                except Exception as err:  # the backend's, of any kind
                    self._failed(model, err, batch)
                    continue
                took = time.monotonic() - t0
                model.times.append(took)
                self._account(batch, took)
                self._feed_shadow(batch)
                for req, dets in zip(batch, results, strict=True):
                    if not req.future.done():
                        req.future.set_result(self._threshold(dets))
        finally:
            for req in self._pending.values():
                req.future.cancel()
            if self._shadow_task is not None:
                self._shadow_task.cancel()

    def _failed(self, model: LoadedModel, err: BaseException,
                batch: list[_Request]) -> None:
        model.failed = err
        self.metrics.model_errors.labels(model.version or "configured").inc()
        for req in batch:
            req.future.cancel()
        if self.on_model_error is None or not self.on_model_error(model, err):
            raise err

    def _feed_shadow(self, batch: list[_Request]) -> None:
        """Give the shadow model this batch too, unless it is still busy or over its share."""
        shadow = self.shadow
        if (shadow is None or shadow.failed is not None or self.on_shadow is None
                or (self._shadow_task is not None and not self._shadow_task.done())):
            return
        span = max(time.monotonic() - self._window_start, 0.25)
        if shadow.busy / span > self.shadow_busy_share:
            return
        frames = [r.frame for r in batch if r.frame.stream_id in self.shadow_streams]
        if not frames:
            return
        self._shadow_task = asyncio.create_task(self._run_shadow(shadow, frames),
                                                name="detect-shadow")

    async def _run_shadow(self, shadow: LoadedModel, frames: list[Frame]) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        try:
            results = await loop.run_in_executor(shadow.executor, shadow.call,
                                                 [f.image for f in frames])
        except Exception as err:  # the candidate's backend, of any kind
            shadow.failed = err
            self.metrics.model_errors.labels(shadow.version or "candidate").inc()
            if self.on_model_error is not None:
                self.on_model_error(shadow, err)
            return
        took = time.monotonic() - t0
        self.metrics.shadow_detect_seconds.observe(took)
        shadow.busy += took
        shadow.times.append(took)
        if self.shadow is not shadow or self.on_shadow is None:
            return
        for frame, dets in zip(frames, results, strict=True):
            self.on_shadow(frame, self._threshold(dets))

    def _threshold(self, dets: Detections) -> Detections:
        keep = dets.scores >= self.config.score_threshold
        if keep.all():
            return dets
        return dets.subset(keep)

    def _account(self, batch: list[_Request], took: float) -> None:
        self.metrics.detect_batch.observe(len(batch))
        self.metrics.detect_seconds.observe(took)
        self._busy += took
        for req in batch:
            sid = req.frame.stream_id
            self._counts[sid] = self._counts.get(sid, 0) + 1
        now = time.monotonic()
        span = now - self._window_start
        if span >= 1.0:
            self.rate.adapt(self._busy / span, self._loss.sample(self._streams))
            self.metrics.detect_rate_limit.set(self.rate.hz)
            self.metrics.video_loss.set(self.rate.loss)
            for sid in self._streams:
                self.metrics.detect_rate.labels(sid).set(self._counts.get(sid, 0) / span)
            self._busy, self._window_start, self._counts = 0.0, now, {}
            for model in {id(m): m for m in (self._serving, self.shadow)
                          if m is not None}.values():
                model.last_times, model.times, model.busy = model.times, [], 0.0
            if self.on_window is not None:
                self.on_window()

    def overload(self) -> str | None:
        """Why the box does not keep up with its video (None: it does)."""
        return self.rate.overload()

    def detect_rate(self, stream_id: str) -> float:
        """Detections per second of ``stream_id`` over the last window (from metrics)."""
        return self.metrics.value("dishtracker_detection_rate_hz", stream=stream_id)

    async def close(self) -> None:
        """Release the models, each in its own thread."""
        for model in (self.shadow, self._serving):
            if model is not None:
                await self.close_model(model)
        self.shadow = self._serving = None


WARMUP_SIZE = (480, 640)
"""A blank frame of this size (height, width) runs once through a model just loaded."""


def _load_warm(loader: Callable[[DetectorConfig], Detector],
               config: DetectorConfig) -> Detector:
    """Load and run once on a blank frame, in the model's own thread: a runtime's
    first call allocates and plans, and a shadow or a promoted model should not
    pay that on the streams' frames (the first call of a model that cannot run
    raises here, before it serves)."""
    detector = loader(config)
    try:
        detector.detect([np.zeros((*WARMUP_SIZE, 3), np.uint8)])
    except BaseException:
        detector.close()
        raise
    return detector


def _load(config: DetectorConfig, *, engine_dir: Path | None, max_batch: int,
          precision_dir: Path | None) -> Detector:
    model = config.model
    if config.backend == "onnxruntime":
        model = select_model(model, config.precision, threads=config.threads,
                             cache_dir=precision_dir).model
    return load_detector(model, config.backend, threads=config.threads,
                         score_threshold=LOAD_SCORE_THRESHOLD, engine_dir=engine_dir,
                         max_batch=max_batch, fallback_to_cpu=config.fallback_to_cpu)
