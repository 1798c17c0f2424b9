"""Baselines the full system is compared against, each a :class:`~edge.billing.model.Biller`.

Used by :mod:`edge.eval.tracking` on the same detections, the same
:class:`~edge.billing.line.CheckoutLine` and the same
:class:`~edge.billing.menu.Menu` as the full system, so only tracking and the
tray assignment differ:

* ``per_frame`` -- no tracking. Tray detections are linked between
  consecutive frames by nearest centre (only to see a tray's centre cross the
  line); at the crossing, the dish detections whose centre lies inside the
  tray box *in that frame* are billed.
* ``norfair_line`` -- plain Norfair, as its users run it: IoU distance,
  ``label`` left at Norfair's default (None: class-agnostic matching; the
  per-label variant splits a track whenever the class flickers), trays and
  dishes in two independent trackers in image coordinates, the site's
  ``[tracker]`` settings. A track's class is the majority of the classes of
  the detections it absorbed. When a tray crosses the line, the dish tracks
  whose centre lies inside its box are billed, each track once.
* ``bytetrack`` -- the ByteTrack-style tracker of :mod:`edge.eval.bytetrack`
  (two-stage association: high-score detections first, then low-score ones
  to the still unmatched tracks; ByteTrack's defaults), trays and dishes
  independently. It reports only tracks matched in the current frame
  (ByteTrack's output); counting at the line as in ``norfair_line``.

This module imports Norfair directly, outside :mod:`edge.track`: the baseline
must stay plain Norfair whatever the project's own adapter becomes.

Each biller takes the arguments of the full system's factory
``make_biller(stream, site, class_names, width, height, run_id)``. Detections
are expected above the site's score threshold, except for ``bytetrack``,
which wants them from :data:`BYTETRACK_LOW_SCORE` up (its class attribute
``min_score`` says so to the evaluator).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from norfair import Detection as NfDetection
from norfair import Tracker as NfTracker

from edge.billing.line import BEFORE, PAST, UNKNOWN, CheckoutLine
from edge.billing.menu import Menu
from edge.billing.model import Bill, BillerStep, BillItem, TrayState, round_money
from edge.config import SiteConfig, StreamConfig
from edge.eval.bytetrack import ByteTracker
from edge.frames import Detections, Frame, Track
from edge.track.norfair_adapter import quiet_box_warnings

Box = tuple[float, float, float, float]
BYTETRACK_LOW_SCORE = 0.1
BYTETRACK_BUFFER = 30  # frames a lost track is kept (ByteTrack's track_buffer)


@dataclass(slots=True)
class Obj:
    """A tracked object as the line counter sees it."""

    track_id: int
    box: Box
    class_id: int
    confidence: float
    hits: int = 1
    detected: bool = True


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _inside(point: tuple[float, float], box: Box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _tray_class(class_names: Sequence[str]) -> int:
    try:
        return list(class_names).index("tray")
    except ValueError:
        raise ValueError(f"class_names has no 'tray' class: {list(class_names)}") from None


@dataclass(slots=True)
class _TrayMemory:
    side: int
    first_seen: float
    billed: bool = False


class LineCounter:
    """Closes one bill per tray track when its centre crosses the checkout line.

    Parameters
    ----------
    line : CheckoutLine
        The stream's line (with hysteresis).
    menu : Menu
        Billable classes and prices.
    stream_id, run_id : str
        Make the bill ids ``{stream}-{run}-{tray_id}``.

    A tray first seen past the line is never billed (as in the full system);
    a dish track is billed at most once.
    """

    def __init__(self, line: CheckoutLine, menu: Menu, stream_id: str, run_id: str) -> None:
        self.line = line
        self.menu = menu
        self.stream_id = stream_id
        self.run_id = run_id
        self._trays: dict[int, _TrayMemory] = {}
        self._billed_dishes: set[int] = set()

    def step(self, frame: Frame, trays: Sequence[Obj],
             dishes: Sequence[Obj]) -> tuple[tuple[TrayState, ...], tuple[Bill, ...]]:
        """Advance one frame; returns the open trays and the bills closed now."""
        closed = []
        states = []
        billable = [d for d in dishes if self.menu.billable(d.class_id)
                    and d.track_id not in self._billed_dishes]
        for tray in trays:
            mem = self._trays.get(tray.track_id)
            cx, cy = _centre(tray.box)
            if mem is None:
                mem = self._trays[tray.track_id] = _TrayMemory(
                    self.line.side(cx, cy, UNKNOWN), frame.capture_time)
                mem.billed = mem.side == PAST
            side = self.line.side(cx, cy, mem.side)
            crossed = mem.side == BEFORE and side == PAST
            mem.side = side
            on_tray = [d for d in billable if _inside(_centre(d.box), tray.box)]
            items = tuple(i for d in sorted(on_tray, key=lambda d: d.track_id)
                          if (i := self.menu.item(d.class_id, d.confidence, d.track_id)))
            total = round_money(sum(i.price for i in items))
            if crossed and not mem.billed:
                mem.billed = True
                self._billed_dishes.update(d.track_id for d in on_tray)
                billable = [d for d in billable if d not in on_tray]
                closed.append(self._bill(frame, tray, mem, items, total))
            elif not mem.billed:
                states.append(TrayState(self.stream_id, tray.track_id, tray.box, items, total))
        alive = {t.track_id for t in trays}
        for tid in [t for t in self._trays if t not in alive]:
            del self._trays[tid]
        return tuple(states), tuple(closed)

    def _bill(self, frame: Frame, tray: Obj, mem: _TrayMemory, items: tuple[BillItem, ...],
              total: float) -> Bill:
        return Bill(
            bill_id=f"{self.stream_id}-{self.run_id}-{tray.track_id}", stream_id=self.stream_id,
            tray_id=tray.track_id, opened_at=mem.first_seen, closed_at=frame.capture_time,
            frame_seq=frame.seq, items=items, total=total,
            needs_review=any(i.needs_review for i in items), reason="crossed", tray_box=tray.box,
        )


class _Base(ABC):
    """Shared set-up: line, menu, counter, class tables and track output."""

    min_score: float | None = None
    """Lowest detection score the biller wants (None: the site's threshold)."""
    identities = True
    """False when tracks carry no identity over time (no MOT metrics then)."""

    def __init__(self, stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],
                 width: int, height: int, *, run_id: str = "eval") -> None:
        self.class_names = tuple(class_names)
        self.tray_class = _tray_class(self.class_names)
        self.site = site
        menu = Menu(site.menu, self.class_names, site.billing.confirm_below)
        self.counter = LineCounter(CheckoutLine(stream.checkout, width, height), menu,
                                   stream.id, run_id)

    @abstractmethod
    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Advance one frame (the :class:`~edge.billing.model.Biller` protocol)."""

    def _track(self, o: Obj) -> Track:
        return Track(track_id=o.track_id, box=o.box, class_id=o.class_id,
                     class_name=self.class_names[o.class_id], confidence=o.confidence,
                     hits=o.hits, detected=o.detected)

    def _finish(self, frame: Frame, trays: Sequence[Obj], dishes: Sequence[Obj]) -> BillerStep:
        states, closed = self.counter.step(frame, trays, dishes)
        return BillerStep(tuple(self._track(o) for o in (*trays, *dishes)), states, closed)

    def _split(self, detections: Detections | None) -> tuple[Detections, Detections]:
        d = detections if detections is not None else Detections.empty()
        is_tray = d.classes == self.tray_class
        return _subset(d, is_tray), _subset(d, ~is_tray)


def _subset(d: Detections, keep: npt.NDArray[np.bool_]) -> Detections:
    return Detections(np.ascontiguousarray(d.boxes[keep]), d.scores[keep], d.classes[keep])


def _boxes(d: Detections) -> list[Box]:
    return [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in d.boxes]


class PerFrameBiller(_Base):
    """Per-frame counting at the line: no dish tracking at all (see the module doc)."""

    identities = False

    def __init__(self, stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],
                 width: int, height: int, *, run_id: str = "eval") -> None:
        super().__init__(stream, site, class_names, width, height, run_id=run_id)
        self._prev: list[Obj] = []
        self._next_id = 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Link tray boxes to the previous frame's, bill dishes inside a tray crossing now."""
        tray_det, dish_det = self._split(detections)
        trays = []
        free = list(self._prev)
        for box, score in zip(_boxes(tray_det), tray_det.scores, strict=True):
            c = np.array(_centre(box))
            reach = 0.5 * max(box[2] - box[0], box[3] - box[1])
            dists = [float(np.hypot(*(c - _centre(p.box)))) for p in free]
            k = int(np.argmin(dists)) if dists else -1
            tid = free.pop(k).track_id if k >= 0 and dists[k] <= reach else self._new_id()
            trays.append(Obj(tid, box, self.tray_class, float(score)))
        self._prev = trays
        dishes = [Obj(self._new_id(), box, int(c), float(s)) for box, s, c in
                  zip(_boxes(dish_det), dish_det.scores, dish_det.classes, strict=True)]
        return self._finish(frame, trays, dishes)


