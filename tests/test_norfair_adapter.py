"""FastHitObject leaves every tracked object exactly as Norfair's own hit() would."""

from __future__ import annotations

import numpy as np
import pytest
from norfair import Detection, Tracker
from norfair.filter import NoFilterFactory, OptimizedKalmanFilterFactory

from edge.track.norfair_adapter import FastHitObject, use_fast_hit


def _tracker(filter_factory: object, fast: bool) -> Tracker:
    tracker = Tracker(distance_function="iou", distance_threshold=0.7, hit_counter_max=8,
                      initialization_delay=3, filter_factory=filter_factory,
                      past_detections_length=0)
    if fast:
        assert use_fast_hit(tracker)
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


def test_detections_with_scores_take_norfairs_own_path() -> None:
    plain, fast = _tracker(NoFilterFactory(), False), _tracker(NoFilterFactory(), True)
    for f, boxes in enumerate(_frames(4, 40)):
        scores = np.array([0.9, 0.2]) if f % 3 else None  # a point below the threshold
        plain.update([Detection(points=b, scores=scores) for b in boxes])
        fast.update([Detection(points=b.copy(), scores=scores) for b in boxes])
        assert _state(fast) == _state(plain), f"frame {f}"


def test_a_tracker_with_objects_is_left_alone() -> None:
    tracker = _tracker(NoFilterFactory(), False)
    tracker.update([Detection(points=np.array([[0.0, 0.0], [10.0, 10.0]]))])
    assert not use_fast_hit(tracker)
