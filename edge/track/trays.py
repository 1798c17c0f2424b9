"""Tray association: tray detections become trays with stable ids (tracking stage).

Trays are tracked by one Norfair tracker in picture coordinates with
:class:`TrayMotionFilterFactory` (a constant-velocity filter whose velocity
across the counter's direction is damped: trays slide along the counter) and
Norfair's re-identification, so a tray lost for a moment under blur or arms
comes back with its id and its dishes. A tray detection cut by the picture's
edge is completed from the typical tray size, a small "tray" (a plate) is
not a tray, overlapping tray boxes are one tray (:func:`tray_nms`), and two
tray tracks that come to overlap become one (:meth:`TrayAssociation.merge_duplicates`).

Each :class:`Tray` owns its dish records (:mod:`edge.track.evidence`), its
dish frame (:mod:`edge.track.dish_frame`) and its lane in the shared dish
tracker (:mod:`edge.track.lanes`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from norfair import Detection as NfDetection
from norfair import Tracker as NfTracker
from norfair.filter import FilterFactory, OptimizedKalmanFilter

from edge.config import TrackerConfig
from edge.geometry import box_iou
from edge.track import norfair_adapter as nfa
from edge.track.dish_frame import DishFrame
from edge.track.evidence import Box, DishRecord, shift4

TRAY_REID_FRAMES = 40  # frames a lost tray can come back with its id
TRAY_NMS_IOU = 0.3
TRAY_NMS_IOA = 0.6
TRAY_DUPLICATE_IOU = 0.35  # two tray tracks overlapping this much are one tray
TRAY_MIN_AREA_SHARE = 0.35  # tray boxes below this share of the typical area are not trays
REID_NEVER = 1e6

MayReturn = Callable[[float, float], bool]
"""``(x, y) -> bool``: may a closed tray be re-identified with its centre there?"""


class _DampedKalman(OptimizedKalmanFilter):
    """Norfair's optimized Kalman filter with the velocity across the counter
    damped after every update (trays slide along the counter)."""

    def __init__(self, dim_x: int, dim_z: int, across: tuple[float, float], damping: float,
                 **kw: Any) -> None:
        super().__init__(dim_x, dim_z, **kw)
        self._across = np.array(across, np.float64)
        self._damping = damping

    def update(self, detection_points_flatten: Any, R: Any = None,  # noqa: N803
               H: Any = None) -> None:  # noqa: N803 (Norfair's names)
        # norfair-enough 2.4.3 leaves OptimizedKalmanFilter.update unannotated
        super().update(detection_points_flatten, R, H)  # type: ignore[no-untyped-call]
        v = self.x[self.dim_z:].reshape(-1, 2)
        side = v @ self._across
        v -= self._damping * side[:, None] * self._across[None, :]
        self.x[self.dim_z:] = v.reshape(-1, 1)


class TrayMotionFilterFactory(FilterFactory):
    """Filters for tray boxes: constant velocity along ``direction``, damped across it.

    Parameters
    ----------
    direction : (float, float)
        The counter's direction of travel (any length).
    damping : float
        Share of the across-counter velocity removed at each update (0-1).
    """

    def __init__(self, direction: tuple[float, float], damping: float = 0.5,
                 r: float = 4.0, q: float = 0.1) -> None:
        n = math.hypot(*direction) or 1.0
        self.across = (-direction[1] / n, direction[0] / n)
        self.damping = damping
        self.r, self.q = r, q

    def create_filter(self, initial_detection: npt.NDArray[np.float64]) -> _DampedKalman:
        dim_z = initial_detection.size
        f = _DampedKalman(2 * dim_z, dim_z, self.across, self.damping, q=self.q, r=self.r)
        f.x[:dim_z] = initial_detection.reshape(-1, 1)
        return f


@dataclass(eq=False)
class Tray:
    """One physical tray: its dish records, dish frame and lane.

    ``records`` maps the tray's live dish tracks (Norfair objects) to their
    records; ``archive`` holds records of ended tracks; ``pending`` holds
    dishes seen before the tray (loose record, its copy in tray coordinates)
    that no dish track of the tray has continued yet.
    """

    tid: int
    slot: int  # the tray's lane in the shared dish tracker's coordinates
    first_seen: float = 0.0  # capture time of its first frame (the frame's clock)
    records: dict[Any, DishRecord] = field(default_factory=dict)
    archive: list[DishRecord] = field(default_factory=list)
    pending: list[tuple[DishRecord, DishRecord]] = field(default_factory=list)
    box: Box = field(default_factory=lambda: np.zeros(4))
    frame: DishFrame = field(default_factory=DishFrame)
    closed: bool = False  # told by billing: not to be re-identified where it may not return
    # how far the dishes seen frame after frame moved on the tray since it was
    # first seen (tray coordinates, cumulative, by frame; ``billing.noise_guard``):
    # a dish hidden meanwhile reappears that far from where it was last seen
    drift_seq: list[int] = field(default_factory=list)  # frames logged, ascending
    drift: list[tuple[float, float]] = field(default_factory=list)

    def log_drift(self, seq: int, dx: float, dy: float) -> None:
        """Add this frame's move of the dishes seen to the drift log."""
        x, y = self.drift[-1] if self.drift else (0.0, 0.0)
        self.drift_seq.append(seq)
        self.drift.append((x + dx, y + dy))

    def drift_at(self, seq: int) -> npt.NDArray[np.float64]:
        """The cumulative drift at frame ``seq`` (as last logged by then)."""
        k = bisect.bisect_right(self.drift_seq, seq)
        return np.array(self.drift[k - 1] if k else (0.0, 0.0))

    def evidence(self) -> int:
        """Dish detections the tray has gathered (which of two duplicates to keep)."""
        return sum(r.hits for r in self.records.values()) + sum(r.hits for r in self.archive)

    def absorb(self, drop: Tray) -> None:
        """Take over a duplicate's dishes (moved into this tray's dish frame)."""
        keep = self
        if keep.frame.origin is not None and drop.frame.origin is not None:
            shift = shift4(drop.frame.origin - keep.frame.origin)
        else:
            shift = np.zeros(4)
        for rec in (*drop.records.values(), *drop.archive):
            if rec.gid:
                rec.alive = False
                rec.rel_box = rec.rel_box + shift
                keep.archive.append(rec)
        keep.pending += drop.pending
        keep.first_seen = min(keep.first_seen, drop.first_seen)


