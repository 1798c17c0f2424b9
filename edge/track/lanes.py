"""Dishes on trays: each tray's dishes tracked in its own coordinates (tracking stage).

One Norfair tracker serves the dishes of every tray. Each tray's dish
detections are moved into the tray's coordinates (relative to its dish frame,
:mod:`edge.track.dish_frame`) and laid out in a lane of their own
(:data:`SLOT_PX` times the tray's slot along x), so dishes of two trays never
match. On a tray a dish does not move, so its track has no velocity
(Norfair's ``NoFilter``): it is predicted exactly through a hand's occlusion
however the tray moves, and re-associated with no new id when it reappears.
A dish seen often enough lives as long as its tray.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

import numpy as np
from norfair import Detection as NfDetection
from norfair import Tracker as NfTracker
from norfair.filter import NoFilterFactory, OptimizedKalmanFilterFactory

from edge.config import TrackerConfig
from edge.geometry import box_iou
from edge.track import norfair_adapter as nfa
from edge.track.dish_frame import DishDetection
from edge.track.evidence import Box, DishRecord, Point, centre, shift4
from edge.track.fragments import MERGE_IOU
from edge.track.spots import cell_of
from edge.track.trays import Tray, box_points

DISH_HIT_COUNTER_MAX = 100  # frames a dish on a live tray survives unseen (5 s at 20 fps)
SLOT_PX = 100_000.0  # lane width of one tray in the shared dish tracker, pixels
TRAY_MARGIN = 0.0  # a dish belongs to a tray whose box, grown by this share, holds its centre
# velocity variance ((px/frame)^2) a loose dish's Kalman filter starts with: a tray
# moves up to ~20 px a frame; with Norfair's default (1) the velocity takes
# seconds to catch up, the estimate lags behind a fast dish, and its track
# splits into a new one every few frames (and is adopted by its tray where it
# was, not where it is: billed twice)
LOOSE_VEL_VARIANCE = 100.0


class DishIds:
    """Track ids of one stream's dishes, given in the order tracks initialise, and
    the stream's count of detected frames (``looks``: the clock of a dish's
    evidence, whatever the detection rate)."""

    def __init__(self) -> None:
        self._next = 1
        self.looks = 0

    def take(self) -> int:
        """The next id."""
        gid = self._next
        self._next += 1
        return gid


def dish_tracker(config: TrackerConfig, hit_counter_max: int, *, static: bool) -> NfTracker:
    """Norfair for dishes: on a tray they do not move, so no velocity is
    estimated there (a velocity fitted to box noise would carry an occluded
    dish away); loose objects get Norfair's Kalman filter, ready for a fast
    velocity (:data:`LOOSE_VEL_VARIANCE`)."""
    tracker = NfTracker(
        distance_function="iou", distance_threshold=1.0 - config.iou_threshold,
        hit_counter_max=hit_counter_max,
        initialization_delay=min(config.initialization_delay, hit_counter_max - 1),
        filter_factory=(NoFilterFactory() if static
                        else OptimizedKalmanFilterFactory(vel_variance=LOOSE_VEL_VARIANCE)),
        past_detections_length=0,
    )
    nfa.use_fast_hit(tracker)  # the same state after each update, at a third of the cost
    return tracker


def retune_dish_tracker(tracker: NfTracker, config: TrackerConfig, hit_counter_max: int) -> None:
    """Give a dish tracker made by :func:`dish_tracker` new settings, its tracks kept."""
    nfa.retune(tracker, distance_threshold=1.0 - config.iou_threshold,
               hit_counter_max=hit_counter_max,
               initialization_delay=config.initialization_delay)


def observe(obj: Any, rec: DishRecord, det_ids: set[int], seq: int, ids: DishIds, *,
            origin: Point | None = None, places: bool = False) -> None:
    """Give ``rec`` its id once Norfair does, and the vote of this frame's match:
    data ``(class, score, ...)``. With ``places``, where it was seen in the
    picture is recorded too: on a tray, with the tray's dish-frame ``origin``,
    data ``(class, score, lane, x, y)``; loose, the detection's own points."""
    if obj.id is not None and rec.gid == 0:
        rec.gid = ids.take()
    if nfa.matched_index(obj, det_ids):
        data = obj.last_detection.data
        rec.vote(data[0], data[1], seq, ids.looks)
        if not places:
            return
        if origin is not None:
            where = data[3:5]
            rec.seen_at(where, origin)
        else:
            where = obj.last_detection.points.mean(axis=0)
        rec.seen_in(cell_of(where, data[0]))


