"""Trackers on a plain MOTChallenge sequence: one generic object class, no trays, no bills.

Used by ``dishtracker eval tracking`` when the detections carry no class
(``det.txt`` class column -1 or absent) and by ``bench/mot.py``. Each
tracker is wrapped as a :class:`~edge.billing.model.Biller` that never bills,
so :func:`edge.eval.tracking.evaluate_sequence` runs and scores it like any
system (its ``generic`` mode: every ground-truth box in one category):

* ``tracker`` -- the project's generic tracker,
  :class:`edge.track.norfair_tracker.NorfairTracker`, with the site's
  ``[tracker]`` settings;
* ``norfair`` -- plain Norfair as its users run it: IoU distance, the same
  three settings (or those given, e.g. tuned ones), every initialised object
  Norfair returns;
* ``bytetrack`` -- :class:`edge.eval.bytetrack.ByteTracker` with the
  ``bytetrack`` baseline's settings (:mod:`edge.eval.baselines`).

Detections reach every tracker as class 0, named :data:`OBJECT_CLASS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from norfair import Detection as NfDetection
from norfair import Tracker as NfTracker

from edge.billing.model import BillerStep
from edge.config import SiteConfig, StreamConfig, TrackerConfig
from edge.eval.baselines import BYTETRACK_BUFFER, BYTETRACK_LOW_SCORE
from edge.eval.bytetrack import ByteTracker
from edge.eval.tracking import MOT_IOU, MOT_LEGEND
from edge.frames import Detections, Frame, Track
from edge.track.norfair_adapter import quiet_box_warnings
from edge.track.norfair_tracker import NorfairTracker

OBJECT_CLASS = "object"
CLASS_NAMES = (OBJECT_CLASS,)


class _Tracker(Protocol):
    def update(self, frame: Frame, detections: Detections | None) -> tuple[Track, ...]: ...


class PlainNorfair:
    """Norfair with IoU distance and the given settings; its output as tracks.

    Parameters
    ----------
    config : TrackerConfig
        ``iou_threshold`` (distance threshold ``1 - iou_threshold``),
        ``hit_counter_max`` and ``initialization_delay``.
    """

    def __init__(self, config: TrackerConfig) -> None:
        quiet_box_warnings()
        self._tracker = NfTracker(
            distance_function="iou", distance_threshold=1.0 - config.iou_threshold,
            hit_counter_max=config.hit_counter_max,
            initialization_delay=min(config.initialization_delay, config.hit_counter_max - 1))

    def update(self, frame: Frame, detections: Detections | None) -> tuple[Track, ...]:
        """Advance one frame; every initialised object, detected in this frame or predicted."""
        d = detections if detections is not None else Detections.empty()
        dets = [NfDetection(points=np.array([[b[0], b[1]], [b[2], b[3]]], np.float64),
                            data=(float(s),))
                for b, s in zip(d.boxes, d.scores, strict=True)]
        fresh = {id(x.data) for x in dets}
        out = []
        for obj in self._tracker.update(dets):
            (x1, y1), (x2, y2) = obj.estimate
            out.append(Track(obj.id or 0, (float(x1), float(y1), float(x2), float(y2)), 0,
                             OBJECT_CLASS, 1.0, 0, id(obj.last_detection.data) in fresh))
        return tuple(out)


class GenericByteTrack:
    """:class:`~edge.eval.bytetrack.ByteTracker` for one class.

    Parameters
    ----------
    high_score : float
        Detections from this score start tracks and enter the first association.
    """

    min_score = BYTETRACK_LOW_SCORE

    def __init__(self, high_score: float) -> None:
        self._next = 0
        high = max(high_score, BYTETRACK_LOW_SCORE)
        self._tracker = ByteTracker(high, BYTETRACK_LOW_SCORE, high + 0.1, BYTETRACK_BUFFER,
                                    self._new_id)

    def _new_id(self) -> int:
        self._next += 1
        return self._next

    def update(self, frame: Frame, detections: Detections | None) -> tuple[Track, ...]:
        """Advance one frame; the tracks matched in it (ByteTrack's output)."""
        d = detections if detections is not None else Detections.empty()
        boxes = [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in d.boxes]
        out = self._tracker.update(boxes, d.scores.tolist(), [0] * len(boxes))
        return tuple(Track(tid, box, 0, OBJECT_CLASS, 1.0, hits, True)
                     for tid, box, _, _, hits in out)


class TrackerBiller:
    """A tracker as a :class:`~edge.billing.model.Biller` that never bills.

    Takes the arguments of ``make_biller`` (``stream``, ``site``, ``class_names``,
    ``width``, ``height``, ``run_id``); ``make`` builds the tracker from the site.
    """

    min_score: float | None = None
    identities = True

    def __init__(self, stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],
                 width: int, height: int, *, run_id: str = "eval",
                 make: Callable[[SiteConfig], _Tracker]) -> None:
        self.tracker = make(site)

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Track one frame (:class:`~edge.billing.model.Biller`); nothing is billed."""
        return BillerStep(self.tracker.update(frame, detections), (), ())


TRACKERS: dict[str, Callable[[SiteConfig], _Tracker]] = {
    "tracker": lambda site: NorfairTracker(CLASS_NAMES, site.tracker),
    "norfair": lambda site: PlainNorfair(site.tracker),
    "bytetrack": lambda site: GenericByteTrack(site.detector.score_threshold),
}
"""Generic tracker name -> builder from the site config (the project's own first)."""

BASELINE_OF = {"norfair_line": "norfair", "bytetrack": "bytetrack"}
"""The generic counterpart of each tray baseline that tracks (``per_frame`` has none)."""


def biller_factory(make: Callable[[SiteConfig], _Tracker]) -> Callable[..., TrackerBiller]:
    """A :data:`~edge.eval.tracking.BillerFactory` of ``make``'s tracker."""

    def factory(*args: Any, **kwargs: Any) -> TrackerBiller:
        return TrackerBiller(*args, make=make, **kwargs)

    return factory


LEGEND = (
    *MOT_LEGEND,
    "DetA       detection accuracy TP / (TP + FN + FP), mean over IoU 0.05 .. 0.95",
    "AssA       association accuracy: how much of each matched object's life its track covers",
    "ms/frame   median time of one tracker update",
    f"one generic object class; CLEAR MOT and IDF1 pair at IoU >= {MOT_IOU}",
)
"""What the columns of :func:`format_mot_table` mean."""


def format_mot_table(rows: Mapping[str, Mapping[str, Any]], *, legend: bool = True) -> str:
    """One line per tracker: MOTA, IDF1, HOTA, DetA, AssA, IDsw, ms/frame; a legend under it.

    Parameters
    ----------
    rows : mapping
        Tracker name -> its summary (:meth:`edge.eval.tracking.SystemResult.summary`).
    """
    head = (f"{'tracker':<14} {'MOTA':>7} {'IDF1':>7} {'HOTA':>7} {'DetA':>7} {'AssA':>7} "
            f"{'IDsw':>6} {'ms/frame':>9}")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        cells = [r.get(k) for k in ("mota", "idf1", "hota", "deta", "assa")]
        lines.append(f"{name:<14} " + " ".join("      -" if v is None else f"{v:7.3f}"
                                                for v in cells)
                     + f" {r.get('id_switches', 0):>6d} "
                     + ("        -" if r.get("update_ms_p50") is None
                        else f"{r['update_ms_p50']:9.2f}"))
    if legend:
        lines += ["", *LEGEND]
    return "\n".join(lines)
