"""A tray's dish frame and the rigid group (tracking stage, per tray).

Dishes are tracked in their tray's own coordinates, where they do not move.
The origin of those coordinates in the picture (the *dish frame*) is not tied
to the tray's box, which jumps under blur and arms: it moves with the tray's
box while the box moves plausibly, by its own velocity otherwise, and the
dishes themselves re-measure it (a rigid group): the median offset between
this frame's dish detections and the dish tracks corrects the origin, and a
tray the detector missed is moved with its dishes. In frames the detector
skipped, optical flow over the tray's region moves it (:class:`OpticalFlow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from edge.track.evidence import Box, DishRecord, Point, centre

BOX_JUMP = 0.1  # a tray box moving this share of a tray width off the dish frame's pace jumped
ICP_GATES = (0.3, 0.12)  # dish-to-track gates of the rigid-group fit, in tray widths
FLOW_SCALE = 2  # optical flow runs on the frame at half size
FLOW_CORNERS = 40
FLOW_MIN_POINTS = 6


DishDetection = tuple[Box, int, float]
"""A dish detection: ``(box x1 y1 x2 y2 in pixels, class id, score)``."""


def median_rows(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Column-wise median of a few rows (np.median costs ~80 us on tiny arrays)."""
    n = len(a)
    if n == 1:
        return np.asarray(a[0], np.float64)
    srt = np.sort(a, axis=0)
    m = n // 2
    return np.asarray(srt[m] if n % 2 else (srt[m - 1] + srt[m]) / 2.0, np.float64)


@dataclass
class DishFrame:
    """Where a tray's dish coordinates sit in the picture.

    Attributes
    ----------
    origin : np.ndarray or None
        ``(2,)`` this frame's origin, pixels (None before the first frame).
    velocity : np.ndarray
        ``(2,)`` smoothed motion of the origin, pixels per frame.
    predicted : np.ndarray
        ``(2,)`` where the origin should be this frame, before the dishes speak.
    box_centre : np.ndarray or None
        ``(2,)`` the tray box's centre in the frame the origin was last predicted.
    seq : int
        That frame's number (-1 before the first).
    elapsed : int
        Frames from that frame to this one: more than 1 when the tray was lost
        for a while (its track counted down to re-identification).
    """

    origin: Point | None = None
    velocity: Point = field(default_factory=lambda: np.zeros(2))
    predicted: Point = field(default_factory=lambda: np.zeros(2))
    box_centre: Point | None = None
    seq: int = -1
    elapsed: int = 1

    def current(self) -> Point:
        """The origin, or its prediction before there is one."""
        return self.origin if self.origin is not None else self.predicted

    def predict(self, box: Box, typical_width: float, seq: int | None = None) -> None:
        """Where the origin should be in frame ``seq``: moved like the tray's box
        when the box moves plausibly, else by its own velocity. After a gap (the
        tray was lost for ``elapsed`` frames and is back) both are carried over
        the whole gap, and a box may stray ``elapsed`` times as far: a tray lost
        at speed is found where it went, not where it was (``seq`` None: every
        call is the next frame)."""
        c = centre(box)
        if seq is not None:
            self.elapsed = seq - self.seq if 0 <= self.seq < seq else 1
            self.seq = seq
        if self.origin is None:
            self.predicted = c
        else:
            moved = self.velocity if self.elapsed == 1 else self.velocity * self.elapsed
            pred = self.origin + moved
            if self.box_centre is not None:
                delta = c - self.box_centre
                limit = BOX_JUMP * max(typical_width, float(box[2] - box[0]), 1.0)
                if float(np.linalg.norm(delta - moved)) <= limit * self.elapsed:
                    pred = self.origin + delta
            self.predicted = pred
        self.box_centre = c

    def commit(self, origin: Point) -> None:
        """Commit this frame's origin and update its velocity (per frame)."""
        if self.origin is not None:
            step = origin - self.origin
            if self.elapsed > 1:
                step = step / self.elapsed
            self.velocity = 0.6 * self.velocity + 0.4 * step
        self.origin = origin


