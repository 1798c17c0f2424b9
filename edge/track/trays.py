"""Tray-aware tracking and billing: dishes move with the tray they sit on.

Norfair stays the association engine; the tray-motion model is plugged in
around it:

* **Trays** are tracked by one Norfair tracker in image coordinates with
  :class:`TrayMotionFilterFactory` (a constant-velocity filter whose velocity
  across the counter's direction is damped: trays slide along the counter)
  and Norfair's re-identification, so a tray lost for a moment under blur or
  arms comes back with its id, dishes and bill state.
* **Dishes** (and clutter) of a tray are tracked by a Norfair tracker of
  their own *in the tray's coordinates* (box centre relative to the tray's
  centre). On a tray a dish does not move, so its filter predicts it exactly
  through a hand's occlusion however the tray moves, and it is re-associated
  when it reappears, with no new id.
* **Rigid group.** The dishes of a tray re-measure the tray: the median
  offset between the dish detections and their tracks (in tray coordinates)
  corrects the tray's position, fully when the tray itself was not detected
  (blur, a hand on its edge), half when it was.
* Dishes on no tray are tracked in image coordinates (``loose``) and never
  billed.

Classes are confidence-weighted votes (score squared: the clearest views
decide between look-alikes) over a dish's whole life. Before billing,
fragments of one dish (a track that died under a hand and a later one at the
same place on the tray) are merged, and so are duplicates. A tray's bill
closes once, when its centre crosses the checkout line (with hysteresis) or
when its track ends at or past the line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import structlog
from norfair import Detection as NfDetection  # type: ignore[attr-defined]
from norfair import Tracker as NfTracker  # type: ignore[attr-defined]
from norfair.filter import (
    FilterFactory,
    NoFilterFactory,
    OptimizedKalmanFilter,
    OptimizedKalmanFilterFactory,
)

from edge.billing.line import BEFORE, PAST, UNKNOWN, CheckoutLine
from edge.billing.menu import Menu
from edge.billing.model import Bill, BillerStep, BillItem, TrayState, round_money
from edge.config import SiteConfig, StreamConfig, TrackerConfig
from edge.detect.decode import nms
from edge.frames import Detections, Frame, Track
from edge.geometry import box_iou
from edge.track.fast_hit import use_fast_hit

log = structlog.get_logger()

TRAY_KEY = "tray"
TRAY_MARGIN = 0.0  # a dish belongs to a tray whose box, grown by this share, holds its centre
DISH_HIT_COUNTER_MAX = 100  # frames a dish on a live tray survives unseen (5 s at 20 fps)
TRAY_REID_FRAMES = 40  # frames a lost tray can come back with its id
SLOT_PX = 100_000.0  # lane width of one tray in the shared dish tracker, pixels
FLOW_SCALE = 2  # optical flow runs on the frame at half size
FLOW_CORNERS = 40
FLOW_MIN_POINTS = 6
BOX_JUMP = 0.1  # a tray box moving this share of a tray width off the dish frame's pace jumped
ICP_GATES = (0.3, 0.12)  # dish-to-track gates of the rigid-group fit, in tray widths
STATE_EVERY = 5  # frames between refreshes of an open tray's bill lines (live view)
MIN_VOTE_MASS = 0.6  # sum of squared scores a dish needs to be billed (weak ghosts are not)
MERGE_IOU = 0.35  # fragments of one dish overlap this much in tray coordinates
FRAGMENT_DISTANCE = 1.5  # a same-class successor within this many dish sizes is a fragment
EARLY_FRAGMENT_SHARE = 0.4  # of a tray's width: how far an early fragment may sit
CLEAREST_VIEWS = 5  # top scores kept per class and dish
RUNNER_UP_SHARE = 0.25  # above this share of the vote the clearest views decide
# velocity variance ((px/frame)^2) a loose dish's Kalman filter starts with: a tray
# moves up to ~20 px a frame; with Norfair's default (1) the velocity takes
# seconds to catch up, the estimate lags behind a fast dish, and its track
# splits into a new one every few frames (and is adopted by its tray where it
# was, not where it is: billed twice)
LOOSE_VEL_VARIANCE = 100.0
HANDOVER_FRAMES = 5  # a loose track may outlive the tray track that took its dish over by this
GHOST_SHARE = 4  # a record with under a quarter of a same-class neighbour's hits ...
GHOST_DISTANCE = 1.5  # ... within this many dish sizes of it is that dish seen askew
DUPLICATE_IOU = 0.6  # cross-class duplicates in one frame
TRAY_NMS_IOU = 0.3
TRAY_DUPLICATE_IOU = 0.35  # two tray tracks overlapping this much are one tray
TRAY_NMS_IOA = 0.6
TRAY_MIN_AREA_SHARE = 0.35  # tray boxes below this share of the typical area are not trays
SNAPSHOT_QUALITY = 80

Box = npt.NDArray[np.float64]


class _DampedKalman(OptimizedKalmanFilter):
    """Norfair's optimized Kalman filter with the velocity across the counter
    damped after every update (trays slide along the counter)."""

    def __init__(self, dim_x: int, dim_z: int, across: tuple[float, float], damping: float,
                 **kw: Any) -> None:
        super().__init__(dim_x, dim_z, **kw)  # type: ignore[no-untyped-call]
        self._across = np.array(across, np.float64)
        self._damping = damping

    def update(self, detection_points_flatten: Any, R: Any = None,  # noqa: N803
               H: Any = None) -> None:  # noqa: N803 (Norfair's names)
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


@dataclass
class _Dish:
    """Lifetime record of one dish track on one tray."""

    gid: int
    votes: npt.NDArray[np.float64]
    hits: int = 0
    first_seq: int = 0
    last_seq: int = 0
    rel_box: Box = field(default_factory=lambda: np.zeros(4))
    alive: bool = True
    adopted: bool = False  # a loose record already handed to a tray
    from_loose: bool = False  # a copy of a loose record (its place on the tray is rough)
    best: dict[int, list[float]] = field(default_factory=dict)  # class -> top scores
    # where a merged record was first and last seen (fragments of a dish that a
    # hand cut up drift apart when the dish frame was unsure); None: rel_box
    head_box: Box | None = None
    tail_box: Box | None = None

    def head(self) -> Box:
        """The box of this record's earliest fragment (its own box if unmerged)."""
        return self.rel_box if self.head_box is None else self.head_box

    def tail(self) -> Box:
        """The box of this record's latest fragment (its own box if unmerged)."""
        return self.rel_box if self.tail_box is None else self.tail_box

    def add_best(self, cls: int, score: float) -> None:
        """Keep the :data:`CLEAREST_VIEWS` highest scores of ``cls``."""
        top = self.best.setdefault(cls, [])
        top.append(score)
        if len(top) > CLEAREST_VIEWS:
            top.remove(min(top))

    def decide(self) -> tuple[int, float]:
        """``(class, share of the vote)``. When the runner-up holds at least
        :data:`RUNNER_UP_SHARE` of the vote (a look-alike pair under blur and
        hands), the class whose clearest views scored higher wins."""
        total = float(self.votes.sum())
        order = np.argsort(-self.votes)
        a = int(order[0])
        if len(order) > 1:
            b = int(order[1])
            if (self.votes[b] >= RUNNER_UP_SHARE * total and self.best.get(b)
                    and np.mean(self.best[b]) > np.mean(self.best.get(a, [0.0]))):
                a = b
        return a, (float(self.votes[a]) / total if total > 0 else 0.0)

    def absorb(self, other: _Dish) -> None:
        """Add ``other``'s votes, hits, lifetime and clearest views (and take its
        place on the tray if it was seen more)."""
        if other.first_seq < self.first_seq:
            self.head_box = other.head().copy()
        if other.last_seq > self.last_seq:
            self.tail_box = other.tail().copy()
        if other.hits > self.hits:
            self.rel_box = other.rel_box.copy()
        self.votes += other.votes
        self.hits += other.hits
        self.first_seq = min(self.first_seq, other.first_seq)
        self.last_seq = max(self.last_seq, other.last_seq)
        for cls, top in other.best.items():
            for score in top:
                self.add_best(cls, score)


