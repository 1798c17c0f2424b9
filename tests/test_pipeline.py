"""The stream loop, the detection worker and late-detection compensation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import numpy.typing as npt

from edge.config import DetectorConfig, SiteConfig, StreamConfig
from edge.detect import Detector, load_detector
from edge.detect.worker import DetectionWorker
from edge.frames import Detections, Track
from edge.geometry import box_iou
from edge.metrics import Metrics
from edge.pipeline import StreamRunner
from edge.track.lag import LagCompensator


def _track(tid: int, x: float) -> Track:
    return Track(tid, (x, 10.0, x + 30.0, 40.0), 1, "coffee", 1.0, 3, True)


def _dets(*boxes: tuple[float, float, float, float]) -> Detections:
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4),
                      np.full(n, 0.9, np.float32), np.ones(n, np.int32))


def test_iou_matrix() -> None:
    m = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10],
                                                         [20, 20, 30, 30]]))
    assert np.allclose(m, [[1.0, 1 / 3, 0.0]])


def test_late_detection_follows_its_track_to_the_target_frame() -> None:
    lag = LagCompensator()
    for f in range(10):  # a track moving 4 px per frame
        lag.record(f, [_track(7, 100.0 + 4 * f)])
    # detected on frame 6 (x = 124), applied to frame 10 (one past the last record)
    moved = lag.shift(_dets((124, 10, 154, 40), (300, 300, 320, 320)), 6, 10)
    assert np.allclose(moved.boxes[0], [140, 10, 170, 40])
    assert np.allclose(moved.boxes[1], [300, 300, 320, 320])  # a new object stays put


def test_detection_of_a_forgotten_frame_is_applied_unshifted() -> None:
    lag = LagCompensator(history=4)
    for f in range(10):
        lag.record(f, [_track(7, 100.0 + 4 * f)])
    dets = _dets((104, 10, 134, 40))
    assert lag.shift(dets, 1, 10) is dets
    assert lag.shift(dets, 9, 9) is dets


class SlowDetector:
    """The shipped model behind an extra delay per call: stands in for a
    detector slower than the frame interval (a loaded CPU or a small GPU),
    which this machine's fast path does not produce on its own."""

    def __init__(self, inner: Detector, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.info = inner.info

    def detect(self, images: list[npt.NDArray[np.uint8]]) -> list[Detections]:
        time.sleep(self.delay_s)
        return self.inner.detect(images)

    def close(self) -> None:
        self.inner.close()


def test_slow_detector_does_not_hold_video() -> None:
    """With detection far slower than the frame interval, frames still leave at
    the camera's rate and detections land late, shifted, on later frames."""

    async def run() -> tuple[StreamRunner, Metrics, float]:
        metrics = Metrics()
        config = DetectorConfig(max_wait_ms=20.0)
        worker = DetectionWorker(
            config, metrics, loader=lambda c: SlowDetector(load_detector(c.model), 0.15))
        await worker.load()
        work = asyncio.create_task(worker.run())
        site = SiteConfig(streams=[StreamConfig(id="cam", url="synthetic://?seed=3&fps=20")])
        runner = StreamRunner(site.streams[0], site, worker, metrics)
        slot = runner.view.subscribe()
        runner.start()
        # the rate is exported from the start, before the first detection window
        assert metrics.registry.get_sample_value("dishtracker_detection_rate_hz",
                                                 {"stream": "cam"}) == 0.0
        waits = []
        t_end = time.monotonic() + 4.0
        while time.monotonic() < t_end:
            tf = await slot.get()
            waits.append(tf.frame.stamps[-1][1] - tf.frame.capture_time)
        await runner.stop()
        assert metrics.registry.get_sample_value("dishtracker_detection_rate_hz",
                                                 {"stream": "cam"}) is None
        work.cancel()
        await worker.close()
        return runner, metrics, float(np.median(waits))

    runner, metrics, median_wait = asyncio.run(run())
    assert runner.frames_done >= 60, runner.frames_done  # ~20 fps for 4 s
    assert median_wait < 0.1
    assert metrics.value("dishtracker_late_detections_total", stream="cam") >= 5
    assert 3.0 < metrics.value("dishtracker_detect_seconds_count") < 40
