"""The Norfair adapter: Norfair 2.3's semantics on any Norfair; a fast hit(), same state.

:class:`Norfair23Object` is the reference (Norfair's own ``hit`` with 2.3's
counter and detection identity); :class:`FastHitObject` must leave every
tracked object exactly as it would. The last tests pin the installed
Norfair's behaviour that the adapter corrects: when an upgrade changes it,
they fail and the correction is to be revisited.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest
from norfair import Detection, Tracker
from norfair.filter import NoFilterFactory, OptimizedKalmanFilterFactory

from edge.track import norfair_adapter as nfa
from edge.track.norfair_adapter import FastHitObject, Norfair23Object, use_fast_hit


def _tracker(filter_factory: object, fast: bool) -> Tracker:
    tracker = Tracker(distance_function="iou", distance_threshold=0.7, hit_counter_max=8,
                      initialization_delay=3, filter_factory=filter_factory,
                      past_detections_length=0)
    assert use_fast_hit(tracker, fast=fast)
    return tracker


def _frames(seed: int, n: int) -> list[list[np.ndarray]]:
    """Boxes drifting right with jitter; some missed, some born late, some leave."""
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, 300, (12, 2))
    out = []
    for f in range(n):
        boxes = []
        for k, (x, y) in enumerate(starts):
            if f < 3 * k % 25 or f > 40 + 5 * k or rng.random() < 0.2:
                continue
            x1, y1 = x + 2.0 * f + rng.normal(0, 1), y + rng.normal(0, 1)
            boxes.append(np.array([[x1, y1], [x1 + 40, y1 + 30]]))
        out.append(boxes)
    return out


def _state(tracker: Tracker) -> list[tuple[object, ...]]:
    return [(o.id, o.initializing_id, o.hit_counter, o.is_initializing,
             o.point_hit_counter.tolist(), o.detected_at_least_once_points.tolist(),
             o.filter.x.ravel().tolist(), o.estimate.ravel().tolist())
            for o in tracker.tracked_objects]


@pytest.mark.parametrize("filter_factory", [NoFilterFactory, OptimizedKalmanFilterFactory])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_hit_matches_norfair_after_every_update(filter_factory: type, seed: int) -> None:
    plain, fast = _tracker(filter_factory(), False), _tracker(filter_factory(), True)
    compared = 0
    for f, boxes in enumerate(_frames(seed, 90)):
        period = 2 if f % 7 == 6 else 1  # a skipped detection now and then
        dets = [Detection(points=b) for b in boxes]
        plain.update(dets, period=period)
        fast.update([Detection(points=b.copy()) for b in boxes], period=period)
        assert _state(fast) == _state(plain), f"frame {f}"
        compared += len(plain.tracked_objects)
    assert compared > 300
    assert all(isinstance(o, FastHitObject) for o in fast.tracked_objects)
    assert not any(isinstance(o, FastHitObject) for o in plain.tracked_objects)


def test_detections_with_scores_take_norfairs_own_path() -> None:
    plain, fast = _tracker(NoFilterFactory(), False), _tracker(NoFilterFactory(), True)
    for f, boxes in enumerate(_frames(4, 40)):
        scores = np.array([0.9, 0.2]) if f % 3 else None  # a point below the threshold
        plain.update([Detection(points=b, scores=scores) for b in boxes])
        fast.update([Detection(points=b.copy(), scores=scores) for b in boxes])
        assert _state(fast) == _state(plain), f"frame {f}"


def test_a_tracker_with_objects_is_left_alone() -> None:
    tracker = Tracker(distance_function="iou", distance_threshold=0.7)
    tracker.update([Detection(points=np.array([[0.0, 0.0], [10.0, 10.0]]))])
    assert not use_fast_hit(tracker)


def _plain_norfair() -> Tracker:
    return Tracker(distance_function="iou", distance_threshold=0.7, hit_counter_max=8,
                   initialization_delay=3, past_detections_length=0)


def _feed(tracker: Tracker, n: int) -> Iterator[list[Detection]]:
    """One box seen ``n`` frames running; yields each frame's detections after
    the update."""
    for f in range(n):
        dets = [Detection(points=np.array([[10.0 + f, 10.0], [50.0 + f, 40.0]]))]
        tracker.update(dets)
        yield dets


def test_norfair23_objects_keep_the_matched_detection_and_count_hits_by_two() -> None:
    tracker = _plain_norfair()
    assert use_fast_hit(tracker, fast=False)
    counters = []
    for dets in _feed(tracker, 6):
        (obj,) = tracker.tracked_objects
        assert isinstance(obj, Norfair23Object)
        assert nfa.matched(obj, dets)  # the detection itself, not a copy
        counters.append(obj.hit_counter)
    # hit_counter: +2 per match, -1 per frame (Norfair's tracker_step), no jump when
    # the track initialises at the 3rd frame
    assert counters == [1, 2, 3, 4, 5, 6]


def test_installed_norfair_still_needs_the_2_3_corrections() -> None:
    """norfair-enough 2.4 keeps copies of matched detections and jumps a track's hit
    counter to its maximum when it initialises; Norfair 2.3 did neither. If this
    fails, the installed Norfair behaves as 2.3 again (or otherwise differently):
    review :class:`Norfair23Object` before changing the pin."""
    tracker = _plain_norfair()
    last = list(_feed(tracker, 6))[-1]
    (obj,) = tracker.tracked_objects
    copies = obj.last_detection is not last[0]
    jumps = obj.hit_counter == tracker.hit_counter_max
    assert copies and jumps, "Norfair no longer copies detections or jumps counters"


def test_crossed_box_warnings_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Norfair warns on every IoU call with a box whose corners crossed: per frame in
    the daemon's log. A tracker made through the adapter drops that warning."""
    crossed = np.array([[10.0, 10.0], [5.0, 5.0]])
    plain = Tracker(distance_function="iou", distance_threshold=0.7)
    logging.getLogger("norfair.distances").filters.clear()
    with caplog.at_level(logging.WARNING, logger="norfair.distances"):
        for _ in range(2):
            plain.update([Detection(points=crossed.copy())])
    assert any("Incorrect bounding boxes" in r.getMessage() for r in caplog.records)
    caplog.clear()
    tracker = _plain_norfair()
    assert use_fast_hit(tracker)
    with caplog.at_level(logging.WARNING, logger="norfair.distances"):
        for _ in range(2):
            tracker.update([Detection(points=crossed.copy())])
    assert not any("Incorrect bounding boxes" in r.getMessage() for r in caplog.records)
