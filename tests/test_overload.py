"""Overload is said, not hidden (issue 19 item 3, in part): the video path's losses
are measured per stream, and when they last, /readyz says why; the detection rate
follows the detector's own load (losing video does not lower it: measured worse)."""

from __future__ import annotations

import pytest

from edge.detect.worker import LOSS_HIGH, STARVED_WINDOWS, RateControl, VideoLoss
from edge.metrics import Metrics


def test_the_rate_follows_the_detectors_load_and_not_the_videos() -> None:
    rate = RateControl(2.0, 20.0)
    rate.adapt(busy=0.9, loss=0.0)
    assert rate.hz == pytest.approx(16.0)
    rate.adapt(busy=0.1, loss=0.5)
    assert rate.hz == pytest.approx(16.5)


def test_a_lasting_video_loss_makes_the_daemon_say_it_is_overloaded() -> None:
    rate = RateControl(2.0, 20.0)
    rate.adapt(busy=0.1, loss=0.10)  # one bad second (two frames at 20 fps) is no overload
    assert rate.overload() is None
    for _ in range(STARVED_WINDOWS + 15):
        rate.adapt(busy=0.1, loss=0.3)
    reason = rate.overload()
    assert reason is not None and reason.startswith("overloaded: the video drops 30 %")
    for _ in range(10):  # it keeps up again: once its average loss is down
        rate.adapt(busy=0.1, loss=0.0)
    assert rate.loss < LOSS_HIGH and rate.overload() is None


def test_video_loss_is_the_worst_streams_share_of_its_decoded_frames() -> None:
    metrics = Metrics()
    loss = VideoLoss(metrics)
    assert loss.sample({"a", "b"}) == 0.0
    metrics.frames.labels("a", "decode").inc(100)
    metrics.frames.labels("b", "decode").inc(100)
    metrics.drops.labels("a", "view_slot").inc(3)
    metrics.drops.labels("b", "decode_slot").inc(10)
    metrics.drops.labels("b", "detect_replaced").inc(50)  # detection's own: not video
    assert loss.sample({"a", "b"}) == pytest.approx(0.10)
    metrics.frames.labels("a", "decode").inc(100)
    assert loss.sample({"a", "b"}) == 0.0  # counts since the last sample only


def test_pipeline_readiness_carries_the_overload_reason() -> None:
    from edge.config import SiteConfig
    from edge.pipeline import Pipeline

    pipeline = Pipeline(SiteConfig(streams=[]))
    for _ in range(STARVED_WINDOWS + 5):
        pipeline.worker.rate.adapt(busy=0.2, loss=0.5)
    ready, reasons = pipeline.readiness()
    assert not ready and any(r.startswith("overloaded: the video drops") for r in reasons)
