"""Late detections: move boxes detected on an older frame to the current one.

The stream loop does not hold video for the detector: when a detection is not
back within its small wait budget, the frame goes out with the tracker's
prediction and the detection is applied to a later frame. Its boxes are then
where the objects *were*. :class:`LagCompensator` remembers the tracks' boxes
of the last few frames; a late box that overlaps a track in the frame it was
detected on is shifted by how far that track has moved since. Boxes of new
objects (no track then) stay where they were detected.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge.frames import Detections, Track
from edge.geometry import box_iou

MIN_IOU = 0.3  # a late box belongs to a track of its frame above this overlap
VELOCITY_FRAMES = 4  # frames over which a track's recent velocity is measured


class LagCompensator:
    """Track boxes of the last ``history`` frames, to shift late detections.

    Parameters
    ----------
    history : int
        Frames remembered; a detection older than that is applied unshifted.
    """

    def __init__(self, history: int = 16) -> None:
        self.history = history
        self._boxes: OrderedDict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = (
            OrderedDict())

    def record(self, frame_id: int, tracks: Sequence[Track]) -> None:
        """Remember the tracks' boxes in frame ``frame_id``."""
        ids = np.array([t.track_id for t in tracks], np.int64)
        boxes = np.array([t.box for t in tracks], np.float64).reshape(-1, 4)
        self._boxes[frame_id] = (ids, boxes)
        while len(self._boxes) > self.history:
            self._boxes.popitem(last=False)

    def shift(self, detections: Detections, detected_on: int, target: int) -> Detections:
        """Move ``detections`` of frame ``detected_on`` to frame ``target``.

        A box follows the track it overlapped on ``detected_on``: by the track's
        displacement up to the last recorded frame, then by its recent velocity
        for the frames after that (``target`` is usually the frame about to be
        tracked, one past the last recorded one).
        """
        if detected_on == target or len(detections) == 0 or not self._boxes:
            return detections
        then = self._boxes.get(detected_on)
        if then is None or len(then[0]) == 0:
            return detections
        latest = next(reversed(self._boxes))
        then_ids, then_boxes = then
        iou = box_iou(detections.boxes, then_boxes)
        best = iou.argmax(axis=1)
        boxes = np.array(detections.boxes, np.float32, copy=True)
        for k, j in enumerate(best):
            if iou[k, j] < MIN_IOU:
                continue
            track_id = int(then_ids[j])
            path = self._path(track_id)
            if latest not in path:
                continue
            c_then = _centre(then_boxes[j])
            c_latest = _centre(path[latest])
            first = min(f for f in path if f >= latest - VELOCITY_FRAMES)
            v = (c_latest - _centre(path[first])) / (latest - first) if latest > first else 0.0
            d = c_latest - c_then + v * (target - latest)
            boxes[k] += np.array([d[0], d[1], d[0], d[1]], np.float32)
        return detections.moved(boxes)

    def _path(self, track_id: int) -> dict[int, npt.NDArray[np.float64]]:
        out = {}
        for frame_id, (ids, boxes) in self._boxes.items():
            hit = np.flatnonzero(ids == track_id)
            if len(hit):
                out[frame_id] = boxes[hit[0]]
        return out


def _centre(box: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