def box_points(box: Any) -> npt.NDArray[np.float64]:
    """``(2, 2)`` Norfair points of an ``x1 y1 x2 y2`` box."""
    return np.array([[box[0], box[1]], [box[2], box[3]]], np.float64)


def tray_nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
             ) -> npt.NDArray[np.int64]:
    """Trays do not overlap: of tray boxes that overlap by IoU :data:`TRAY_NMS_IOU`
    keep the best scored, and of a box that covers :data:`TRAY_NMS_IOA` of a
    smaller one keep the larger (a blurred tray is often also seen as a part,
    and a round plate on it sometimes as a small tray)."""
    if len(boxes) < 2:
        return np.arange(len(boxes))
    b = np.asarray(boxes, np.float64)
    iou = box_iou(b, b)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(len(b), bool)
    for i in np.argsort(-scores):
        if not alive[i]:
            continue
        for j in range(len(b)):
            if j == i or not alive[j]:
                continue
            inter = iou[i, j] * (area[i] + area[j]) / (1.0 + iou[i, j])
            if inter >= TRAY_NMS_IOA * min(area[i], area[j]):
                small = i if area[i] < area[j] else j
                alive[small] = False
                if small == i:
                    break
            elif iou[i, j] >= TRAY_NMS_IOU:
                alive[j] = False
    return np.flatnonzero(alive).astype(np.int64)


def _reid_distance(new: Any, old: Any) -> float:
    """Centre distance of a new tray track to a lost one, in tray widths."""
    a, b = new.estimate, old.estimate
    width = max(float(b[1][0] - b[0][0]), 1.0)
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)) / width)


