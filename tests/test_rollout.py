"""Model rollout on a running pipeline (issue 16, items 2 and 3): shadow,
promote, roll back by hand and by itself, bills stamped with their model.

Real pipeline, real synthetic camera, real ONNX Runtime and a real journal;
the models are the shipped network under other versions, or variants that
fail to load or fail at inference (``tests/model_variants.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from bills_support import make_bill
from model_variants import dishnet_variant, failing_at_inference, failing_at_load
from test_hardening_config import _site, needs_model

from edge.billing.model import Bill
from edge.billing.service import JOURNAL_FILE, BillingService
from edge.config import SiteConfig
from edge.errors import ConfigError
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.rollout import RolloutError
from edge.rollout.shadow import WARMUP_S, ShadowBook, ShadowStream
from edge.rollout.store import MODELS_SUBDIR, ModelStore

URL = "synthetic://?seed=3&fps=20&size=320x240"
T = TypeVar("T")


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _slow_loads(pipeline: Pipeline, seconds: float) -> None:
    """Every model load from now on takes ``seconds`` longer, in its own thread."""
    worker = pipeline.worker
    load = worker._loader

    def slow(config: Any) -> Any:
        time.sleep(seconds)
        return load(config)

    worker._loader = slow


async def _frames_during(pipeline: Pipeline, call: Awaitable[T]) -> tuple[T, int]:
    """``call``'s result and how many frames cam1 tracked while it ran."""
    runner = pipeline.runners["cam1"]
    before = runner.frames_done
    result = await call
    return result, runner.frames_done - before


def _run(site: SiteConfig, body: Callable[[Pipeline, BillingService], Awaitable[None]]) -> None:
    async def main() -> None:
        metrics = Metrics()
        billing = BillingService(site.storage.dir / JOURNAL_FILE, metrics)
        await billing.open()
        pipeline = Pipeline(site, metrics, billing=billing,
                            store=ModelStore(site.storage.dir / MODELS_SUBDIR))
        assert pipeline.rollout is not None
        billing.add_correction_listener(pipeline.rollout.correction)
        await pipeline.start()
        try:
            await body(pipeline, billing)
        finally:
            await pipeline.stop()
            await billing.close()

    asyncio.run(main())


def _upload(pipeline: Pipeline, path: Path) -> str:
    assert pipeline.rollout is not None
    entry, new = pipeline.rollout.store.add_file(path, source="upload")
    assert new
    return entry.id


@needs_model
def test_a_shadowed_candidate_is_compared_then_promoted_between_two_frames(
        tmp_path: Path) -> None:
    """The candidate (the same network as v2) runs beside the serving model and
    agrees on the bills it saw whole; promoted, it serves from the next batch
    on, the stream never waits, and the journal says which model made each bill."""
    site = _site(tmp_path, URL)
    candidate = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        first = rollout.status()["serving"]
        assert first["version"] == "dishnet-1.1"
        cid = _upload(pipeline, candidate)
        _slow_loads(pipeline, 1.5)
        shadowed, frames = await _frames_during(pipeline, rollout.shadow(cid, actor="test"))
        assert shadowed["state"] == "shadow"
        assert frames >= 5  # the video went on while the candidate loaded
        runner = pipeline.runners["cam1"]
        assert runner.shadow is not None
        await _until(lambda: rollout.status()["shadow"]["stats"]["compared"] >= 2, 90.0,
                     "two compared bills")
        stats = rollout.status()["shadow"]["stats"]
        assert stats["agree"] >= 1 and stats["detected_frames"] > 0
        assert stats["latency_ms"]["p50"] > 0
        assert stats["detect_hz"]["shadow"] > 0 and stats["detect_hz"]["serving"] > 0
        at = time.time()
        promoted = await rollout.promote(cid, actor="test")
        assert promoted["state"] == "serving" and runner.shadow is None
        assert rollout.status()["serving"]["version"] == "dishnet-v2"
        assert pipeline.stream_status()[0]["model"] == {"id": cid, "version": "dishnet-v2"}
        deadline = time.monotonic() + 60.0
        while not any(b["closed_at"] > at + 0.3
                      for b in (await billing.list_bills(200)).bills):
            assert time.monotonic() < deadline, "no bill after the promotion"
            await asyncio.sleep(0.2)
        bills = list(reversed((await billing.list_bills(200)).bills))
        assert [b["seq"] for b in bills] == list(range(1, len(bills) + 1))
        # a bill closes on the frame it is stamped at; frames reach the tracker
        # ~0.1 s after capture
        old = {b["model"]["version"] for b in bills if b["closed_at"] < at - 0.3}
        new = {b["model"]["version"] for b in bills if b["closed_at"] > at + 0.3}
        assert old == {"dishnet-1.1"} and new == {"dishnet-v2"}
        states = {e.id: e.state for e in rollout.store.entries()}
        assert states[cid] == "serving" and states[first["id"]] == "retired"
        assert pipeline.metrics.value("dishtracker_model_swaps_total", cause="promote") == 1

    _run(site, body)