def assign(dishes: list[DishDetection], boxes: Mapping[Any, Box], trays: Mapping[Any, Tray]
           ) -> dict[Any, list[DishDetection]]:
    """Each dish detection to the tray it sits on (key None: on no tray).

    A detection that overlaps one of a tray's dish tracks goes to that tray
    (two trays side by side keep their own dishes); the others go to the tray
    whose grown box holds their centre, the nearest centre if several do.

    Parameters
    ----------
    dishes : list of DishDetection
        This frame's dish detections, picture coordinates.
    boxes : mapping
        Active tray object -> its box this frame (picture, pixels).
    trays : mapping
        Tray object -> :class:`Tray`.
    """
    out: dict[Any, list[DishDetection]] = {}
    if not dishes:
        return out
    objs = list(boxes)
    det_boxes = np.stack([d[0] for d in dishes])
    best = np.full(len(dishes), MERGE_IOU)
    owners: list[Any] = [None] * len(dishes)
    for obj in objs:  # overlap with a tray's dish tracks, all pairs at once
        tray = trays[obj]
        rel = [r.rel_box for r in tray.records.values() if r.alive]
        if not rel:
            continue
        iou = box_iou(det_boxes - shift4(tray.frame.predicted), np.stack(rel)).max(axis=1)
        for i in np.flatnonzero(iou > best):
            best[i], owners[i] = iou[i], obj
    for det, matched in zip(dishes, owners, strict=True):
        c = centre(det[0])
        owner = matched
        if owner is None:  # inside a tray's box first, then inside its grown box
            rank: tuple[int, float] = (2, math.inf)
            for obj in objs:
                tb = boxes[obj]
                w, h = tb[2] - tb[0], tb[3] - tb[1]
                if not (tb[0] - TRAY_MARGIN * w <= c[0] <= tb[2] + TRAY_MARGIN * w
                        and tb[1] - TRAY_MARGIN * h <= c[1] <= tb[3] + TRAY_MARGIN * h):
                    continue
                inside = tb[0] <= c[0] <= tb[2] and tb[1] <= c[1] <= tb[3]
                r = (0 if inside else 1, float(np.linalg.norm(c - centre(tb))))
                if r < rank:
                    rank, owner = r, obj
        out.setdefault(owner, []).append(det)
    return out


def _take_pending(tray: Tray, rec: DishRecord, image_box: Box) -> None:
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
    rec.take_votes(copy)


def _log_drift(moves: Mapping[Tray, list[tuple[float, float]]], seq: int) -> None:
    """Add the median move of each tray's dishes matched in frame ``seq`` to its
    drift log (``Tray.drift``)."""
    for tray, moved in moves.items():
        tray.log_drift(seq, statistics.median(m[0] for m in moved),
                       statistics.median(m[1] for m in moved))


