"""Tray motion from video: direction, typical speed and the counter region.

The measuring half of ``dishtracker calibrate scene`` (:mod:`calibration.scene`
reads the video and writes the result). CPU only: sparse Lucas-Kanade optical
flow on a downscaled grey picture.

Per frame pair, corners are found only where the picture changed (frame
difference), tracked forward and back (a corner whose round trip misses by
more than :data:`FB_MAX_PX` is dropped), and those that moved faster than
:data:`MIN_SPEED_PX_S` vote: the frame's *dominant flow* is the component-wise
median of their displacements, weighted by how many voted. Over the whole
video:

* **direction** is the weighted median of the per-frame directions (two
  passes: a median of unit vectors, then the median angle of the frames
  within :data:`KEEP_DEG` of it). Hands reaching in, trays pulled back and
  the odd mistracked frame are outliers that a median ignores;
* **speed** is the median, over the frames moving along that direction, of
  the dominant flow's component along it. Standing trays (stop-and-go) give
  no moving corners, so stops never pull the figure down;
* the **counter region** is the rectangle, aligned with the direction, that
  holds the moving corners (robust percentiles plus a margin for the tray's
  rim), clipped to the picture;
* the **checkout line** is perpendicular to the direction at ``line_at`` (0.62,
  the site default) of the region's length from where trays enter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from edge.errors import DishTrackerError

if TYPE_CHECKING:
    from edge.sim.scene import Scene

WORK_WIDTH = 320  # px; flow runs on pictures at most this wide
DIFF_LEVEL = 14  # grey levels: a pixel changed (sensor noise and H.264 stay below)
MIN_SPEED_PX_S = 25.0  # source px/s at 640 px width: slower corners do not vote
FB_MAX_PX = 0.6  # work px: forward-backward error allowed for a tracked corner
MIN_VOTES = 6  # moving corners a frame needs for a dominant flow
KEEP_DEG = 30.0  # frames further than this from the direction do not count
MIN_MOVING_S = 1.0  # seconds of moving frames needed for a result
LINE_AT = 0.62  # the default checkout line: 62 % of the way across (edge.billing.line)

Point = tuple[float, float]


class NoMotionError(DishTrackerError):
    """Too few frames with moving trays to measure the scene."""


@dataclass(frozen=True, slots=True)
class SceneMotion:
    """What :class:`MotionEstimator` measured, in source pixels.

    Attributes
    ----------
    direction : (float, float)
        Unit vector of tray travel (x right, y down).
    speed_px_s : float
        Median speed along ``direction`` over the moving frames, px/s.
    region : tuple of (float, float)
        Counter region, a convex polygon ``(n, 2)`` inside the picture.
    line : ((float, float), (float, float))
        Proposed checkout line across the region.
    frames : int
        Frames analysed.
    moving_frames : int
        Frames whose dominant flow went along ``direction`` (the speed's sample).
    direction_spread_deg : float
        1.4826 x the weighted median absolute deviation of those frames'
        directions, degrees.
    seconds : float
        Video time analysed.
    """

    direction: Point
    speed_px_s: float
    region: tuple[Point, ...]
    line: tuple[Point, Point]
    frames: int
    moving_frames: int
    direction_spread_deg: float
    seconds: float


def weighted_median(values: npt.ArrayLike, weights: npt.ArrayLike) -> float:
    """The value where the cumulative weight reaches half of the total."""
    v = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _lucas_kanade(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8],
                  pts: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32],
                                                         npt.NDArray[np.uint8]]:
    """Pyramidal LK from ``a`` to ``b``: new positions ``(k, 1, 2)`` and status ``(k, 1)``."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(
        a, b, pts, None,
        winSize=(15, 15), maxLevel=3, criteria=criteria)
    return np.asarray(moved, np.float32), np.asarray(status, np.uint8)