@needs_model
def test_a_candidate_that_does_not_load_is_refused_and_the_streams_go_on(
        tmp_path: Path) -> None:
    site = _site(tmp_path, URL)
    broken = failing_at_load(tmp_path / "broken.onnx")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        serving = rollout.status()["serving"]
        cid = _upload(pipeline, broken)
        runner = pipeline.runners["cam1"]
        for action in (rollout.shadow, rollout.promote):
            frames = runner.frames_done
            with pytest.raises(RolloutError, match="does not load") as err:
                await action(cid, actor="test")
            assert err.value.status == 422
            await _until(lambda f=frames: runner.frames_done > f + 5, 10.0, "frames")  # type: ignore[misc]
        assert rollout.status()["serving"] == serving
        assert rollout.store.get(cid).state == "retired"

    _run(site, body)


@needs_model
def test_a_model_that_raises_at_inference_is_rolled_back_within_2_s(tmp_path: Path) -> None:
    site = _site(tmp_path, URL)
    broken = failing_at_inference(tmp_path / "broken.onnx")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        serving = rollout.status()["serving"]
        cid = _upload(pipeline, broken)
        runner = pipeline.runners["cam1"]
        await rollout.promote(cid, actor="test")
        t0 = time.monotonic()
        frames = runner.frames_done
        await _until(lambda: rollout.status()["serving"]["id"] == serving["id"], 2.0,
                     "the automatic rollback")
        took = time.monotonic() - t0
        assert took < 2.0
        assert runner.frames_done > frames  # the video went on meanwhile
        assert pipeline.metrics.value("dishtracker_model_swaps_total",
                                      cause="auto_rollback") == 1
        assert pipeline.metrics.value("dishtracker_model_errors_total",
                                      version="broken-run") >= 1
        history = rollout.store.history()
        assert history[0]["to"] == "serving" and "raised at inference" in history[0]["reason"]
        assert rollout.store.get(cid).state == "retired"
        # the model that failed is nothing to roll back to
        assert rollout.status()["rollback_to"] is None
        with pytest.raises(RolloutError, match="nothing to roll back to"):
            await rollout.rollback(actor="test")

    _run(site, body)


@needs_model
def test_a_shadow_that_raises_is_retired_and_serving_never_stops(tmp_path: Path) -> None:
    site = _site(tmp_path, URL)
    broken = failing_at_inference(tmp_path / "broken.onnx")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        cid = _upload(pipeline, broken)
        await rollout.shadow(cid, actor="test")
        await _until(lambda: rollout.store.get(cid).state == "retired", 5.0, "retirement")
        assert rollout.status()["shadow"] is None
        frames = pipeline.runners["cam1"].frames_done
        await _until(lambda: pipeline.runners["cam1"].frames_done > frames + 5, 5.0, "frames")

    _run(site, body)