class DishLanes:
    """The dishes of every tray of one stream, one Norfair update per frame.

    Parameters
    ----------
    config : TrackerConfig
        IoU threshold and initialisation delay.
    slots : mapping
        Lane number -> :class:`Tray` (the trays alive; read at every update).
    n_classes : int
        Number of detector classes.
    ids : DishIds
        The stream's dish ids.
    permanent_hits, permanent_span : int
        Detections, and detected frames from the first to the last, after which
        a dish lives as long as its tray. Before that a track dies as Norfair's
        hit counter says: a false detection of a few frames must not live on
        and collect the next false detections near it.
    track_places : bool
        Record where each dish was seen in the picture and where its tray's
        dish frame was then (what :meth:`DishRecord.fixed_in_picture` reads);
        off, the frame loop does not pay for it.
    """

    def __init__(self, config: TrackerConfig, slots: Mapping[int, Tray], n_classes: int,
                 ids: DishIds, *, permanent_hits: int, permanent_span: int = 1,
                 track_places: bool = False) -> None:
        self.tracker = dish_tracker(config, DISH_HIT_COUNTER_MAX, static=True)
        self.slots = slots
        self.n_classes = n_classes
        self.ids = ids
        self.permanent_hits = permanent_hits
        self.permanent_span = permanent_span
        self.track_places = track_places

    def retune(self, config: TrackerConfig, *, permanent_hits: int, permanent_span: int,
               track_places: bool) -> None:
        """New settings from the next frame on; the dishes on trays keep their tracks."""
        retune_dish_tracker(self.tracker, config, DISH_HIT_COUNTER_MAX)
        self.permanent_hits = permanent_hits
        self.permanent_span = permanent_span
        self.track_places = track_places

    def update(self, dets: Mapping[Tray, list[DishDetection]], detected: bool, seq: int,
               period: int) -> None:
        """Track this frame's dishes of each tray (``dets``: the active trays and the
        detections assigned to them; ``detected`` False: the frame was not
        detected)."""
        nf = []
        for tray, mine in dets.items():
            o = tray.frame.current()
            shift = np.array([o[0] - tray.slot * SLOT_PX, o[1], o[0] - tray.slot * SLOT_PX, o[1]])
            nf += [NfDetection(points=box_points(b - shift),
                               data=(c, s, tray.slot, *centre(b).tolist()) if self.track_places
                               else (c, s, tray.slot))
                   for b, c, s in mine]
        if detected:
            self.tracker.update(nf, period=period)
        else:
            self.tracker.update(None)
        det_ids = {id(d) for d in nf}
        live: set[Any] = set()
        moves: dict[Tray, list[tuple[float, float]]] = {}  # matched dishes' moves on their tray
        for obj in self.tracker.tracked_objects:
            owner = self.slots.get(nfa.birth_tag(obj, 2))  # the lane it was born in
            if owner is None:  # its tray is gone: let Norfair drop it
                nfa.drop(obj)
                continue
            tray = owner
            live.add(obj)
            rec = tray.records.get(obj)
            new = rec is None
            if rec is None:
                rec = tray.records[obj] = DishRecord(0, np.zeros(self.n_classes), first_seq=seq)
            hits = rec.hits
            observe(obj, rec, det_ids, seq, self.ids,
                    origin=tray.frame.current() if self.track_places else None,
                    places=self.track_places)
            before = rec.rel_box
            rec.rel_box = (nfa.position(obj)
                           - np.array([tray.slot * SLOT_PX, 0.0, tray.slot * SLOT_PX, 0.0]))
            # (with places) where it was first seen: a successor is measured from
            # there (the dish frame may slip under it later, no other dish in view)
            rec.head_box = rec.rel_box.copy() if new and self.track_places else rec.head_box
            if self.track_places and hits and rec.hits > hits:
                now = rec.rel_box
                moves.setdefault(tray, []).append(
                    (float(now[0] + now[2] - before[0] - before[2]) / 2.0,
                     float(now[1] + now[3] - before[1] - before[3]) / 2.0))
            if new and tray.frame.origin is not None:
                _take_pending(tray, rec, rec.rel_box + shift4(tray.frame.origin))
            if rec.hits >= self.permanent_hits and rec.span >= self.permanent_span:
                nfa.hold(obj, 2)  # a dish lives as long as its tray
        _log_drift(moves, seq)
        for tray in self.slots.values():
            for obj in [o for o in tray.records if o not in live]:
                rec = tray.records.pop(obj)
                rec.alive = False
                if rec.gid:
                    tray.archive.append(rec)
