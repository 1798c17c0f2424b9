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

from edge.config import TrackerConfig
from edge.frames import Detections, Frame, Track
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
            det_ids = {id(d) for d in nf}
            matched = set()
            for obj in self._tracker.tracked_objects:
                last = obj.last_detection
                if last is not None and id(last) in det_ids:
                    cls, score = last.data
                    key = obj.id if obj.id is not None else -obj.initializing_id
                    self._votes.add(key, cls, score)
                    matched.add(key)
            self._promote_initializing_votes()
        tracks = []
        for obj in objects:
            cls, share = self._votes.winner(obj.id)
            if cls < 0:
                continue
            x1, y1 = obj.estimate[0]
            x2, y2 = obj.estimate[1]
            tracks.append(Track(
                track_id=int(obj.id), box=(float(x1), float(y1), float(x2), float(y2)),
                class_id=cls, class_name=self.class_names[cls], confidence=share,
                hits=self._votes.hits(obj.id), detected=obj.id in matched,
            ))
        live = [o.id if o.id is not None else -o.initializing_id
                for o in self._tracker.tracked_objects]
        self._votes.retain(live)
        return tuple(tracks)

    def _promote_initializing_votes(self) -> None:
        """Move votes cast while a track was initialising to its final id."""
        for obj in self._tracker.tracked_objects:
            if obj.id is not None:
                self._votes.merge(-obj.initializing_id, obj.id)
