"""Norfair adapter: class-agnostic IoU association plus lifetime class votes.

Norfair runs once per frame. Frames the scheduler did not detect advance the
Kalman filters with ``update(None)``; a detected frame passes ``period`` =
frames since the previous detection, so hit counters stay calibrated in frames
whatever the detection rate (Norfair's own contract for skipped frames).

Detections carry no Norfair ``label``: Norfair only matches equal labels and
fixes a track's label at birth, so a flickering class would split tracks.
The class is voted instead (:mod:`edge.track.votes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from norfair import Detection as NfDetection
from norfair import Tracker as NfTracker
from norfair.tracker import TrackedObject

from edge.config import TrackerConfig
from edge.frames import Detections, Frame, Track
from edge.track.norfair_adapter import quiet_box_warnings
from edge.track.votes import ClassVotes


class NorfairTracker:
    """Tracks every detected object of one stream.

    Parameters
    ----------
    class_names : sequence of str
        The detector's class names (index = class id).
    config : TrackerConfig
        IoU threshold, hit counter and initialisation delay.
    """

    def __init__(self, class_names: Sequence[str], config: TrackerConfig) -> None:
        self.class_names = tuple(class_names)
        self.config = config
        quiet_box_warnings()
        self._tracker = NfTracker(
            distance_function="iou",
            distance_threshold=1.0 - config.iou_threshold,
            hit_counter_max=config.hit_counter_max,
            initialization_delay=min(config.initialization_delay, config.hit_counter_max - 1),
        )
        self._votes = ClassVotes(len(self.class_names))
        self._since_detection = 1

    @property
    def live_tracks(self) -> int:
        """Tracks alive now (initialised or not)."""
        return len(self._tracker.tracked_objects)

    def update(self, frame: Frame, detections: Detections | None) -> tuple[Track, ...]:
        """Advance one frame and return the initialised tracks.

        Parameters
        ----------
        frame : Frame
            The frame (only its time and id are used).
        detections : Detections or None
            Boxes in source pixels; None if this frame was not detected.
        """
        if detections is None:
            objects = self._tracker.update(None)
            self._since_detection += 1
            matched: set[int] = set()
        else:
            nf = [
                NfDetection(
                    points=np.array([[b[0], b[1]], [b[2], b[3]]], dtype=np.float64),
                    scores=np.array([s, s], dtype=np.float64),
                    data=(int(c), float(s)),
                )
                for b, s, c in zip(detections.boxes, detections.scores, detections.classes,
                                   strict=True)
            ]
            objects = self._tracker.update(nf, period=self._since_detection)
            self._since_detection = 1
            # norfair-enough keeps a shallow copy of the matched detection (Norfair 2.3 the
            # detection itself): its data tuple, made afresh per detection, identifies it
            det_ids = {id(d.data) for d in nf}
            matched = set()
            for obj in self._tracker.tracked_objects:
                last = obj.last_detection
                if last is not None and id(last.data) in det_ids:
                    cls, score = last.data
                    key = _key(obj)
                    self._votes.add(key, cls, score)
                    matched.add(key)
            self._promote_initializing_votes()
        tracks = []
        for obj in objects:
            key = _key(obj)
            cls, share = self._votes.winner(key)
            if cls < 0:
                continue
            # Norfair filters each corner on its own: the predicted corners of a box that
            # shrank at the picture's edge can cross, so the box is the corners' span
            (x1, x2), (y1, y2) = (sorted(map(float, obj.estimate[:, k])) for k in (0, 1))
            tracks.append(Track(
                track_id=key, box=(x1, y1, x2, y2),
                class_id=cls, class_name=self.class_names[cls], confidence=share,
                hits=self._votes.hits(key), detected=key in matched,
            ))
        live = [_key(o) for o in self._tracker.tracked_objects]
        self._votes.retain(live)
        return tuple(tracks)

    def _promote_initializing_votes(self) -> None:
        """Move votes cast while a track was initialising to its final id."""
        for obj in self._tracker.tracked_objects:
            if obj.id is not None:
                self._votes.merge(-_initializing_id(obj), obj.id)


def _initializing_id(obj: TrackedObject) -> int:
    """The id Norfair gives an object at birth (set for every object it creates)."""
    return obj.initializing_id if obj.initializing_id is not None else 0


def _key(obj: TrackedObject) -> int:
    """An object's vote key: its id once initialised, minus its initialising id before."""
    return obj.id if obj.id is not None else -_initializing_id(obj)