class TrayAssociation:
    """Trays of one stream: Norfair's tray tracker and the trays it has.

    Parameters
    ----------
    config : TrackerConfig
        IoU threshold, hit counter and initialisation delay.
    direction : (float, float)
        The counter's direction of travel in the picture.
    width, height : int
        Frame size, pixels.
    may_return : callable
        Where a closed tray may be re-identified (default: anywhere).
    first_id : int
        The first tray's number (trays are numbered in order of their tracks).
    """

    def __init__(self, config: TrackerConfig, direction: tuple[float, float], *,
                 width: int, height: int, may_return: MayReturn | None = None,
                 first_id: int = 1) -> None:
        self.width, self.height = width, height
        self.may_return = may_return
        self.first_id = first_id
        self.tracker = NfTracker(
            distance_function="iou", distance_threshold=1.0 - config.iou_threshold,
            hit_counter_max=max(config.hit_counter_max, 10),
            initialization_delay=min(config.initialization_delay, config.hit_counter_max - 1),
            filter_factory=TrayMotionFilterFactory(direction),
            reid_distance_function=self._reid_distance, reid_distance_threshold=0.5,
            reid_hit_counter_max=TRAY_REID_FRAMES,
        )
        nfa.use_fast_hit(self.tracker)  # Norfair 2.3's hit on any Norfair
        self.trays: dict[Any, Tray] = {}  # Norfair tray object -> tray, in order of birth
        self.slots: dict[int, Tray] = {}
        self._next_slot = 1
        self.typical_size = (0.0, 0.0)  # running mean of whole tray boxes (w, h), px

    def detections(self, boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
                   ) -> list[NfDetection]:
        """Norfair detections of this frame's tray boxes (after :func:`tray_nms`,
        completed at the picture's edge, plates dropped)."""
        out = []
        for k in tray_nms(boxes, scores):
            whole = self._whole_box(boxes[k])
            if whole is not None:
                s = float(scores[k])
                out.append(NfDetection(points=box_points(whole),
                                       scores=np.array([s, s], np.float64)))
        return out

    def retune(self, config: TrackerConfig) -> None:
        """New settings from the next frame on; the trays in view keep their tracks."""
        nfa.retune(self.tracker, distance_threshold=1.0 - config.iou_threshold,
                   hit_counter_max=max(config.hit_counter_max, 10),
                   initialization_delay=config.initialization_delay)

    def update(self, dets: list[NfDetection] | None, period: int, capture_time: float
               ) -> list[Any]:
        """One Norfair step (``dets`` None: the frame was not detected); new trays
        are registered. Returns the active tray objects."""
        objs = (self.tracker.update(dets, period=period) if dets is not None
                else self.tracker.update(None))
        nfa.clear_reid_countdowns(self.tracker)
        for obj in objs:
            if obj not in self.trays:
                tray = Tray(int(obj.id or 0) + self.first_id - 1, self._next_slot,
                            first_seen=capture_time)
                self._next_slot += 1
                self.trays[obj] = tray
                self.slots[tray.slot] = tray
        return list(objs)

    def remove(self, obj: Any) -> Tray:
        """Forget a tray (its track ended); returns it."""
        tray = self.trays.pop(obj)
        del self.slots[tray.slot]
        return tray

    def _reid_distance(self, new: Any, old: Any) -> float:
        """Norfair's re-identification of a lost tray, except that a closed tray
        never comes back where ``may_return`` says no (before the checkout line:
        that is the next tray)."""
        tray = self.trays.get(old)
        if tray is not None and tray.closed and self.may_return is not None:
            c = np.asarray(new.estimate, np.float64).mean(axis=0)
            if not self.may_return(float(c[0]), float(c[1])):
                return REID_NEVER
        return _reid_distance(new, old)

    def merge_duplicates(self, active: set[Any]) -> tuple[set[Any], list[tuple[Tray, Tray]]]:
        """Trays do not overlap: two tray tracks on one tray (a detector that sees
        a blurred tray as two offset boxes) become one. The one with more dish
        evidence keeps its id; the other's dishes join it (moved into its dish
        frame). Returns the active objects left and the ``(kept, dropped)`` pairs."""
        objs = sorted(active, key=lambda o: self.trays[o].tid)
        if len(objs) < 2:
            return active, []
        boxes = np.stack([nfa.position(o) for o in objs])
        iou = box_iou(boxes, boxes)
        gone: set[Any] = set()
        merges = []
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                a, b = objs[i], objs[j]
                if a in gone or b in gone or iou[i, j] < TRAY_DUPLICATE_IOU:
                    continue
                ta, tb = self.trays[a], self.trays[b]
                keep, drop = (a, b) if ta.evidence() >= tb.evidence() else (b, a)
                self.trays[keep].absorb(self.trays[drop])
                nfa.end(drop)  # Norfair forgets it at the next update
                merges.append((self.trays[keep], self.remove(drop)))
                gone.add(drop)
        return active - gone, merges

    def _whole_box(self, box: npt.NDArray[np.float32]) -> Box | None:
        """The whole tray behind a tray detection, or None if it is no tray.

        A tray entering or leaving the picture is cut by its edge; its box
        centre then slides over the tray, and dishes tracked relative to it
        would drift. The cut side is put back from the typical tray size (a
        running mean over boxes that touch no edge). A whole box far smaller
        than the typical tray is a plate taken for a tray: None.
        """
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
        edge = 2.0
        cut_l, cut_t = x1 <= edge, y1 <= edge
        cut_r, cut_b = x2 >= self.width - edge, y2 >= self.height - edge
        tw, th = self.typical_size
        if not (cut_l or cut_r or cut_t or cut_b):
            if tw > 0 and w * h < TRAY_MIN_AREA_SHARE * tw * th:
                return None
            self.typical_size = ((w, h) if tw <= 0
                                 else (0.95 * tw + 0.05 * w, 0.95 * th + 0.05 * h))
            return np.array([x1, y1, x2, y2])
        if tw > 0:
            if cut_l and not cut_r and w < tw:
                x1 = x2 - tw
            elif cut_r and not cut_l and w < tw:
                x2 = x1 + tw
            if cut_t and not cut_b and h < th:
                y1 = y2 - th
            elif cut_b and not cut_t and h < th:
                y2 = y1 + th
        return np.array([x1, y1, x2, y2])
