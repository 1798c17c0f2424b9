"""The daemon's rollout: which model serves, which one is shadowed, and the swaps.

``registry ─▶ Rollout.shadow (load beside, shadow copy of tracking and billing) ─▶
Rollout.promote (swap between two batches) ─▶ Rollout.rollback (by hand, or by
itself)``

A model is loaded in its own inference thread while the serving one goes on
(:meth:`edge.detect.worker.DetectionWorker.load_model`); on a GPU box that
load builds its TensorRT engine, in the background, before it may serve.
Promotion hands the worker the loaded model between two batches: no frame
waits for it, the WebRTC peers and the trackers carry on (the class spaces of
the two models are merged, so the dishes in view keep their class evidence),
and every bill records the model that served when it closed.

It rolls back by itself, to the model that served before, when the serving
model raises at inference (at once: its requests are cancelled and the
trackers predict meanwhile), or when, within :data:`PROBATION_S` of its
promotion, its median call time stays over ``rollout.max_latency_ms`` for
``rollout.latency_windows`` windows of about 1 s. A candidate that fails to
load never serves: the model in service never stopped. A shadow that raises is
retired.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from edge.config import RolloutConfig
from edge.detect.worker import DetectionWorker, LoadedModel
from edge.metrics import Metrics
from edge.rollout import ModelState, RolloutError
from edge.rollout.shadow import ShadowBook
from edge.rollout.store import ModelEntry, ModelStore

if TYPE_CHECKING:
    from edge.frames import Detections, Frame
    from edge.pipeline import Pipeline

log = structlog.get_logger()

PROBATION_S = 600.0
"""How long after its promotion a model's call time can roll it back."""


