"""A ByteTrack-style multi-object tracker, written for the ``bytetrack`` baseline.

Used by :mod:`edge.eval.baselines` only (the pipeline tracks with Norfair,
:mod:`edge.track`). After Zhang et al., "ByteTrack: Multi-Object Tracking by
Associating Every Detection Box" (ECCV 2022), from the paper's description:

* a constant-velocity Kalman filter on box centre and size, its noise
  proportional to the box height (as SORT's and ByteTrack's);
* first association: high-score detections against tracked and lost tracks,
  IoU with the predicted boxes, Hungarian assignment;
* second association: low-score detections against the tracked tracks still
  unmatched (they rescue occluded or blurred objects without starting tracks);
* unconfirmed tracks (seen once) take the remaining high-score detections or die;
* a new track from a high-score detection above the new-track score;
* a lost track is kept ``buffer`` frames.

Class-agnostic: the class of a track is the majority of its detections' classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge.geometry import box_iou

Box = tuple[float, float, float, float]
TrackOut = tuple[int, Box, int, float, int]
"""``(track_id, box x1 y1 x2 y2, class_id, class vote share, hits)``."""


class _Kalman:
    """Constant-velocity Kalman filter on ``(cx, cy, w, h)``; noise scales with box height
    (the weights of SORT/ByteTrack's filter)."""

    POS_STD = 1.0 / 20.0
    VEL_STD = 1.0 / 160.0

    def __init__(self) -> None:
        self.f = np.eye(8)
        self.f[:4, 4:] = np.eye(4)
        self.h = np.eye(4, 8)

    def initiate(self, z: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64],
                                                             npt.NDArray[np.float64]]:
        mean = np.concatenate([z, np.zeros(4)])
        s = z[3]
        std = np.array([2 * self.POS_STD * s] * 4 + [10 * self.VEL_STD * s] * 4)
        return mean, np.diag(std**2)

    def predict(self, mean: npt.NDArray[np.float64], cov: npt.NDArray[np.float64]
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        s = mean[3]
        q = np.diag(np.array([self.POS_STD * s] * 4 + [self.VEL_STD * s] * 4) ** 2)
        return self.f @ mean, self.f @ cov @ self.f.T + q

    def update(self, mean: npt.NDArray[np.float64], cov: npt.NDArray[np.float64],
               z: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64],
                                                    npt.NDArray[np.float64]]:
        r = np.diag(np.full(4, self.POS_STD * mean[3]) ** 2)
        s = self.h @ cov @ self.h.T + r
        gain = np.linalg.solve(s, self.h @ cov).T
        mean = mean + gain @ (z - self.h @ mean)
        cov = cov - gain @ s @ gain.T
        return mean, cov


def _xyxy_to_z(b: Box) -> npt.NDArray[np.float64]:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]])


def _z_to_xyxy(m: npt.NDArray[np.float64]) -> Box:
    cx, cy, w, h = (float(v) for v in m[:4])
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


@dataclass(slots=True)
class _STrack:
    mean: npt.NDArray[np.float64]
    cov: npt.NDArray[np.float64]
    votes: Counter[int]
    score: float
    last_frame: int
    track_id: int = 0  # 0 until confirmed
    lost: bool = False
    hits: int = 1

    @property
    def box(self) -> Box:
        return _z_to_xyxy(self.mean)


