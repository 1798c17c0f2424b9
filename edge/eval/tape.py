"""A sequence's detections as one table, each box tied to the object that caused it.

Sits beside the pipeline, in front of ``track``: the noise harness
(:mod:`edge.eval.noise`) perturbs what a detector would hand the tracker, and
to aim a perturbation at a tray, at the dishes of one tray or at boxes that
move, it has to know which ground-truth object each box belongs to.

A :class:`Tape` holds every box of a sequence in flat arrays (frame, box,
score, class, owner), so an axis of noise is a few vectorised lines: a mask to
drop boxes, rows to add, a column to change. ``owner`` is the ground-truth
track id the box was matched to (IoU >= :data:`OWNER_IOU`, Hungarian per
frame), :data:`UNMATCHED` for a detector box matching nothing, and
:data:`MADE_UP` for a box the harness invented. :class:`Truth` indexes the
ground truth (``gt/gt.txt`` and ``gt/trays.json``) for the axes: boxes by
object and frame, velocities, which tray a dish sits on.

Two sources fill a tape: a detector's cached output (:func:`detector_tape`)
and the ground truth itself (:func:`perfect_tape`, a "perfect detector").
Class ids are the catalogue's (:mod:`edge.catalogue`), the shipped model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge.catalogue import CATALOGUE, TRAY_ID, Kind
from edge.eval.sequences import SequenceData
from edge.frames import Detections
from edge.geometry import box_iou

OWNER_IOU = 0.5
"""A detector box belongs to a ground-truth object it overlaps at least this much."""
UNMATCHED = -1
"""Owner of a detector box that matches no ground-truth object."""
MADE_UP = -2
"""Owner of a box the noise harness invented."""
PERFECT_SCORE = 0.9
"""Score of every box of the perfect detector."""
PERFECT_MIN_VISIBILITY = 0.5
"""The perfect detector sees an object when at least this share of it is visible
(the evaluation ignores ground truth below it, :mod:`edge.eval.tracking`)."""

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Tape:
    """Every detection of a sequence, one row per box.

    Attributes
    ----------
    frame : np.ndarray
        ``(m,)`` int64, 1-based frame numbers.
    boxes : np.ndarray
        ``(m, 4)`` float64 ``x1, y1, x2, y2``, source pixels.
    scores : np.ndarray
        ``(m,)`` float32 confidences.
    classes : np.ndarray
        ``(m,)`` int32 catalogue class ids.
    owner : np.ndarray
        ``(m,)`` int64 ground-truth track id, :data:`UNMATCHED` or :data:`MADE_UP`.
    """

    frame: I64
    boxes: F64
    scores: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int32]
    owner: I64

    @classmethod
    def of(cls, frame: npt.ArrayLike, boxes: npt.ArrayLike, scores: npt.ArrayLike,
           classes: npt.ArrayLike, owner: npt.ArrayLike) -> Tape:
        """A tape from array-likes (converted to the column dtypes)."""
        return cls(np.asarray(frame, np.int64).reshape(-1),
                   np.asarray(boxes, np.float64).reshape(-1, 4),
                   np.asarray(scores, np.float32).reshape(-1),
                   np.asarray(classes, np.int32).reshape(-1),
                   np.asarray(owner, np.int64).reshape(-1))

    def __len__(self) -> int:
        return len(self.frame)

    def keep(self, mask: npt.NDArray[np.bool_]) -> Tape:
        """The rows where ``mask`` is True."""
        return Tape(self.frame[mask], self.boxes[mask], self.scores[mask],
                    self.classes[mask], self.owner[mask])

    def plus(self, other: Tape) -> Tape:
        """These rows, then ``other``'s."""
        return Tape(np.concatenate([self.frame, other.frame]),
                    np.concatenate([self.boxes, other.boxes]),
                    np.concatenate([self.scores, other.scores]),
                    np.concatenate([self.classes, other.classes]),
                    np.concatenate([self.owner, other.owner]))

    def detections(self, width: int, height: int) -> dict[int, Detections]:
        """``{frame: Detections}`` for the evaluator, boxes clipped to the picture.

        A box left less than one pixel wide or high after clipping (moved off
        the picture) is dropped.
        """
        b = self.boxes.copy()
        b[:, 0::2] = b[:, 0::2].clip(0, width)
        b[:, 1::2] = b[:, 1::2].clip(0, height)
        ok = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
        order = np.argsort(self.frame[ok], kind="stable")
        frames, b = self.frame[ok][order], b[ok][order]
        scores, classes = self.scores[ok][order], self.classes[ok][order]
        cuts = np.flatnonzero(np.diff(frames)) + 1
        out = {}
        for idx in np.split(np.arange(len(frames)), cuts):
            if len(idx):
                out[int(frames[idx[0]])] = Detections(
                    np.ascontiguousarray(b[idx], np.float32),
                    np.ascontiguousarray(scores[idx]), np.ascontiguousarray(classes[idx]))
        return out