class Rollout:
    """Implements :class:`edge.rollout.RolloutControl` for a :class:`~edge.pipeline.Pipeline`.

    Parameters
    ----------
    pipeline : Pipeline
        Its worker and stream runners.
    store : ModelStore
        The registry (``storage.dir/models``), opened by :meth:`start`.
    config : RolloutConfig
        Shadow share, latency budget, matching window.
    metrics : Metrics
        ``dishtracker_model_*`` and ``dishtracker_shadow_*``.
    """

    def __init__(self, pipeline: Pipeline, store: ModelStore, config: RolloutConfig,
                 metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.store = store
        self.config = config
        self.metrics = metrics
        self.book: ShadowBook | None = None
        self._lock = asyncio.Lock()
        self._promoted_at: float | None = None
        self._slow_windows = 0
        self._rolling_back: list[LoadedModel] = []  # models an automatic rollback is due for
        self._tasks: set[asyncio.Task[Any]] = set()
        self._before_serve: list[Callable[[LoadedModel], Awaitable[None]]] = []
        self._rotation = 0  # how often the shadow moved on to the next streams
        self._rotated_at = 0.0

    @property
    def worker(self) -> DetectionWorker:
        """The pipeline's detection worker."""
        return self.pipeline.worker

    # -- start and stop ------------------------------------------------------

    async def start(self, config_model: Path) -> None:
        """Open the registry and load the model it says serves (``config_model``
        when the config names a new one; see :meth:`ModelStore.adopt`). A
        registered model that no longer loads is retired and the one before it,
        else ``config_model``, serves instead."""
        await asyncio.to_thread(self.store.open)
        entry = await asyncio.to_thread(self.store.adopt, config_model)
        worker = self.worker
        worker.shadow_busy_share = self.config.shadow_busy_share
        worker.on_model_error = self._model_error
        worker.on_window = self._window
        worker.on_shadow = self._shadow_detections
        while True:
            try:
                model = await worker.load_model(entry.path, model_id=entry.id,
                                                version=entry.version)
                break
            except Exception as err:
                fallback = await asyncio.to_thread(self._fallback, entry, err, config_model)
                if fallback is None:
                    raise
                entry = fallback
        worker.serve(model)
        self._serving_gauge(None, model)
        log.info("model_serving", id=entry.id, version=entry.version, source=entry.source)

    def _fallback(self, entry: ModelEntry, err: Exception,
                  config_model: Path) -> ModelEntry | None:
        """After ``entry`` failed to load at start: the model to try next (None: none)."""
        log.error("model_load_failed", id=entry.id, version=entry.version, error=str(err))
        if entry.source == "config":
            return None
        self.store.set_state(entry.id, "retired", actor="auto",
                             reason=f"failed to load at start: {err}")
        target = self._rollback_target()
        if target is None or target.id == entry.id:
            target = self.store.adopt(config_model)
        if target.id == entry.id:
            return None
        return self.store.set_state(target.id, "serving", actor="auto",
                                    reason="the promoted model failed to load at start")

    async def use_config_model(self, path: Path) -> ModelEntry:
        """Serve the site config's new ``detector.model`` (``PUT /api/config``):
        registered, promoted unless it serves already, and recorded as the
        config's model. Raises :class:`RolloutError` (nothing changed then)."""
        entry, _ = await asyncio.to_thread(self.store.add_file, path, source="config",
                                           actor="config")
        if entry.id != self._serving().model_id:
            await self.promote(entry.id, actor="config")
        await asyncio.to_thread(self.store.note_config, entry.sha256)
        return self.store.get(entry.id)

    def before_serve(self, step: Callable[[LoadedModel], Awaitable[None]]) -> None:
        """Run ``step(model)`` for every model about to serve (a promotion or a
        rollback), after it loaded and before the swap: what must be ready for a
        new model before its first frame (the learning issue's stored examples,
        re-embedded in ``model.executor`` with ``model.call``). A step that
        raises stops the swap: the serving model goes on (422 to the caller)."""
        self._before_serve.append(step)

    def correction(self, view: dict[str, Any]) -> None:
        """A stored correction (the bill's journal view): for the shadow's "who
        was right" (:meth:`edge.billing.service.BillingService.add_correction_listener`)."""
        if self.book is not None:
            self.book.correction(str(view.get("bill_id")), view.get("effective") or {})

    async def close(self) -> None:
        """Stop the tasks it started (the worker closes the models)."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- RolloutControl ------------------------------------------------------

    async def shadow(self, model_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Load ``model_id`` beside the serving model and shadow it."""
        async with self._locked():
            entry = self._entry(model_id)
            if entry.id == self._serving().model_id:
                raise RolloutError(f"model {entry.id} ({entry.version}) serves already")
            shadow = self.worker.shadow
            if shadow is not None and shadow.model_id == entry.id:
                return entry.to_json()
            model = await self._load(entry, actor)
            await self._stop_shadow("candidate", actor, "another model is shadowed")
            served = set(self.worker.serving.class_names)
            self.book = ShadowBook(entry.id, [n for n in model.class_names if n not in served],
                                   self.config.match_window_s, self.metrics)
            self.pipeline.classes_changed()
            self._rotation, self._rotated_at = 0, time.monotonic()
            self.pipeline.start_shadow(self.book, self._shadowed_streams())
            self.worker.set_shadow(model)
            entry = await self._set_state(entry.id, "shadow", actor=actor, reason="shadowed")
            log.info("model_shadowed", id=entry.id, version=entry.version, actor=actor)
            return entry.to_json()

    async def promote(self, model_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Serve ``model_id`` on every stream from the next batch on."""
        async with self._locked():
            entry = self._entry(model_id)
            if entry.id == self._serving().model_id:
                raise RolloutError(f"model {entry.id} ({entry.version}) serves already")
            shadow = self.worker.shadow
            if shadow is not None and shadow.model_id == entry.id and shadow.failed is None:
                model = shadow
                self.worker.set_shadow(None)
                self.pipeline.stop_shadow()
                self.book = None
                try:
                    return await self._swap(model, entry, "promote", actor, "promoted")
                except RolloutError as err:
                    # no longer shadowed (its model is closed): the registry must not say so
                    await self._set_state(entry.id, "retired" if model.failed else "candidate",
                                          actor=actor, reason=f"promotion refused: {err}")
                    raise
            model = await self._load(entry, actor)
            return await self._swap(model, entry, "promote", actor, "promoted")

    async def rollback(self, *, actor: str | None = None,
                       reason: str = "manual") -> dict[str, Any]:
        """Serve the model that served before the current one again."""
        async with self._locked():
            return await self._rollback(actor, reason, "rollback")

    async def retire(self, model_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """Stop shadowing ``model_id`` and mark it retired."""
        async with self._locked():
            entry = self._entry(model_id)
            if entry.id == self._serving().model_id:
                raise RolloutError(f"model {entry.id} ({entry.version}) serves: promote "
                                   "another one or roll back first")
            shadow = self.worker.shadow
            if shadow is not None and shadow.model_id == entry.id:
                await self._stop_shadow("retired", actor, "retired")
            else:
                entry = await self._set_state(entry.id, "retired", actor=actor,
                                              reason="retired")
            return self.store.get(entry.id).to_json()

    def status(self) -> dict[str, Any]:
        """Serving model, shadow and its figures, whether a swap is under way."""
        serving = self.worker.serving if self.worker.loaded else None
        shadow = self.worker.shadow
        target = self._rollback_target()
        out: dict[str, Any] = {
            "serving": None if serving is None else self._describe(serving),
            "shadow": None, "swapping": self._lock.locked(),
            "rollback_to": None if target is None or (
                serving is not None and target.id == serving.model_id)
            else {"id": target.id, "version": target.version},
            "probation_s_left": None if self._promoted_at is None else max(
                0.0, round(PROBATION_S - (time.monotonic() - self._promoted_at), 1)),
        }
        if shadow is not None and self.book is not None:
            stats = self.book.stats()
            stats["errors"] = int(shadow.failed is not None)
            streams = sorted(self.worker.shadow_streams)
            # how closely the shadow follows: its detection rate per shadowed stream
            # against the serving model's there (it gets what its thread has time for)
            span = max(time.time() - self.book.started_at, 1.0)
            stats["detect_hz"] = {
                "shadow": round(self.book.detected / span / max(1, len(streams)), 2),
                "serving": round(sum(self.worker.detect_rate(sid) for sid in streams)
                                 / max(1, len(streams)), 2)}
            out["shadow"] = {**self._describe(shadow), "stats": stats, "streams": streams}
        return out

    # -- internals -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self):  # type: ignore[no-untyped-def]
        if self._lock.locked():
            raise RolloutError("another model change is under way; try again in a moment")
        async with self._lock:
            yield

    def _serving(self) -> LoadedModel:
        if not self.worker.loaded:
            raise RolloutError("no model serves yet: the daemon is starting; try again in a "
                               "moment")
        return self.worker.serving

    def _entry(self, model_id: str) -> ModelEntry:
        return self.store.get(model_id)  # RolloutError 404 for an unknown one

    @staticmethod
    def _describe(model: LoadedModel) -> dict[str, Any]:
        return {"id": model.model_id, "version": model.version,
                "classes": len(model.class_names)}

    async def _load(self, entry: ModelEntry, actor: str | None) -> LoadedModel:
        """Load ``entry`` beside the serving model; a failure retires it (422)."""
        t0 = time.monotonic()
        try:
            model = await self.worker.load_model(entry.path, model_id=entry.id,
                                                 version=entry.version)
        except Exception as err:
            log.error("model_load_failed", id=entry.id, version=entry.version, error=str(err))
            await self._set_state(entry.id, "retired", actor=actor,
                                  reason=f"failed to load: {err}")
            raise RolloutError(f"model {entry.id} ({entry.version}) does not load: {err}; "
                               "the serving model goes on", 422) from err
        log.info("model_loaded", id=entry.id, version=entry.version,
                 seconds=round(time.monotonic() - t0, 3))
        return model

    async def _stop_shadow(self, state: str, actor: str | None, reason: str) -> None:
        shadow = self.worker.set_shadow(None)
        self.pipeline.stop_shadow()
        self.book = None
        if shadow is None:
            return
        with contextlib.suppress(RolloutError):
            await self._set_state(shadow.model_id, state, actor=actor,  # type: ignore[arg-type]
                                  reason=reason)
        await self.worker.close_model(shadow)

    async def _swap(self, model: LoadedModel, entry: ModelEntry, cause: str,
                    actor: str | None, reason: str) -> dict[str, Any]:
        for step in self._before_serve:
            try:
                await step(model)
            except Exception as err:
                await self._not_ready(model, entry, err)
        if model.failed is not None:
            # a call it had in flight as the shadow raised while the steps ran: the
            # worker would cancel every batch of a failed serving model
            await self._not_ready(model, entry, model.failed)
        old = self.worker.serve(model)
        self.pipeline.classes_changed()
        entry = await self._set_state(entry.id, "serving", actor=actor, reason=reason)
        self._promoted_at = time.monotonic() if cause == "promote" else None
        self._slow_windows = 0
        self.metrics.model_swaps.labels(cause).inc()
        self._serving_gauge(old, model)
        log.info("model_serving", id=entry.id, version=entry.version, cause=cause,
                 actor=actor, previous=None if old is None else old.version)
        if old is not None:
            await self.worker.close_model(old)
        return entry.to_json()

    async def _not_ready(self, model: LoadedModel, entry: ModelEntry,
                         err: BaseException) -> NoReturn:
        log.error("model_not_ready", id=entry.id, version=entry.version, error=repr(err))
        if self.worker.shadow is not model:
            await self.worker.close_model(model)
        raise RolloutError(f"model {entry.id} ({entry.version}) could not be made ready to "
                           f"serve: {err}; the serving model goes on", 422) from err

    async def _set_state(self, ref: str, state: ModelState, *, actor: str | None,
                         reason: str) -> ModelEntry:
        """:meth:`ModelStore.set_state` off the event loop (an atomic write, fsynced)."""
        return await asyncio.to_thread(self.store.set_state, ref, state, actor=actor,
                                       reason=reason)

    def _rollback_target(self) -> ModelEntry | None:
        """The registry's rollback target, unless the rollout retired it itself (it
        failed: raised at inference, broke its latency budget, did not load)."""
        target = self.store.rollback_target()
        if target is None:
            return None
        last = next((e for e in self.store.history(1000)  # newest first
                     if e["model"] == target.id and e["to"] == "retired"), None)
        return None if last is not None and last["actor"] == "auto" else target

    async def _rollback(self, actor: str | None, reason: str, cause: str) -> dict[str, Any]:
        target = self._rollback_target()
        serving = self._serving()
        if target is None or target.id == serving.model_id:
            raise RolloutError(f"nothing to roll back to: model {serving.model_id} "
                               f"({serving.version}) is the only one that served")
        model = await self._load(target, actor)
        return await self._swap(model, target, cause, actor, f"rolled back: {reason}")

    def _serving_gauge(self, old: LoadedModel | None, new: LoadedModel) -> None:
        if old is not None:
            with contextlib.suppress(KeyError):
                self.metrics.model_serving.remove(old.model_id, old.version)
        self.metrics.model_serving.labels(new.model_id, new.version).set(1)

    def _auto_rollback(self, model: LoadedModel, reason: str) -> None:
        """Roll ``model``, the serving one, back in the background (once per
        model), for ``reason``."""
        if any(m is model for m in self._rolling_back):
            return
        self._rolling_back.append(model)
        log.error("model_auto_rollback", id=model.model_id, version=model.version,
                  reason=reason)

        async def run() -> None:
            try:
                async with self._lock:  # a manual change under way finishes first
                    if self.worker.serving is not model:
                        # that change replaced it: rolling back now would undo the
                        # change (and could bring back the model that failed)
                        log.info("model_auto_rollback_skipped", id=model.model_id,
                                 serving=self.worker.serving.model_id)
                        return
                    await self._rollback("auto", reason, "auto_rollback")
            except RolloutError as err:
                log.error("model_auto_rollback_failed", error=str(err),
                          hint="the serving model failed and nothing replaces it: the "
                               "daemon stops (systemd restarts it)")
                if self.worker.loaded and self.worker.serving.failed is not None:
                    self.worker.halt(err)
            finally:
                self._rolling_back.remove(model)

        task = asyncio.create_task(run(), name="model-auto-rollback")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _model_error(self, model: LoadedModel, err: BaseException) -> bool:
        """The worker's hook: a model raised at inference."""
        if model is self.worker.shadow:
            log.error("shadow_model_failed", id=model.model_id, version=model.version,
                      error=repr(err))
            if self.book is not None:
                self.book.errors += 1
            task = asyncio.ensure_future(self._retire_shadow(model, err))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        if not self.worker.loaded or model is not self.worker.serving:
            # a call it had in flight when it stopped serving or shadowing raised: its
            # error says nothing of the model that serves now (``failed`` keeps it from
            # ever being swapped in: :meth:`_swap`)
            log.warning("replaced_model_failed", id=model.model_id, version=model.version,
                        error=repr(err))
            return True
        target = self._rollback_target()
        if target is None or target.id == model.model_id:
            log.error("model_failed", id=model.model_id, version=model.version,
                      error=repr(err), hint="nothing to roll back to: the daemon restarts")
            return False
        self._auto_rollback(model, f"raised at inference: {err!r}")
        return True

    async def _retire_shadow(self, model: LoadedModel, err: BaseException) -> None:
        """Retire ``model``, the shadow that raised, unless another one shadows by now."""
        if self.worker.shadow is model:
            await self._stop_shadow("retired", "auto", f"raised at inference: {err!r}")

    def _window(self) -> None:
        """The worker's hook after every window: the latency budget of a new model."""
        shadow = self.worker.shadow
        if shadow is not None and self.book is not None:
            self.book.times.extend(shadow.last_times)
            self.book.expire(time.time())
            self._rotate()
        if self._promoted_at is None:
            return
        if time.monotonic() - self._promoted_at > PROBATION_S:
            self._promoted_at = None
            return
        times = self.worker.serving.last_times
        if not times:
            return
        median_ms = statistics.median(times) * 1000.0
        self._slow_windows = self._slow_windows + 1 if (
            median_ms > self.config.max_latency_ms) else 0
        if self._slow_windows >= self.config.latency_windows:
            self._promoted_at = None
            self._auto_rollback(self.worker.serving,
                                f"median call time {median_ms:.0f} ms over the budget of "
                                f"{self.config.max_latency_ms:.0f} ms")

    def _shadowed_streams(self) -> list[str]:
        """The ``rollout.shadow_streams`` streams whose turn it is."""
        ids = sorted(self.pipeline.runners)
        if not ids:
            return []
        n = min(self.config.shadow_streams, len(ids))
        first = self._rotation * n
        return [ids[(first + i) % len(ids)] for i in range(n)]

    def _rotate(self) -> None:
        """Move the shadow on to the next streams every ``rollout.shadow_rotate_s``."""
        if (self.book is None or len(self.pipeline.runners) <= self.config.shadow_streams
                or time.monotonic() - self._rotated_at < self.config.shadow_rotate_s):
            return
        self._rotation += 1
        self._rotated_at = time.monotonic()
        streams = self._shadowed_streams()
        self.pipeline.start_shadow(self.book, streams)
        log.info("shadow_moved", id=self.book.model_id, streams=streams)

    def _shadow_detections(self, frame: Frame, detections: Detections) -> None:
        """The worker's hook: the shadow's detections of ``frame``."""
        self.pipeline.shadow_detections(frame, detections)