@dataclass(eq=False)
class _Tray:
    """One physical tray: its dishes' tracker, their records and its bill state."""

    tid: int
    slot: int  # the tray's lane in the shared dish tracker's coordinates
    records: dict[Any, _Dish] = field(default_factory=dict)  # Norfair object -> record
    archive: list[_Dish] = field(default_factory=list)
    # adopted loose records (the loose one, its copy in tray coordinates) not yet
    # continued by a dish track of the tray
    pending: list[tuple[_Dish, _Dish]] = field(default_factory=list)
    opened_at: float = 0.0
    side: int = UNKNOWN
    was_before: bool = False
    billed: bool = False  # closed: with a bill, or without one (nothing on it)
    closed_empty: bool = False  # closed without a bill
    box: Box = field(default_factory=lambda: np.zeros(4))
    # the dish frame: its origin in the picture, moved by the dishes themselves
    # (a rigid group), not tied to the tray's box, which jumps under blur
    origin: npt.NDArray[np.float64] | None = None
    origin_v: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))
    origin_pred: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))
    box_c_prev: npt.NDArray[np.float64] | None = None
    items: tuple[BillItem, ...] = ()  # the open bill, refreshed every STATE_EVERY frames
    items_seq: int = -1

    def predict_origin(self, box: Box, typical_width: float) -> None:
        """Where the dish frame's origin should be this frame: moved like the
        tray's box when the box moves plausibly, else by its own velocity."""
        c = _centre(box)
        if self.origin is None:
            self.origin_pred = c
        else:
            pred = self.origin + self.origin_v
            if self.box_c_prev is not None:
                delta = c - self.box_c_prev
                limit = BOX_JUMP * max(typical_width, float(box[2] - box[0]), 1.0)
                if float(np.linalg.norm(delta - self.origin_v)) <= limit:
                    pred = self.origin + delta
            self.origin_pred = pred
        self.box_c_prev = c

    def set_origin(self, origin: npt.NDArray[np.float64]) -> None:
        """Commit this frame's origin and update its velocity."""
        if self.origin is not None:
            self.origin_v = 0.6 * self.origin_v + 0.4 * (origin - self.origin)
        self.origin = origin


def _box_points(box: Sequence[float] | Box) -> npt.NDArray[np.float64]:
    return np.array([[box[0], box[1]], [box[2], box[3]]], np.float64)


