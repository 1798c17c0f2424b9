"""Norfair adapter: class-agnostic association with lifetime class votes."""

from __future__ import annotations

import numpy as np

from edge.config import TrackerConfig
from edge.frames import Detections, Frame
from edge.track.norfair_tracker import NorfairTracker
from edge.track.votes import ClassVotes

NAMES = ("tray", "coffee", "cappuccino")
IMAGE = np.zeros((48, 64, 3), np.uint8)


def _dets(boxes: list[tuple[float, float, float, float]], classes: list[int],
          scores: list[float] | None = None) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4),
                      np.array(scores or [0.9] * len(boxes), np.float32),
                      np.array(classes, np.int32))


def _frame(i: int) -> Frame:
    return Frame("cam", i, IMAGE, float(i) / 20)


def test_flickering_class_keeps_one_track_and_votes_majority() -> None:
    tracker = NorfairTracker(NAMES, TrackerConfig(initialization_delay=1))
    ids = set()
    for i in range(30):
        x = 10.0 + 2 * i
        cls = 2 if i % 5 == 4 else 1  # every fifth frame looks like the look-alike
        tracks = tracker.update(_frame(i), _dets([(x, 10, x + 30, 40)], [cls]))
        ids |= {t.track_id for t in tracks}
    assert len(ids) == 1
    (track,) = tracks
    assert track.class_name == "coffee"
    assert 0.7 < track.confidence < 0.9
    assert track.detected


def test_skipped_frames_are_predicted_not_dropped() -> None:
    tracker = NorfairTracker(NAMES, TrackerConfig(initialization_delay=1, hit_counter_max=10))
    last = ()
    for i in range(40):
        x = 10.0 + 3 * i
        dets = _dets([(x, 10, x + 30, 40)], [1]) if i % 4 == 0 else None  # detect at 5 Hz
        last = tracker.update(_frame(i), dets)
        if i > 4:
            assert len(last) == 1, f"track lost at frame {i}"
            if dets is None:
                assert not last[0].detected
    # the predicted box follows the motion between detections
    assert last[0].box[0] > 10.0 + 3 * 36


def test_two_objects_keep_their_ids() -> None:
    tracker = NorfairTracker(NAMES, TrackerConfig(initialization_delay=0))
    seen: dict[int, set[int]] = {}
    for i in range(20):
        x = 5.0 + i
        tracks = tracker.update(_frame(i), _dets([(x, 5, x + 20, 25), (x + 30, 5, x + 50, 25)],
                                                 [1, 0]))
        for t in tracks:
            seen.setdefault(t.track_id, set()).add(t.class_id)
    assert len(seen) == 2
    assert sorted(next(iter(v)) for v in seen.values()) == [0, 1]


def test_votes_merge_and_retain() -> None:
    v = ClassVotes(3)
    v.add(-1, 2, 0.5)
    v.add(7, 1, 0.2)
    v.merge(-1, 7)
    assert v.winner(7) == (2, 0.5 / 0.7)
    assert v.hits(7) == 2
    v.retain([])
    assert v.winner(7) == (-1, 0.0)
    assert len(v) == 0