def _associate(tracks: Sequence[_STrack], boxes: Sequence[Box],
               min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian matching on IoU; pairs below ``min_iou`` never match."""
    if not tracks or not boxes:
        return [], list(range(len(tracks))), list(range(len(boxes)))
    iou = box_iou([t.box for t in tracks], boxes)
    rows, cols = linear_sum_assignment(1.0 - iou)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]
    used_t = {r for r, _ in pairs}
    used_d = {c for _, c in pairs}
    return (pairs, [i for i in range(len(tracks)) if i not in used_t],
            [j for j in range(len(boxes)) if j not in used_d])


class ByteTracker:
    """ByteTrack-style two-stage association for one group of objects (class-agnostic).

    Parameters
    ----------
    high_score : float
        Detections at or above are "high" (first stage, may start tracks).
    low_score : float
        Detections in ``[low_score, high_score)`` only extend tracked tracks.
    new_track_score : float
        A high detection starts a track only from this score.
    buffer : int
        Frames a lost track waits to be found again.
    new_id : callable
        Returns the next free track id.
    """

    MATCH_IOU = 0.2  # ByteTrack's match_thresh 0.8 on the 1 - IoU distance
    LOW_MATCH_IOU = 0.5
    UNCONFIRMED_IOU = 0.3

    def __init__(self, high_score: float, low_score: float, new_track_score: float,
                 buffer: int, new_id: Callable[[], int]) -> None:
        self.high = high_score
        self.low = low_score
        self.new_score = new_track_score
        self.buffer = buffer
        self.new_id = new_id
        self.kf = _Kalman()
        self.tracks: list[_STrack] = []
        self.frame = 0

    def _hit(self, t: _STrack, box: Box, score: float, cls: int) -> None:
        t.mean, t.cov = self.kf.update(t.mean, t.cov, _xyxy_to_z(box))
        t.score, t.last_frame, t.lost = score, self.frame, False
        t.votes[cls] += 1
        t.hits += 1

    def update(self, boxes: Sequence[Box], scores: Sequence[float],
               classes: Sequence[int]) -> list[TrackOut]:
        """Advance one frame with its detections (pixels, scores, class ids).

        Returns
        -------
        list
            The confirmed tracks matched in this frame (ByteTrack's output).
        """
        self.frame += 1
        for t in self.tracks:
            t.mean, t.cov = self.kf.predict(t.mean, t.cov)
        high = [j for j, s in enumerate(scores) if s >= self.high]
        low = [j for j, s in enumerate(scores) if self.low <= s < self.high]
        confirmed = [t for t in self.tracks if t.track_id]
        unconfirmed = [t for t in self.tracks if not t.track_id]

        pairs, rest_t, rest_h = _associate(confirmed, [boxes[j] for j in high], self.MATCH_IOU)
        for ti, k in pairs:
            self._hit(confirmed[ti], boxes[high[k]], scores[high[k]], classes[high[k]])
        still = [confirmed[i] for i in rest_t if not confirmed[i].lost]
        pairs, rest_t2, _ = _associate(still, [boxes[j] for j in low], self.LOW_MATCH_IOU)
        for ti, k in pairs:
            self._hit(still[ti], boxes[low[k]], scores[low[k]], classes[low[k]])
        for i in rest_t2:
            still[i].lost = True

        left = [high[k] for k in rest_h]
        pairs, rest_u, rest_h2 = _associate(unconfirmed, [boxes[j] for j in left],
                                            self.UNCONFIRMED_IOU)
        for ti, k in pairs:
            t = unconfirmed[ti]
            self._hit(t, boxes[left[k]], scores[left[k]], classes[left[k]])
            t.track_id = self.new_id()
        dead = {id(unconfirmed[i]) for i in rest_u}
        for k in rest_h2:
            j = left[k]
            if scores[j] >= self.new_score:
                mean, cov = self.kf.initiate(_xyxy_to_z(boxes[j]))
                t = _STrack(mean, cov, Counter({classes[j]: 1}), scores[j], self.frame)
                if self.frame == 1:
                    t.track_id = self.new_id()
                self.tracks.append(t)
        self.tracks = [t for t in self.tracks if id(t) not in dead
                       and not (t.lost and self.frame - t.last_frame > self.buffer)]
        out = []
        for t in self.tracks:
            if t.track_id and not t.lost and t.last_frame == self.frame:
                (cls, n), = t.votes.most_common(1)
                out.append((t.track_id, t.box, cls, n / t.votes.total(), t.hits))
        return out