def _median_rows(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Column-wise median of a few rows (np.median costs ~80 us on tiny arrays)."""
    n = len(a)
    if n == 1:
        return np.asarray(a[0], np.float64)
    srt = np.sort(a, axis=0)
    m = n // 2
    return np.asarray(srt[m] if n % 2 else (srt[m - 1] + srt[m]) / 2.0, np.float64)


def _centre(box: Box) -> npt.NDArray[np.float64]:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def _tray_reid_distance(new: Any, old: Any) -> float:
    """Centre distance of a new tray track to a lost one, in tray widths."""
    a, b = new.estimate, old.estimate
    width = max(float(b[1][0] - b[0][0]), 1.0)
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)) / width)


REID_NEVER = 1e6


class TrayTracker:
    """Tracks trays and their dishes on one stream and closes tray bills.

    Implements :class:`edge.billing.model.Biller`.

    Parameters
    ----------
    stream_id : str
        Stream the bills belong to.
    class_names : sequence of str
        The detector's class names; the tray class is named ``tray``.
    menu : Menu
        Names, prices and billability of the classes.
    line : CheckoutLine
        Where bills close.
    width, height : int
        Frame size in pixels.
    config : TrackerConfig
        IoU threshold and hit counters for trays and loose objects.
    min_item_hits : int
        Detections a dish needs before it is billed.
    run_id : str
        Part of every bill id: unique per tracker life (default: start time in ms).
    clock_offset : float or None
        Added to a frame's ``capture_time`` to get Unix time; default
        ``time.time() - time.monotonic()`` (live); 0 for evaluation.
    snapshots : bool
        Attach a JPEG of the closing frame to each bill.
    """

    def __init__(self, stream_id: str, class_names: Sequence[str], menu: Menu,
                 line: CheckoutLine, config: TrackerConfig, *, width: int, height: int,
                 min_item_hits: int = 3,
                 run_id: str | None = None, clock_offset: float | None = None,
                 snapshots: bool = True) -> None:
        self.stream_id = stream_id
        self.width, self.height = width, height
        self.class_names = tuple(class_names)
        self.menu = menu
        self.line = line
        self.config = config
        self.min_item_hits = min_item_hits
        self.run_id = run_id or str(int(time.time() * 1000))
        self.clock_offset = (time.time() - time.monotonic()) if clock_offset is None \
            else clock_offset
        self.snapshots = snapshots
        self.tray_class = self.class_names.index(TRAY_KEY) if TRAY_KEY in self.class_names \
            else -1
        self._nc = len(self.class_names)
        self._trays_nf = NfTracker(
            distance_function="iou", distance_threshold=1.0 - config.iou_threshold,
            hit_counter_max=max(config.hit_counter_max, 10),
            initialization_delay=min(config.initialization_delay, config.hit_counter_max - 1),
            filter_factory=TrayMotionFilterFactory(line.direction),
            reid_distance_function=self._reid_distance, reid_distance_threshold=0.5,
            reid_hit_counter_max=TRAY_REID_FRAMES,
        )
        self._trays: dict[Any, _Tray] = {}  # Norfair tray object -> tray
        self._loose = self._dish_tracker(config.hit_counter_max, static=False)
        self._dishes_nf = self._dish_tracker(DISH_HIT_COUNTER_MAX)
        self._slots: dict[int, _Tray] = {}
        self._next_slot = 1
        self._loose_records: dict[Any, _Dish] = {}
        self._next_gid = 1
        self._since_detection = 1
        self._seq = -1
        self._tray_size = (0.0, 0.0)  # running mean of whole tray boxes (w, h), px
        self._prev_image: npt.NDArray[np.uint8] | None = None  # for optical flow
        self._prev_gray: npt.NDArray[np.uint8] | None = None
        self._gray_now: npt.NDArray[np.uint8] | None = None

    # -- the frame loop -------------------------------------------------------------------

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Advance one frame (``detections`` None when the frame was not detected)."""
        seq = self._seq = frame.seq
        period = self._since_detection
        self._gray_now = None
        trays_dets, dish_dets = self._split(detections)
        tray_objs = self._trays_nf.update(trays_dets, period=period) \
            if detections is not None else self._trays_nf.update(None)
        _undo_dying(self._trays_nf)
        for obj in tray_objs:
            if obj not in self._trays:
                tray = _Tray(int(obj.id or 0), self._next_slot,
                             opened_at=frame.capture_time + self.clock_offset)
                self._next_slot += 1
                self._trays[obj] = tray
                self._slots[tray.slot] = tray
        active = self._merge_duplicate_trays({obj for obj in tray_objs})
        matched_trays = {obj for obj in tray_objs if obj.last_detection is not None
                         and detections is not None
                         and any(obj.last_detection is d for d in trays_dets)}

        # dishes: assign to trays, correct trays by their dishes, track in tray coordinates
        boxes = {obj: np.asarray(obj.estimate, np.float64).reshape(4) for obj in active}
        for obj in active:
            self._trays[obj].predict_origin(boxes[obj], self._tray_size[0])
        self._adopt_loose(boxes)
        assignment = self._assign(dish_dets, boxes) if detections is not None else {}
        for obj in active:
            tray = self._trays[obj]
            previous = tray.origin
            if detections is not None:
                boxes[obj], _ = self._rigid_correction(
                    obj, tray, boxes[obj], assignment.get(obj, []), obj in matched_trays)
            else:
                tray.set_origin(tray.origin_pred)
            if detections is None and previous is not None and tray.box.any():
                # a frame the detector skipped (under load): optical flow moves the
                # tray (in detected frames that miss it, blur or hands make flow
                # no better than the motion model: measured on the tuning set)
                moved = self._flow(tray.box, frame)
                if moved is not None:
                    boxes[obj] = tray.box + np.array([moved[0], moved[1], moved[0], moved[1]])
                    obj.filter.x[:4] = boxes[obj].reshape(-1, 1)
                    tray.origin = previous + moved
                    tray.box_c_prev = _centre(boxes[obj])
            tray.box = boxes[obj]
        self._prev_image, self._prev_gray = frame.image, self._gray_now
        # loose first: an adopted loose dish is then where it is now, for the tray
        # track that continues it
        if detections is not None:
            self._track_loose(assignment.get(None, []), seq)
        else:
            self._track_loose(None, seq)
        self._track_dishes({self._trays[obj]: assignment.get(obj, []) for obj in active},
                           detections is not None, seq)
        self._since_detection = 1 if detections is not None else self._since_detection + 1

        closed = self._close_bills(frame, active)
        tracks = self._tracks(active, matched_trays)
        # open bills, the tray nearest to (or over) the checkout line first
        open_trays = sorted((self._trays[obj] for obj in active if not self._trays[obj].billed),
                            key=lambda t: -self.line.distance(*_centre(t.box)))
        states = tuple(self._state(t) for t in open_trays)
        return BillerStep(tracks, states, tuple(closed))

    # -- detections -----------------------------------------------------------------------

    def _split(self, detections: Detections | None) -> tuple[list[NfDetection], list[
            tuple[Box, int, float]]]:
        if detections is None or len(detections) == 0:
            return [], []
        trays: list[NfDetection] = []
        dishes: list[tuple[Box, int, float]] = []
        is_tray = detections.classes == self.tray_class
        t_boxes, t_scores = detections.boxes[is_tray], detections.scores[is_tray]
        for k in _tray_nms(t_boxes, t_scores):
            whole = self._tray_box(t_boxes[k])
            if whole is not None:
                s = float(t_scores[k])
                trays.append(NfDetection(points=_box_points(whole),
                                         scores=np.array([s, s], np.float64)))
        # one object seen as two look-alike classes in one frame must not start two tracks
        keep = np.sort(nms(detections.boxes[~is_tray], detections.scores[~is_tray], DUPLICATE_IOU))
        d_boxes = detections.boxes[~is_tray][keep]
        d_scores = detections.scores[~is_tray][keep]
        d_classes = detections.classes[~is_tray][keep]
        for b, s, c in zip(d_boxes, d_scores, d_classes, strict=True):
            dishes.append((np.asarray(b, np.float64), int(c), float(s)))
        return trays, dishes

    def _reid_distance(self, new: Any, old: Any) -> float:
        """Norfair's re-identification of a lost tray, except that a billed tray
        never comes back as a tray before the checkout line (that is the next
        tray: it would not be billed)."""
        tray = self._trays.get(old)
        if tray is not None and tray.billed:
            c = np.asarray(new.estimate, np.float64).mean(axis=0)
            if self.line.distance(float(c[0]), float(c[1])) < -self.line.hysteresis:
                return REID_NEVER
        return _tray_reid_distance(new, old)

    def _merge_duplicate_trays(self, active: set[Any]) -> set[Any]:
        """Trays do not overlap: two tray tracks on one tray (a detector that sees
        a blurred tray as two offset boxes) become one. The one with more dish
        evidence keeps its id; the other's dishes join it (moved into its dish
        frame) and its bill state carries over, so the tray is billed once."""
        objs = sorted(active, key=lambda o: self._trays[o].tid)
        if len(objs) < 2:
            return active
        boxes = np.stack([np.asarray(o.estimate, np.float64).reshape(4) for o in objs])
        iou = box_iou(boxes, boxes)
        gone: set[Any] = set()
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                a, b = objs[i], objs[j]
                if a in gone or b in gone or iou[i, j] < TRAY_DUPLICATE_IOU:
                    continue
                ta, tb = self._trays[a], self._trays[b]
                keep, drop = (a, b) if _evidence(ta) >= _evidence(tb) else (b, a)
                self._absorb_tray(self._trays[keep], self._trays[drop])
                drop.hit_counter = -1  # Norfair forgets it at the next update
                drop.reid_hit_counter = -1
                del self._slots[self._trays[drop].slot]
                del self._trays[drop]
                gone.add(drop)
        return active - gone

    @staticmethod
    def _absorb_tray(keep: _Tray, drop: _Tray) -> None:
        if keep.origin is not None and drop.origin is not None:
            d = drop.origin - keep.origin
            shift = np.array([d[0], d[1], d[0], d[1]])
        else:
            shift = np.zeros(4)
        for rec in (*drop.records.values(), *drop.archive):
            if rec.gid:
                rec.alive = False
                rec.rel_box = rec.rel_box + shift
                keep.archive.append(rec)
        keep.pending += drop.pending
        keep.opened_at = min(keep.opened_at, drop.opened_at)
        # a tray closed without a bill (a false tray seen in an arm, ahead of the
        # real one) passes no bill state on: the tray it merges into is billed
        # when it is past the line, not swallowed
        keep.billed = any(t.billed and not t.closed_empty for t in (keep, drop))
        keep.closed_empty = False
        keep.was_before = keep.was_before or drop.was_before
        keep.items_seq = -1

    def _adopt_loose(self, boxes: dict[Any, Box]) -> None:
        """Hand dishes seen before their tray was (tracked loose) to the tray they
        are on: their votes then count on its bill (a dish seen only while its
        tray was entering, then hidden by a hand, is still billed).

        An adopted record waits on the tray; the first dish track the tray starts
        over it (in the picture) takes its votes and detections. One that no
        tray track continues is billed from its place at adoption.
        """
        for rec in self._loose_records.values():
            if rec.adopted or not rec.gid or rec.hits == 0:
                continue
            c = _centre(rec.rel_box)
            for obj, tb in boxes.items():
                if tb[0] <= c[0] <= tb[2] and tb[1] <= c[1] <= tb[3]:
                    tray = self._trays[obj]
                    o = tray.origin_pred
                    tray.pending.append((rec, _Dish(
                        rec.gid, rec.votes.copy(), rec.hits, rec.first_seq, rec.last_seq,
                        rec.rel_box - np.array([o[0], o[1], o[0], o[1]]), alive=False,
                        best={k: list(v) for k, v in rec.best.items()}, from_loose=True)))
                    rec.adopted = True
                    break

    @staticmethod
    def _take_pending(tray: _Tray, rec: _Dish, image_box: Box) -> None:
        """Give a new dish track of ``tray`` the votes of the adopted loose record
        it continues (the one it overlaps most in the picture), if any."""
        if not tray.pending:
            return
        loose_boxes = np.stack([loose.rel_box for loose, _ in tray.pending])
        iou = box_iou(image_box[None], loose_boxes)[0]
        if rec.votes.sum() > 0:  # only a dish of the same class continues it
            cls = int(rec.votes.argmax())
            same = np.array([int(copy.votes.argmax()) == cls for _, copy in tray.pending])
            iou = np.where(same, iou, 0.0)
        k = int(iou.argmax())
        if iou[k] < MERGE_IOU:
            return
        _, copy = tray.pending.pop(k)
        if rec.gid == 0:  # the dish keeps the id it had while loose
            rec.gid = copy.gid
        rec.votes += copy.votes
        rec.hits += copy.hits
        rec.first_seq = min(rec.first_seq, copy.first_seq)
        for cls, top in copy.best.items():
            for score in top:
                rec.add_best(cls, score)

    def _tray_box(self, box: npt.NDArray[np.float32]) -> Box | None:
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
        tw, th = self._tray_size
        if not (cut_l or cut_r or cut_t or cut_b):
            if tw > 0 and w * h < TRAY_MIN_AREA_SHARE * tw * th:
                return None
            self._tray_size = (w, h) if tw <= 0 else (0.95 * tw + 0.05 * w, 0.95 * th + 0.05 * h)
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

    def _assign(self, dishes: list[tuple[Box, int, float]],
                trays: dict[Any, Box]) -> dict[Any, list[tuple[Box, int, float]]]:
        """Each dish detection to the tray it sits on (None: on no tray).

        A detection that overlaps one of a tray's dish tracks goes to that tray
        (two trays side by side keep their own dishes); the others go to the tray
        whose grown box holds their centre, the nearest centre if several do.
        """
        out: dict[Any, list[tuple[Box, int, float]]] = {}
        if not dishes:
            return out
        objs = list(trays)
        det_boxes = np.stack([d[0] for d in dishes])
        best = np.full(len(dishes), MERGE_IOU)
        owners: list[Any] = [None] * len(dishes)
        for obj in objs:  # overlap with a tray's dish tracks, all pairs at once
            tray = self._trays[obj]
            rel = [r.rel_box for r in tray.records.values() if r.alive]
            if not rel:
                continue
            tc = tray.origin_pred
            iou = box_iou(det_boxes - np.array([tc[0], tc[1], tc[0], tc[1]]),
                             np.stack(rel)).max(axis=1)
            for i in np.flatnonzero(iou > best):
                best[i], owners[i] = iou[i], obj
        for det, matched in zip(dishes, owners, strict=True):
            c = _centre(det[0])
            owner = matched
            if owner is None:  # inside a tray's box first, then inside its grown box
                rank: tuple[int, float] = (2, math.inf)
                for obj in objs:
                    tb = trays[obj]
                    w, h = tb[2] - tb[0], tb[3] - tb[1]
                    if not (tb[0] - TRAY_MARGIN * w <= c[0] <= tb[2] + TRAY_MARGIN * w
                            and tb[1] - TRAY_MARGIN * h <= c[1] <= tb[3] + TRAY_MARGIN * h):
                        continue
                    inside = tb[0] <= c[0] <= tb[2] and tb[1] <= c[1] <= tb[3]
                    r = (0 if inside else 1, float(np.linalg.norm(c - _centre(tb))))
                    if r < rank:
                        rank, owner = r, obj
            out.setdefault(owner, []).append(det)
        return out

    def _rigid_correction(self, obj: Any, tray: _Tray, box: Box,
                          dets: list[tuple[Box, int, float]], tray_detected: bool
                          ) -> tuple[Box, bool]:
        """Move the dish frame by the dishes, and an undetected tray with them.

        The dish detections are matched to the tray's dish tracks by centre
        distance around the predicted origin, under a shrinking gate (two rounds
        of iterative closest points); their median offset corrects the origin.
        The tray's own box never drags the dishes: when it jumps (a blurred tray
        seen as a part of itself, an arm over it) the dish frame keeps to the
        dishes. A tray not detected this frame but seen through its dishes moves
        with them and stays alive (the rigid group measures it).
        """
        previous = tray.origin
        pred = tray.origin_pred
        live = [r for r in tray.records.values() if r.alive and r.hits >= 2]
        need = 1 if not tray_detected else min(2, len(live))
        shift = None
        if live and len(dets) >= need:
            det_c = np.stack([_centre(d[0]) for d in dets]) - pred
            rec_c = np.stack([_centre(r.rel_box) for r in live])
            width = max(float(box[2] - box[0]), self._tray_size[0], 1.0)
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
                    shift = None
                    break
                shift = shift + _median_rows(det_c[j[ok]] - (rec_c[ok] + shift))
        tray.set_origin(pred if shift is None else pred + shift)
        if tray_detected or shift is None or previous is None or tray.origin is None:
            return box, shift is not None
        moved = tray.origin - previous
        corrected = tray.box + np.array([moved[0], moved[1], moved[0], moved[1]])
        obj.filter.x[:4] = corrected.reshape(-1, 1)
        # seen through its dishes: as alive as if detected
        obj.hit_counter = min(obj.hit_counter + 2 * self._since_detection, obj.hit_counter_max)
        if obj.hit_counter > 0:
            obj.reid_hit_counter = None  # alive: not counting down to its removal
        tray.box_c_prev = _centre(corrected)
        return corrected, True

    def _gray(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8] | None:
        """``image`` at half size in grey, for optical flow (None: no flow)."""
        if not self.config.optical_flow or image.ndim != 3 or image.shape[0] < 32:
            return None
        small = cv2.resize(image, (image.shape[1] // FLOW_SCALE, image.shape[0] // FLOW_SCALE),
                           interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)

    def _flow(self, box: Box, frame: Frame) -> npt.NDArray[np.float64] | None:
        """Median optical flow of corners inside ``box`` from the previous frame
        to this one (pixels), or None without enough trackable texture. The
        grey frames are made only when flow is needed (frames are immutable, so
        keeping the previous one costs nothing)."""
        if self._gray_now is None:
            self._gray_now = self._gray(frame.image)
        if self._prev_gray is None and self._prev_image is not None:
            self._prev_gray = self._gray(self._prev_image)
        gray, prev = self._gray_now, self._prev_gray
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
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
            prev, gray, pts, None, winSize=(15, 15), maxLevel=2)
        ok = status.reshape(-1) == 1
        if int(ok.sum()) < FLOW_MIN_POINTS:
            return None
        moved = (nxt.reshape(-1, 2)[ok] - pts.reshape(-1, 2)[ok]).astype(np.float64)
        return _median_rows(moved) * FLOW_SCALE

    def _dish_tracker(self, hit_counter_max: int, *, static: bool = True) -> NfTracker:
        """Norfair for dishes: on a tray they do not move, so no velocity is
        estimated there (a velocity fitted to box noise would carry an occluded
        dish away); loose objects get Norfair's Kalman filter, ready for a
        fast velocity (:data:`LOOSE_VEL_VARIANCE`)."""
        tracker = NfTracker(
            distance_function="iou", distance_threshold=1.0 - self.config.iou_threshold,
            hit_counter_max=hit_counter_max,
            initialization_delay=min(self.config.initialization_delay, hit_counter_max - 1),
            filter_factory=(NoFilterFactory() if static
                            else OptimizedKalmanFilterFactory(vel_variance=LOOSE_VEL_VARIANCE)),
            past_detections_length=0,
        )
        use_fast_hit(tracker)  # the same state after each update, at a third of the cost
        return tracker

    def _track_dishes(self, dets: dict[_Tray, list[tuple[Box, int, float]]], detected: bool,
                      seq: int) -> None:
        """One Norfair update for the dishes of every tray: each tray's dishes are
        in its own coordinates, laid out in a lane of their own (``slot`` times
        :data:`SLOT_PX` along x), so dishes of two trays never match."""
        nf = []
        for tray, mine in dets.items():
            o = tray.origin if tray.origin is not None else tray.origin_pred
            shift = np.array([o[0] - tray.slot * SLOT_PX, o[1], o[0] - tray.slot * SLOT_PX, o[1]])
            nf += [NfDetection(points=_box_points(b - shift), data=(c, s, tray.slot))
                   for b, c, s in mine]
        if detected:
            self._dishes_nf.update(nf, period=self._since_detection)
        else:
            self._dishes_nf.update(None)
        det_ids = {id(d) for d in nf}
        live: set[Any] = set()
        for obj in self._dishes_nf.tracked_objects:
            # the lane (tray) a dish track was born in, kept on the Norfair object
            slot = getattr(obj, "dish_slot", None)
            if slot is None:
                slot = obj.last_detection.data[2] if obj.last_detection is not None else -1
                setattr(obj, "dish_slot", slot)  # noqa: B010
            owner = self._slots.get(slot)
            if owner is None:  # its tray is gone: let Norfair drop it
                obj.hit_counter = -1
                continue
            tray = owner
            live.add(obj)
            rec = tray.records.get(obj)
            new = rec is None
            if rec is None:
                rec = tray.records[obj] = _Dish(0, np.zeros(self._nc), first_seq=seq)
            self._vote(obj, rec, det_ids, seq)
            rec.rel_box = (np.asarray(obj.estimate, np.float64).reshape(4)
                           - np.array([tray.slot * SLOT_PX, 0.0, tray.slot * SLOT_PX, 0.0]))
            if new and tray.origin is not None:
                o = tray.origin
                self._take_pending(tray, rec, rec.rel_box + np.array([o[0], o[1], o[0], o[1]]))
            if rec.hits >= self.min_item_hits and obj.hit_counter < 2:
                obj.hit_counter = 2  # a dish lives as long as its tray
        for tray in self._slots.values():
            for obj in [o for o in tray.records if o not in live]:
                rec = tray.records.pop(obj)
                rec.alive = False
                if rec.gid:
                    tray.archive.append(rec)

    def _vote(self, obj: Any, rec: _Dish, det_ids: set[int], seq: int) -> None:
        """Give ``rec`` its id once Norfair does, and the vote of this frame's match."""
        if obj.id is not None and rec.gid == 0:
            rec.gid = self._next_gid
            self._next_gid += 1
        last = obj.last_detection
        if last is not None and id(last) in det_ids:
            cls, score = last.data[0], last.data[1]
            if 0 <= cls < self._nc:
                rec.votes[cls] += score * score
                rec.add_best(cls, score)
            rec.hits += 1
            rec.last_seq = seq

    def _track_loose(self, dets: list[tuple[Box, int, float]] | None, seq: int) -> None:
        if dets is None:
            self._loose.update(None)
            nf: list[NfDetection] = []
        else:
            nf = [NfDetection(points=_box_points(b), data=(c, s)) for b, c, s in dets]
            self._loose.update(nf, period=self._since_detection)
        self._absorb(self._loose, self._loose_records, nf, seq)

    def _absorb(self, tracker: NfTracker, records: dict[Any, _Dish], nf: list[NfDetection],
                seq: int) -> None:
        """Record votes of this frame's matches of the loose tracker."""
        det_ids = {id(d) for d in nf}
        live = set()
        for obj in tracker.tracked_objects:
            live.add(obj)
            rec = records.get(obj)
            if rec is None:
                rec = records[obj] = _Dish(0, np.zeros(self._nc), first_seq=seq)
            self._vote(obj, rec, det_ids, seq)
            rec.rel_box = np.asarray(obj.estimate, np.float64).reshape(4)
        for obj in [o for o in records if o not in live]:
            records.pop(obj).alive = False

    # -- bills ----------------------------------------------------------------------------

    def _close_bills(self, frame: Frame, active: set[Any]) -> list[Bill]:
        closed: list[Bill] = []
        for obj, tray in list(self._trays.items()):
            if obj in active and tray.side == PAST and not self._in_view(tray.box):
                # it left the picture past the line: ended (never resurrected)
                obj.hit_counter = -1
                obj.reid_hit_counter = -1
                active.discard(obj)
            if obj in active:
                c = _centre(tray.box)
                prev = tray.side
                tray.side = self.line.side(float(c[0]), float(c[1]), prev)
                tray.was_before |= tray.side == BEFORE
                if tray.side == PAST and not tray.billed and tray.was_before:
                    # crossed now, or a merged tray past the line whose half that
                    # crossed first closed without a bill
                    self._bill_into(closed, frame, tray, "crossed")
            elif obj not in self._trays_nf.tracked_objects or (
                    obj.hit_counter < 0 and obj.reid_hit_counter is not None
                    and obj.reid_hit_counter < 0):  # gone for good
                del self._trays[obj]
                del self._slots[tray.slot]
                c = _centre(tray.box)
                at_line = self.line.distance(float(c[0]), float(c[1])) > -self.line.hysteresis
                if not tray.billed and tray.was_before and at_line:
                    self._bill_into(closed, frame, tray, "left_view")
        return closed

    def _items(self, tray: _Tray) -> list[BillItem]:
        dishes = [r for r in (*tray.records.values(), *tray.archive,
                              *(copy for _, copy in tray.pending)) if r.gid and r.hits > 0]
        width = max(self._tray_size[0], float(tray.box[2] - tray.box[0]), 1.0)
        dishes = _merge_fragments(dishes, width)
        items = []
        for rec in sorted(dishes, key=lambda r: r.gid):
            if rec.hits < self.min_item_hits or rec.votes.sum() < MIN_VOTE_MASS:
                continue
            cls, share = rec.decide()
            item = self.menu.item(cls, share, rec.gid)
            if item is not None:
                items.append(item)
        return items

    def _bill_into(self, closed: list[Bill], frame: Frame, tray: _Tray, reason: str) -> None:
        """Close ``tray``'s bill into ``closed``, once. A tray with nothing to bill
        (no dish seen on it: an empty tray, a stack of them, or a false tray the
        detector saw in an arm beside a real one) closes without a bill."""
        tray.billed = True
        items = tuple(self._items(tray))
        if items:
            closed.append(self._bill(frame, tray, reason, items))
        else:
            tray.closed_empty = True
            log.info("tray_closed_without_items", stream=self.stream_id, tray=tray.tid,
                     reason=reason, frame=frame.seq)

    def _bill(self, frame: Frame, tray: _Tray, reason: str, items: tuple[BillItem, ...]
              ) -> Bill:
        snapshot = None
        if self.snapshots and frame.image.size > 3:
            ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY,
                                                         SNAPSHOT_QUALITY])
            snapshot = buf.tobytes() if ok else None
        return Bill(
            bill_id=f"{self.stream_id}-{self.run_id}-{tray.tid}", stream_id=self.stream_id,
            tray_id=tray.tid, opened_at=tray.opened_at,
            closed_at=frame.capture_time + self.clock_offset, frame_seq=frame.seq,
            items=items, total=round_money(sum(i.price for i in items)),
            needs_review=any(i.needs_review for i in items), reason=reason,
            tray_box=(float(tray.box[0]), float(tray.box[1]), float(tray.box[2]),
                      float(tray.box[3])),
            snapshot_jpeg=snapshot,
        )

    def _state(self, tray: _Tray) -> TrayState:
        if tray.items_seq < 0 or self._seq - tray.items_seq >= STATE_EVERY:
            tray.items, tray.items_seq = tuple(self._items(tray)), self._seq
        items = tray.items
        return TrayState(self.stream_id, tray.tid,
                         (float(tray.box[0]), float(tray.box[1]), float(tray.box[2]),
                          float(tray.box[3])),
                         items, round_money(sum(i.price for i in items)))

    # -- output ---------------------------------------------------------------------------

    def _tracks(self, active: set[Any], matched: set[Any]) -> tuple[Track, ...]:
        out = []
        for obj in active:
            tray = self._trays[obj]
            b = tray.box
            if not self._in_view(b):
                continue
            out.append(Track(tray.tid, (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                             self.tray_class, TRAY_KEY, 1.0, 0, obj in matched, tray.tid))
            tc = tray.origin if tray.origin is not None else tray.origin_pred
            shift = np.array([tc[0], tc[1], tc[0], tc[1]])
            for dobj, rec in tray.records.items():
                out.extend(self._dish_track(dobj, rec, rec.rel_box + shift, tray.tid))
        for dobj, rec in self._loose_records.items():
            out.extend(self._dish_track(dobj, rec, rec.rel_box, None))
        return tuple(out)

    def _in_view(self, box: Box) -> bool:
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        return bool(0 <= cx < self.width and 0 <= cy < self.height)

    def _dish_track(self, obj: Any, rec: _Dish, box: Box, tray_id: int | None) -> list[Track]:
        if (obj.id is None or not obj.hit_counter_is_positive or rec.votes.sum() <= 0
                or rec.adopted or not self._in_view(box)):
            return []
        cls, share = rec.decide()
        return [Track(rec.gid, (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                      cls, self.class_names[cls], share,
                      rec.hits, rec.last_seq == self._seq, tray_id)]

    def open_trays(self) -> list[int]:
        """Ids of trays in view whose bill is still open."""
        return [t.tid for t in self._trays.values() if not t.billed]

    @property
    def live_tracks(self) -> int:
        """Trays and dishes alive now."""
        return (len(self._trays) + sum(len(t.records) for t in self._trays.values())
                + len(self._loose_records))


def _undo_dying(tracker: NfTracker) -> None:
    """Norfair starts an object's re-id countdown when its hit counter reaches 0
    and removes the object when the countdown ends, even if it was matched again
    in between (a match at hit counter 0 is still a match; norfair 2.3): a tray
    seen again is alive, so its countdown is cleared."""
    for obj in tracker.tracked_objects:
        if obj.reid_hit_counter is not None and obj.hit_counter > 0:
            obj.reid_hit_counter = None


def _evidence(tray: _Tray) -> int:
    """Dish detections a tray has gathered (which of two duplicates to keep)."""
    return sum(r.hits for r in tray.records.values()) + sum(r.hits for r in tray.archive)


def _tray_nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32]
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


def _merge_fragments(dishes: list[_Dish], tray_width: float) -> list[_Dish]:
    """Merge records of one dish, keeping the oldest id.

    Two records are one dish if they sit at the same place on the tray (IoU
    :data:`MERGE_IOU` in tray coordinates: a duplicate or a fragment), or if
    they vote for the same class, were detected in disjoint spans of frames
    (one ended before the other began: a track that died under a hand and its
    successor) and their centres are closer than the larger dish's size (a hand
    that covers part of a dish shifts its box). A record with few detections
    beside a same-class record seen far more is that dish too: within 1.5 dish
    sizes at any time (a ghost), or within :data:`EARLY_FRAGMENT_SHARE` of the
    tray's width if it ended before the other began (seen while the tray came
    in, cut by the picture's edge and blurred, when the dish frame was unsure).
    """
    dishes = sorted(dishes, key=lambda r: r.gid)
    merged: list[_Dish] = []
    for rec in dishes:
        target = None
        if merged:
            iou = box_iou(rec.rel_box[None], np.stack([m.rel_box for m in merged]))[0]
            j = int(iou.argmax())
            target = (merged[j] if iou[j] >= MERGE_IOU
                      else _successor_of(rec, merged, tray_width))
        if target is None:
            target = _Dish(rec.gid, np.zeros_like(rec.votes), 0, rec.first_seq, rec.last_seq,
                           rec.rel_box.copy(), rec.alive, from_loose=rec.from_loose,
                           head_box=rec.head().copy(), tail_box=rec.tail().copy())
            merged.append(target)
        target.absorb(rec)
    return merged


def _successor_of(rec: _Dish, merged: list[_Dish], tray_width: float) -> _Dish | None:
    """The record ``rec`` continues (same class, disjoint in time, closer than a
    dish's size) or is a ghost of (same class, a small fraction of its
    detections, within 1.5 sizes), if any."""
    if rec.votes.sum() <= 0:
        return None
    cls = rec.decide()[0]
    c = _centre(rec.rel_box)
    best, out = math.inf, None
    for m in merged:
        if m.votes.sum() <= 0 or m.decide()[0] != cls:
            continue
        size = max(m.rel_box[2] - m.rel_box[0], m.rel_box[3] - m.rel_box[1],
                   rec.rel_box[2] - rec.rel_box[0], rec.rel_box[3] - rec.rel_box[1])
        d = float(np.linalg.norm(c - _centre(m.rel_box)))
        after, before = m.last_seq < rec.first_seq, rec.last_seq < m.first_seq
        disjoint = after or before
        # a successor continues where the chain was last seen, not where it was seen most
        d_chain = (float(np.linalg.norm(_centre(rec.head()) - _centre(m.tail()))) if after
                   else float(np.linalg.norm(_centre(rec.tail()) - _centre(m.head()))) if before
                   else math.inf)
        few, many = (rec, m) if rec.hits < m.hits else (m, rec)
        # (a dish seen before its tray, adopted from the loose tracker, is no
        # ghost: _take_pending gave it to the tray track that continued it)
        minor = few.hits * GHOST_SHARE < many.hits and not few.from_loose
        # a ghost: a few detections beside a dish of its class seen all along
        ghost = minor and d < GHOST_DISTANCE * size
        early = minor and few.last_seq < many.first_seq and d < EARLY_FRAGMENT_SHARE * tray_width
        # a dish seen before its tray, tracked loose until a tray track took it
        # over a few frames later (two trackers, two coordinate frames: no overlap)
        first, second = (m, rec) if m.first_seq < rec.first_seq else (rec, m)
        if (first.from_loose and not second.from_loose
                and 0 <= first.last_seq - second.first_seq <= HANDOVER_FRAMES):
            d_chain = float(np.linalg.norm(_centre(first.tail()) - _centre(second.head())))
            disjoint = True
        if disjoint and d_chain < FRAGMENT_DISTANCE * size and min(d, d_chain) < best:
            best, out = min(d, d_chain), m
        elif (ghost or early) and d < best:
            best, out = d, m
    return out


def make_biller(stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],  # noqa: PLR0917
                width: int, height: int, run_id: str | None = None, *,
                clock_offset: float | None = None, snapshots: bool = True) -> TrayTracker:
    """The full system for one stream, configured from the site config."""
    menu = Menu(site.menu, class_names, site.billing.confirm_below)
    line = CheckoutLine(stream.checkout, width, height)
    return TrayTracker(stream.id, class_names, menu, line, site.tracker, width=width,
                       height=height, min_item_hits=site.billing.min_item_hits, run_id=run_id,
                       clock_offset=clock_offset, snapshots=snapshots)