@dataclass(slots=True)
class _Votes:
    counts: Counter[int] = field(default_factory=Counter)

    def winner(self) -> tuple[int, float]:
        (cls, n), = self.counts.most_common(1)
        return cls, n / sum(self.counts.values())


def _key(obj: Any) -> int:
    """A Norfair object's id from birth (``id`` is None while it initialises)."""
    return cast(int, obj.initializing_id)


class NorfairLineBiller(_Base):
    """Plain Norfair for trays and for dishes, counted at the line (see the module doc)."""

    def __init__(self, stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],
                 width: int, height: int, *, run_id: str = "eval") -> None:
        super().__init__(stream, site, class_names, width, height, run_id=run_id)
        cfg = site.tracker
        quiet_box_warnings()
        self._trackers = [
            NfTracker(distance_function="iou", distance_threshold=1.0 - cfg.iou_threshold,
                      hit_counter_max=cfg.hit_counter_max,
                      initialization_delay=min(cfg.initialization_delay,
                                               cfg.hit_counter_max - 1))
            for _ in range(2)
        ]
        self._votes: list[dict[int, _Votes]] = [{}, {}]

    def _run(self, k: int, d: Detections, id_offset: int) -> list[Obj]:
        # data: a tuple made afresh per detection, so that a track's last detection can be
        # recognised as this frame's (norfair-enough keeps a shallow copy of the detection)
        dets = [NfDetection(points=np.array([[b[0], b[1]], [b[2], b[3]]], np.float64),
                            scores=np.array([s, s], np.float64), data=(int(c),))
                for b, s, c in zip(d.boxes, d.scores, d.classes, strict=True)]
        active = self._trackers[k].update(dets)
        fresh = {id(x.data) for x in dets}
        votes = self._votes[k]
        for obj in self._trackers[k].tracked_objects:
            last = obj.last_detection
            if last is not None and id(last.data) in fresh:
                votes.setdefault(_key(obj), _Votes()).counts[last.data[0]] += 1
        out = []
        for obj in active:
            v = votes[_key(obj)]
            cls, share = v.winner()
            (x1, y1), (x2, y2) = obj.estimate
            out.append(Obj(2 * cast(int, obj.id) + id_offset,
                           (float(x1), float(y1), float(x2), float(y2)), cls, share,
                           v.counts.total(),
                           obj.last_detection is not None
                           and id(obj.last_detection.data) in fresh))
        alive = {_key(o) for o in self._trackers[k].tracked_objects}
        for key in [key for key in votes if key not in alive]:
            del votes[key]
        return out

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Track trays and dishes independently; bill at the line."""
        tray_det, dish_det = self._split(detections)
        # even ids for trays, odd for dishes: one id space per stream, as Track wants
        return self._finish(frame, self._run(0, tray_det, 0), self._run(1, dish_det, 1))


class ByteTrackBiller(_Base):
    """ByteTrack-style tracking of trays and dishes, counted at the line (see the module doc)."""

    min_score = BYTETRACK_LOW_SCORE

    def __init__(self, stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],
                 width: int, height: int, *, run_id: str = "eval") -> None:
        super().__init__(stream, site, class_names, width, height, run_id=run_id)
        high = max(site.detector.score_threshold, BYTETRACK_LOW_SCORE)
        self._next = 1
        self._trackers = [
            ByteTracker(high, BYTETRACK_LOW_SCORE, high + 0.1, BYTETRACK_BUFFER, self._new_id)
            for _ in range(2)
        ]

    def _new_id(self) -> int:
        self._next += 1
        return self._next - 1

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Track trays and dishes independently; bill at the line."""
        tray_det, dish_det = self._split(detections)
        trays, dishes = (
            [Obj(*t) for t in tracker.update(_boxes(d), d.scores.tolist(), d.classes.tolist())]
            for tracker, d in zip(self._trackers, (tray_det, dish_det), strict=True))
        return self._finish(frame, trays, dishes)


BASELINES: dict[str, type[_Base]] = {
    "per_frame": PerFrameBiller,
    "norfair_line": NorfairLineBiller,
    "bytetrack": ByteTrackBiller,
}
"""Baseline name -> biller class (constructor arguments as ``make_biller``'s)."""


def baseline_names(text: str) -> list[str]:
    """Parse ``--baselines``: a comma-separated subset of :data:`BASELINES` or ``none``."""
    if text.strip().lower() == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ValueError(f"unknown baseline(s) {bad}; valid: {sorted(BASELINES)} or 'none'")
    return list(dict.fromkeys(names))