class Truth:
    """The ground truth of one sequence, indexed for the noise axes.

    Parameters
    ----------
    seq : SequenceData
        The sequence (``gt`` and ``trays``).

    Attributes
    ----------
    frame, track_id, class_id : np.ndarray
        ``(g,)`` int64 columns of every ground-truth row, ordered by frame.
    boxes : np.ndarray
        ``(g, 4)`` float64 ``x1, y1, x2, y2`` pixels.
    visibility : np.ndarray
        ``(g,)`` float64 visible share in [0, 1].
    tray_of : dict
        ``{dish or clutter track id: tray track id}`` from ``gt/trays.json``.
    """

    def __init__(self, seq: SequenceData) -> None:
        rows = [r for f in sorted(seq.gt) for r in seq.gt[f]]
        self.width, self.height, self.n_frames = seq.width, seq.height, seq.n_frames
        self.fps = seq.fps
        self.frame = np.array([r.frame for r in rows], np.int64)
        self.track_id = np.array([r.track_id for r in rows], np.int64)
        self.class_id = np.array([r.class_id for r in rows], np.int64)
        self.boxes = np.array([r.xyxy() for r in rows], np.float64).reshape(-1, 4)
        self.visibility = np.array([r.visibility for r in rows], np.float64)
        self.conf = np.array([r.conf for r in rows], np.float64)
        self._row = {(int(t), int(f)): i
                     for i, (t, f) in enumerate(zip(self.track_id, self.frame, strict=True))}
        self.tray_of: dict[int, int] = {}
        for tray in seq.trays or ():
            for item in tray.items:
                self.tray_of[item.dish_id] = tray.tray_id
            for clutter in tray.clutter_ids:
                self.tray_of[clutter] = tray.tray_id
        dish = {c.id for c in CATALOGUE if c.kind is Kind.DISH}
        self.is_tray = self.class_id == TRAY_ID
        self.is_dish = np.isin(self.class_id, list(dish))

    def row(self, track_id: int, frame: int) -> int | None:
        """Index of ``track_id``'s row in ``frame``, or None if it is not in the picture."""
        return self._row.get((track_id, frame))

    def box(self, track_id: int, frame: int) -> F64 | None:
        """``(4,)`` box of ``track_id`` in ``frame``, or None."""
        i = self._row.get((track_id, frame))
        return None if i is None else self.boxes[i]

    def velocity(self, track_id: int, frame: int) -> tuple[float, float]:
        """Centre motion of ``track_id`` at ``frame``, pixels per frame.

        The step from the previous frame, else to the next; (0, 0) when the
        object is in the picture for one frame only.
        """
        here = self.box(track_id, frame)
        if here is None:
            return 0.0, 0.0
        before, after = self.box(track_id, frame - 1), self.box(track_id, frame + 1)
        a, b = (before, here) if before is not None else (here, after)
        if b is None or a is None:
            return 0.0, 0.0
        return (float(b[0] + b[2] - a[0] - a[2]) / 2.0, float(b[1] + b[3] - a[1] - a[3]) / 2.0)

    def speeds(self, rows: npt.NDArray[np.intp]) -> F64:
        """Centre speed of the given rows (indices into the columns), pixels per frame."""
        return np.array([np.hypot(*self.velocity(int(self.track_id[i]), int(self.frame[i])))
                         for i in rows], np.float64)

    def rows_of(self, track_id: int) -> npt.NDArray[np.intp]:
        """Indices of ``track_id``'s rows, by frame."""
        return np.flatnonzero(self.track_id == track_id)


def perfect_tape(truth: Truth, *, score: float = PERFECT_SCORE,
                 min_visibility: float = PERFECT_MIN_VISIBILITY) -> Tape:
    """A perfect detector: every ground-truth box at least ``min_visibility`` visible.

    Each box keeps its true class and gets ``score``; ground truth marked
    ``conf`` 0 (ignored) is left out.
    """
    keep = (truth.visibility >= min_visibility) & (truth.conf != 0)
    return Tape.of(truth.frame[keep], truth.boxes[keep], np.full(int(keep.sum()), score),
                   truth.class_id[keep], truth.track_id[keep])


def detector_tape(truth: Truth, detections: Mapping[int, Detections]) -> Tape:
    """A detector's output as a tape, each box matched to a ground-truth object.

    Per frame, boxes and ground truth are paired by Hungarian assignment on
    IoU (pairs below :data:`OWNER_IOU` are not made), classes not considered:
    a box with the wrong class still belongs to the object it covers.
    """
    parts = []
    by_frame: dict[int, list[int]] = {}
    for i, f in enumerate(truth.frame):
        by_frame.setdefault(int(f), []).append(i)
    for f in sorted(detections):
        d = detections[f]
        if not len(d):
            continue
        owner = np.full(len(d), UNMATCHED, np.int64)
        rows = by_frame.get(f, [])
        if rows:
            iou = box_iou(d.boxes, truth.boxes[rows])
            di, gi = linear_sum_assignment(-iou)
            ok = iou[di, gi] >= OWNER_IOU
            owner[di[ok]] = truth.track_id[np.asarray(rows)[gi[ok]]]
        parts.append(Tape.of(np.full(len(d), f), d.boxes, d.scores, d.classes, owner))
    if not parts:
        return Tape.of([], [], [], [], [])
    return Tape.of(*(np.concatenate([getattr(p, c) for p in parts])
                     for c in ("frame", "boxes", "scores", "classes", "owner")))