def rigid_shift(frame: DishFrame, live: Sequence[DishRecord], dets: Sequence[DishDetection],
                width: float, tray_detected: bool) -> Point | None:
    """How far the dishes say the dish frame is off its prediction, or None.

    The dish detections are matched to the tray's dish tracks by centre
    distance around the predicted origin, under a shrinking gate (two rounds
    of iterative closest points, :data:`ICP_GATES` tray widths); their median
    offset is the answer. A detected tray needs two matched dishes (one when it
    has only one), an undetected tray one.

    Parameters
    ----------
    frame : DishFrame
        The tray's dish frame, predicted for this frame.
    live : sequence of DishRecord
        The tray's live dish tracks (boxes in tray coordinates).
    dets : sequence of DishDetection
        This frame's dish detections on the tray (picture coordinates).
    width : float
        The tray's width, pixels.
    tray_detected : bool
        Whether the tray itself was detected this frame.
    """
    need = 1 if not tray_detected else min(2, len(live))
    if not live or len(dets) < need:
        return None
    pred = frame.predicted
    det_c = np.stack([centre(d[0]) for d in dets]) - pred
    rec_c = np.stack([centre(r.rel_box) for r in live])
    # a dish matches detections of its own class: with the tray cut by the
    # picture's edge, the nearest detection is often another dish
    other_class = (np.array([int(r.votes.argmax()) for r in live])[:, None]
                   != np.array([d[1] for d in dets])[None, :])
    penalty = np.where(other_class, ICP_GATES[0] * width, 0.0)
    shift = np.zeros(2)
    for gate in (ICP_GATES[0] * width, ICP_GATES[1] * width):
        d = np.linalg.norm(rec_c[:, None, :] + shift - det_c[None, :, :], axis=2) + penalty
        j = d.argmin(axis=1)
        ok = d[np.arange(len(live)), j] <= gate
        if int(ok.sum()) < need:
            return None
        shift = shift + median_rows(det_c[j[ok]] - (rec_c[ok] + shift))
    return shift


class OpticalFlow:
    """Median optical flow inside a box between consecutive frames of one stream.

    Grey half-size frames are made only when flow is asked for (frames are
    immutable, so keeping the previous picture costs nothing).

    Parameters
    ----------
    enabled : bool
        False: :meth:`box_motion` always answers None.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._prev_image: npt.NDArray[np.uint8] | None = None
        self._prev_gray: npt.NDArray[np.uint8] | None = None
        self._image: npt.NDArray[np.uint8] | None = None
        self._gray: npt.NDArray[np.uint8] | None = None

    def start(self, image: npt.NDArray[np.uint8]) -> None:
        """Begin a frame (its picture is the one flow is measured to)."""
        self._image, self._gray = image, None

    def finish(self) -> None:
        """End the frame: its picture becomes the previous one."""
        self._prev_image, self._prev_gray = self._image, self._gray

    def _grey(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
        if not self.enabled or image.ndim != 3 or image.shape[0] < 32:
            return None
        small = cv2.resize(image, (image.shape[1] // FLOW_SCALE, image.shape[0] // FLOW_SCALE),
                           interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)

    def box_motion(self, box: Box) -> Point | None:
        """Median flow of corners inside ``box`` (pixels) from the previous frame to
        this one, or None without enough trackable texture."""
        if self._gray is None and self._image is not None:
            self._gray = self._grey(self._image)
        if self._prev_gray is None and self._prev_image is not None:
            self._prev_gray = self._grey(self._prev_image)
        gray, prev = self._gray, self._prev_gray
        if gray is None or prev is None or prev.shape != gray.shape:
            return None
        h, w = gray.shape
        x1, y1, x2, y2 = (round(float(v) / FLOW_SCALE) for v in box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 - x1 < 16 or y2 - y1 < 16:
            return None
        corners = cv2.goodFeaturesToTrack(prev[y1:y2, x1:x2], maxCorners=FLOW_CORNERS,
                                          qualityLevel=0.01, minDistance=4)
        if corners is None or len(corners) < FLOW_MIN_POINTS:
            return None
        pts = (corners.reshape(-1, 2) + np.array([x1, y1], np.float32)).reshape(-1, 1, 2)
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(
            prev, gray, pts, None, winSize=(15, 15), maxLevel=2)
        ok = status.reshape(-1) == 1
        if int(ok.sum()) < FLOW_MIN_POINTS:
            return None
        moved = (nxt.reshape(-1, 2)[ok] - pts.reshape(-1, 2)[ok]).astype(np.float64)
        return median_rows(moved) * FLOW_SCALE