def _wrap_deg(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return (a + 180.0) % 360.0 - 180.0


class MotionEstimator:
    """Feed frames in order with :meth:`add`; :meth:`result` measures the scene.

    Parameters
    ----------
    width, height : int
        Source picture size in pixels.
    line_at : float
        Where the checkout line goes along the region, 0 (entry) .. 1 (exit).
    """

    def __init__(self, width: int, height: int, *, line_at: float = LINE_AT) -> None:
        if not 0.0 < line_at < 1.0:
            raise ValueError(f"line_at must be in (0, 1), got {line_at}")
        self.width, self.height = int(width), int(height)
        self.line_at = line_at
        self.scale = min(1.0, WORK_WIDTH / self.width)
        self._work_size = (max(16, round(self.width * self.scale)),
                           max(16, round(self.height * self.scale)))
        # speeds scale with the picture: the same counter filmed at 1280 px moves 2x the px/s
        self.min_speed = MIN_SPEED_PX_S * self.width / 640.0
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
        self._prev: npt.NDArray[np.uint8] | None = None
        self._prev_t = 0.0
        self._first_t: float | None = None
        self.frames = 0
        self._flows: list[tuple[float, float, int]] = []  # per voting frame: vx, vy (px/s), votes
        self._points: list[npt.NDArray[np.float32]] = []  # per voting frame: (k, 4) x, y, vx, vy
        self.best_votes = 0  # most moving corners in one frame (the preview's frame)

    def _grey(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if self.scale < 1.0:
            grey = cv2.resize(grey, self._work_size, interpolation=cv2.INTER_AREA)
        return np.asarray(grey, np.uint8)

    def add(self, image: npt.NDArray[np.uint8], t: float) -> int:
        """Take the next frame.

        Parameters
        ----------
        image : np.ndarray
            ``(height, width, 3)`` BGR (or ``(height, width)`` grey) uint8.
        t : float
            Its presentation time in seconds (increasing).

        Returns
        -------
        int
            Corners that voted for this frame's dominant flow (0: no motion).
        """
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, expected "
                             f"{self.width}x{self.height}")
        cur = self._grey(image)
        prev, prev_t = self._prev, self._prev_t
        self._prev, self._prev_t = cur, t
        self.frames += 1
        if self._first_t is None:
            self._first_t = t
        if prev is None or t <= prev_t:
            return 0
        return self._pair(prev, cur, t - prev_t)

    def _pair(self, prev: npt.NDArray[np.uint8], cur: npt.NDArray[np.uint8], dt: float) -> int:
        changed = cv2.absdiff(prev, cur)
        mask = cv2.dilate((changed > DIFF_LEVEL).astype(np.uint8) * 255, self._kernel)
        if cv2.countNonZero(mask) < 50:
            return 0
        found = cv2.goodFeaturesToTrack(prev, maxCorners=400, qualityLevel=0.01, minDistance=4,
                                        mask=mask, blockSize=5)
        if found is None or len(found) < MIN_VOTES:
            return 0
        p0 = np.asarray(found, np.float32)
        p1, st1 = _lucas_kanade(prev, cur, p0)
        back, st2 = _lucas_kanade(cur, prev, p1)
        a, b = p0.reshape(-1, 2), p1.reshape(-1, 2)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1)
        ok &= np.linalg.norm(back.reshape(-1, 2) - a, axis=1) < FB_MAX_PX
        v = (b - a) / (dt * self.scale)  # source px/s
        ok &= np.linalg.norm(v, axis=1) > self.min_speed
        votes = int(ok.sum())
        if votes < MIN_VOTES:
            return 0
        v = v[ok]
        self._flows.append((float(np.median(v[:, 0])), float(np.median(v[:, 1])), votes))
        self._points.append(np.hstack([a[ok] / self.scale, v]).astype(np.float32))
        self.best_votes = max(self.best_votes, votes)
        return votes

    def result(self, min_moving_s: float = MIN_MOVING_S) -> SceneMotion:
        """Measure direction, speed, region and line from the frames so far.

        Raises
        ------
        NoMotionError
            Fewer than ``min_moving_s`` seconds' worth of frames with moving
            trays (at least 5 frames).
        """
        seconds = max(0.0, self._prev_t - (self._first_t or 0.0))
        fps = (self.frames - 1) / seconds if seconds > 0 else 0.0
        need = max(5, math.ceil(min_moving_s * fps))
        if len(self._flows) < need:
            raise NoMotionError(
                f"no trays moved in {seconds:.0f} s: {len(self._flows)} frame(s) with motion, "
                f"{need} needed; film the counter while trays pass (or give more --seconds)")
        f = np.asarray(self._flows, np.float64)
        vx, vy, w = f[:, 0], f[:, 1], f[:, 2]
        speed = np.hypot(vx, vy)
        angle = np.degrees(np.arctan2(vy, vx))
        a0 = math.degrees(math.atan2(weighted_median(vy / speed, w),
                                     weighted_median(vx / speed, w)))
        keep = np.abs(_wrap_deg(angle - a0)) < KEEP_DEG
        a1 = a0 + weighted_median(_wrap_deg(angle[keep] - a0), w[keep])
        off = _wrap_deg(angle - a1)
        keep = np.abs(off) < KEEP_DEG
        if keep.sum() < need:
            raise NoMotionError(
                f"no consistent tray direction in {seconds:.0f} s: only {int(keep.sum())} "
                f"frame(s) move within {KEEP_DEG:g} degrees of the median direction")
        spread = 1.4826 * weighted_median(np.abs(off[keep]), w[keep])
        ux, uy = math.cos(math.radians(a1)), math.sin(math.radians(a1))
        along = vx[keep] * ux + vy[keep] * uy
        region = self._region((ux, uy), [p for p, k in zip(self._points, keep, strict=True) if k])
        return SceneMotion(
            direction=(ux, uy), speed_px_s=float(np.median(along)), region=region,
            line=checkout_line(region, (ux, uy), self.line_at, (self.width, self.height)),
            frames=self.frames, moving_frames=int(keep.sum()),
            direction_spread_deg=float(spread), seconds=seconds)

    def _region(self, direction: Point,
                points: list[npt.NDArray[np.float32]]) -> tuple[Point, ...]:
        """Direction-aligned rectangle of the corners moving along ``direction``, clipped."""
        pts = np.concatenate(points).astype(np.float64)
        u = np.asarray(direction)
        n = np.array([-u[1], u[0]])
        sp = np.hypot(pts[:, 2], pts[:, 3])
        along_ok = (pts[:, 2] * u[0] + pts[:, 3] * u[1]) > np.cos(np.radians(KEEP_DEG)) * sp
        xy = pts[along_ok, :2] if along_ok.sum() >= 10 else pts[:, :2]
        centre = np.array([self.width / 2, self.height / 2])
        a = (xy - centre) @ u
        c = (xy - centre) @ n
        a_lo, a_hi = np.percentile(a, [0.5, 99.5])
        c_lo, c_hi = np.percentile(c, [1.0, 99.0])
        # corners sit inside the tray's rim and dishes: pad by a share of the width
        pad = 0.08 * (c_hi - c_lo) + 4.0
        a_lo, a_hi = a_lo - 4.0, a_hi + 4.0
        c_lo, c_hi = c_lo - pad, c_hi + pad
        rect = np.array([centre + a_lo * u + c_lo * n, centre + a_hi * u + c_lo * n,
                         centre + a_hi * u + c_hi * n, centre + a_lo * u + c_hi * n], np.float32)
        frame = np.array([[0, 0], [self.width, 0], [self.width, self.height], [0, self.height]],
                         np.float32)
        area, clipped = cv2.intersectConvexConvex(rect, frame)
        poly = clipped.reshape(-1, 2) if area > 0 and clipped is not None else rect
        return tuple((round(float(x), 2), round(float(y), 2)) for x, y in poly)