@needs_model
def test_a_model_over_its_latency_budget_is_rolled_back_and_a_promotion_survives_a_restart(
        tmp_path: Path) -> None:
    site = _site(tmp_path, URL)
    slow = site.model_copy(update={"rollout": site.rollout.model_copy(
        update={"max_latency_ms": 0.001, "latency_windows": 2})})
    candidate = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2")
    ids: dict[str, str] = {}

    async def over_budget(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        first = rollout.status()["serving"]["id"]
        ids["v2"] = _upload(pipeline, candidate)
        await rollout.promote(ids["v2"])
        await _until(lambda: rollout.status()["serving"]["id"] == first
                     and not rollout.status()["swapping"], 10.0, "rollback")
        assert "over the budget" in rollout.store.history()[0]["reason"]
        with pytest.raises(RolloutError, match=r"serves: promote another"):
            # the only model that served before v2 serves now; v2 is retired
            await rollout.retire(first)

    _run(slow, over_budget)

    async def promote(pipeline: Pipeline, billing: BillingService) -> None:
        assert pipeline.rollout is not None
        await pipeline.rollout.promote(ids["v2"], actor="test")

    _run(site, promote)

    async def restarted(pipeline: Pipeline, billing: BillingService) -> None:
        assert pipeline.rollout is not None
        assert pipeline.rollout.status()["serving"]["version"] == "dishnet-v2"
        back = await pipeline.rollout.rollback(actor="test")
        assert back["version"] == "dishnet-1.1"
        with pytest.raises(RolloutError) as err:
            await pipeline.rollout.promote(back["id"])
        assert err.value.status == 409

    _run(site, restarted)


def _bill(bill_id: str, keys: list[str], opened: float, closed: float) -> Bill:
    bill = make_bill(bill_id, closed_at=closed, lines=tuple((k, 0.9) for k in keys))
    return dataclasses.replace(bill, opened_at=opened)


def test_the_book_pairs_bills_of_one_tray_and_counts_who_was_right() -> None:
    book = ShadowBook("abc", ["bread_roll"], window_s=2.0, metrics=Metrics(), started_at=1000.0)
    t = 1000.0 + WARMUP_S + 1
    book.serving_bill(_bill("early", ["coffee"], 1000.5, t))  # in view at the start
    book.shadow_bill(_bill("s-early", ["coffee"], 1000.0, t))
    book.serving_bill(_bill("a", ["coffee", "water_still"], t, t + 10))
    book.shadow_bill(_bill("s-a", ["water_still", "coffee"], t, t + 10.1))
    book.serving_bill(_bill("b", ["coffee"], t + 5, t + 20))
    book.shadow_bill(_bill("s-b", ["coffee", "bread_roll"], t + 5, t + 20.2))
    book.serving_bill(_bill("c", ["tomato_soup"], t + 20, t + 30))  # the shadow never billed it
    book.shadow_bill(_bill("s-d", ["coffee"], t + 30, t + 40))  # a tray serving never saw
    book.expire(t + 60)
    stats = book.stats()
    assert (stats["agree"], stats["differ"], stats["missed"], stats["extra"]) == (1, 1, 1, 1)
    assert stats["agreement"] == 0.25 and stats["new_class_lines"] == 1
    book.correction("b", {"items": [{"key": "coffee"}, {"key": "bread_roll"}]})
    assert book.stats()["corrections"]["candidate_right"] == 1
    book.correction("b", {"items": [{"key": "coffee"}]})  # undone: serving was right
    assert book.stats()["corrections"] == {"candidate_right": 0, "serving_right": 1,
                                           "neither": 0}


def test_a_tray_in_view_when_the_shadow_moves_on_to_its_stream_is_not_compared(
        tmp_path: Path) -> None:
    """The shadow started long ago on another stream and has just moved on to
    cam1 (a new ShadowStream): a tray already in view on cam1 then is left out,
    as trays in view at the shadow's start are; a tray seen after is compared."""
    site = _site(tmp_path, URL)
    now = time.time()
    book = ShadowBook("abc", [], window_s=2.0, metrics=Metrics(), started_at=now - 1000.0)
    ShadowStream(site.streams[0], site, ("coffee", "water_still"), book)  # moved on to cam1
    book.serving_bill(_bill("in-view", ["coffee", "water_still"], now - 5.0, now + 1.0))
    book.shadow_bill(_bill("s-in-view", ["coffee"], now - 0.5, now + 1.0))  # saw half of it
    book.serving_bill(_bill("after", ["coffee"], now + WARMUP_S + 1, now + 20.0))
    book.shadow_bill(_bill("s-after", ["coffee"], now + WARMUP_S + 1, now + 20.1))
    book.expire(now + 60.0)
    stats = book.stats()
    assert (stats["agree"], stats["differ"], stats["missed"], stats["extra"]) == (1, 0, 0, 0)


@needs_model
def test_a_new_detector_model_in_the_config_is_promoted_live_or_refused_whole(
        tmp_path: Path) -> None:
    site = _site(tmp_path, URL)
    v2 = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2")
    broken = failing_at_load(tmp_path / "broken.onnx")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        refused = site.model_copy(update={
            "detector": site.detector.model_copy(update={"model": broken}),
            "menu": {}})
        with pytest.raises(ConfigError, match=r"detector.model: .*does not load"):
            await pipeline.apply_config(refused)
        assert pipeline.config.menu == site.menu  # nothing changed
        new = site.model_copy(update={"detector": site.detector.model_copy(
            update={"model": v2, "score_threshold": 0.4})})
        _slow_loads(pipeline, 1.5)
        result, frames = await _frames_during(pipeline, pipeline.apply_config(new))
        assert frames >= 5  # the video went on while the new model loaded
        assert "detector.model" in result["applied"] and not result["restart_required"]
        assert rollout.status()["serving"]["version"] == "dishnet-v2"
        assert pipeline.config.detector.model == v2
        assert pipeline.worker.config.score_threshold == 0.4
        ids["v2"] = rollout.status()["serving"]["id"]

    ids: dict[str, str] = {}
    _run(site, body)

    async def restarted(pipeline: Pipeline, billing: BillingService) -> None:
        # PUT /api/config wrote the file naming v2; the registry recorded it as the
        # config's model, so the start keeps it serving
        assert pipeline.rollout is not None
        assert pipeline.rollout.status()["serving"]["id"] == ids["v2"]

    changed = site.model_copy(update={"detector": site.detector.model_copy(
        update={"model": v2})})
    _run(changed, restarted)


@needs_model
def test_what_a_model_needs_before_serving_runs_before_the_swap_or_stops_it(
        tmp_path: Path) -> None:
    """The hook the learning issue's examples are re-embedded in: it runs with the
    new model loaded, in the model's own thread, while the old one still serves."""
    site = _site(tmp_path, URL)
    v2 = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2")
    v3 = dishnet_variant(tmp_path / "v3.onnx", "dishnet-v3")
    seen: list[tuple[str, str, int]] = []

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None

        async def embed(model: Any) -> None:
            image = np.zeros((240, 320, 3), np.uint8)
            found = await asyncio.get_running_loop().run_in_executor(
                model.executor, model.call, [image])
            seen.append((pipeline.worker.serving.version, model.version, len(found)))
            if model.version == "dishnet-v3":
                raise RuntimeError("examples could not be re-embedded")

        rollout.before_serve(embed)
        await rollout.promote(_upload(pipeline, v2))
        assert seen == [("dishnet-1.1", "dishnet-v2", 1)]
        with pytest.raises(RolloutError, match="could not be made ready") as err:
            await rollout.promote(_upload(pipeline, v3))
        assert err.value.status == 422
        assert rollout.status()["serving"]["version"] == "dishnet-v2"
        frames = pipeline.runners["cam1"].frames_done
        await _until(lambda: pipeline.runners["cam1"].frames_done > frames + 5, 10.0, "frames")

    _run(site, body)


@needs_model
def test_a_rollback_due_when_a_promotion_finishes_does_not_undo_it(tmp_path: Path) -> None:
    """The serving model raised while a manager's promotion loaded another: the
    promotion goes through, and the rollback due for the model that raised does
    not bring it back; an error of a model that no longer serves (a call it had
    in flight) rolls nothing back."""
    site = _site(tmp_path, URL)
    v2 = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2")
    v3 = dishnet_variant(tmp_path / "v3.onnx", "dishnet-v3")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        await rollout.promote(_upload(pipeline, v2))
        v2_model = pipeline.worker.serving
        _slow_loads(pipeline, 1.0)
        promotion = asyncio.create_task(rollout.promote(_upload(pipeline, v3)))
        await _until(lambda: rollout.status()["swapping"], 5.0, "the promotion")
        err = RuntimeError("raised at inference")
        v2_model.failed = err  # as the worker does before it calls the hook
        assert rollout._model_error(v2_model, err)
        await promotion
        for _ in range(2):
            await asyncio.sleep(0.3)  # the rollback task takes the lock, if it would
            await _until(lambda: not rollout.status()["swapping"], 15.0, "the rollback task")
            assert rollout.status()["serving"]["version"] == "dishnet-v3"
            assert rollout._model_error(v2_model, err)  # v2's batch in flight at the swap
        assert pipeline.metrics.value("dishtracker_model_swaps_total",
                                      cause="auto_rollback") == 0

    _run(site, body)


@needs_model
def test_a_shadow_whose_promotion_is_refused_is_not_left_shadow_nor_served_failed(
        tmp_path: Path) -> None:
    """Promoting the shadow takes it off shadowing; when the swap is refused (a
    step before serving raised, or its last call as the shadow raised
    meanwhile) the registry says so, and a failed model never serves."""
    site = _site(tmp_path, URL)
    v2 = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2")
    outcome: list[str] = ["raise"]

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        cid = _upload(pipeline, v2)

        async def step(model: Any) -> None:
            if outcome[0] == "raise":
                raise RuntimeError("examples could not be re-embedded")
            model.failed = RuntimeError("its last call as the shadow raised")

        rollout.before_serve(step)
        for expected in ("candidate", "retired"):
            outcome[0] = "raise" if expected == "candidate" else "failed"
            await rollout.shadow(cid, actor="test")
            with pytest.raises(RolloutError, match="could not be made ready") as err:
                await rollout.promote(cid, actor="test")
            assert err.value.status == 422
            status = rollout.status()
            assert status["serving"]["version"] == "dishnet-1.1" and status["shadow"] is None
            assert rollout.store.get(cid).state == expected
            assert pipeline.worker.serving.failed is None
        frames = pipeline.runners["cam1"].frames_done
        await _until(lambda: pipeline.runners["cam1"].frames_done > frames + 5, 10.0, "frames")

    _run(site, body)


@needs_model
def test_a_failed_model_that_nothing_can_replace_stops_the_worker(tmp_path: Path) -> None:
    """No half-alive daemon: when the automatic rollback cannot bring the model
    before back (here a step it needs before serving fails), the worker ends with
    the error and the daemon's supervisor stops it (systemd restarts it)."""
    site = _site(tmp_path, URL)
    broken = failing_at_inference(tmp_path / "broken.onnx")

    async def body(pipeline: Pipeline, billing: BillingService) -> None:
        rollout = pipeline.rollout
        assert rollout is not None
        first = rollout.status()["serving"]["version"]

        async def refuse_the_old_one(model: Any) -> None:
            if model.version == first:
                raise RuntimeError("its examples are gone")

        rollout.before_serve(refuse_the_old_one)
        await rollout.promote(_upload(pipeline, broken))
        task = pipeline._worker_task
        assert task is not None
        await _until(task.done, 5.0, "the worker to stop")
        assert isinstance(task.exception(), RolloutError)

    _run(site, body)