def checkout_line(region: tuple[Point, ...], direction: Point, at: float,
                  size: tuple[int, int]) -> tuple[Point, Point]:
    """The line perpendicular to ``direction`` at fraction ``at`` along ``region``.

    Parameters
    ----------
    region : tuple of (float, float)
        Counter polygon, source pixels.
    direction : (float, float)
        Unit vector of travel.
    at : float
        0 = where trays enter the region, 1 = where they leave.
    size : (int, int)
        Picture ``(width, height)``; the segment is clipped to it.

    Returns
    -------
    tuple
        Two points spanning the region across (clipped to the picture).
    """
    pts = np.asarray(region, np.float64)
    u = np.asarray(direction, np.float64)
    n = np.array([-u[1], u[0]])
    a, c = pts @ u, pts @ n
    along = a.min() + at * (a.max() - a.min())
    ends = [along * u + c.min() * n, along * u + c.max() * n]
    p, q = _clip_segment(ends[0], ends[1], size)
    return ((round(float(p[0]), 2), round(float(p[1]), 2)),
            (round(float(q[0]), 2), round(float(q[1]), 2)))


def _clip_segment(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64],
                  size: tuple[int, int]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Liang-Barsky clip of segment ``p``-``q`` to ``[0, w] x [0, h]`` (unchanged if outside)."""
    d = q - p
    t0, t1 = 0.0, 1.0
    for pk, qk in ((-d[0], p[0]), (d[0], size[0] - p[0]), (-d[1], p[1]), (d[1], size[1] - p[1])):
        if abs(pk) < 1e-12:
            if qk < 0:
                return p, q
            continue
        r = qk / pk
        if pk < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
    if t0 >= t1:
        return p, q
    return p + t0 * d, p + t1 * d


def simulated_motion(scene: Scene, n_frames: int) -> tuple[float, float]:
    """The simulator's truth for :class:`MotionEstimator`: direction (deg) and speed (px/s).

    The direction is the counter's axis in the picture; the speed is the
    median, over frames with a tray moving forward (centre in the picture,
    faster than :data:`MIN_SPEED_PX_S`), of that frame's median tray speed:
    the typical speed while moving, stops and pull-backs excluded.

    Parameters
    ----------
    scene : Scene
        A fresh scene (only its plans are used; nothing is rendered).
    n_frames : int
        Frames of the sequence.
    """
    scene.plan_until(n_frames)
    min_speed = MIN_SPEED_PX_S * scene.width / 640.0
    per_frame = []
    for f in range(1, n_frames):
        speeds = []
        for plan in scene.plans:
            if not plan.start < f <= plan.end:
                continue
            i = f - plan.start
            dx = plan.xs[i] - plan.xs[i - 1]
            v = math.hypot(dx, plan.ys[i] - plan.ys[i - 1]) * scene.fps
            x, y = scene.to_picture(float(plan.xs[i]), float(plan.ys[i]))
            if dx > 0 and v > min_speed and 0 <= x <= scene.width and 0 <= y <= scene.height:
                speeds.append(v)
        if speeds:
            per_frame.append(float(np.median(speeds)))
    dx, dy = scene.direction
    return math.degrees(math.atan2(dy, dx)), float(np.median(per_frame))
