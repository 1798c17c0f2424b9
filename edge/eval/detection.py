"""COCO-style detection metrics: mAP, per-class AP and look-alike confusion.

Sits beside the pipeline, after ``detect``: the evaluator is fed one image at a
time (ground truth plus the detector's :class:`~edge.frames.Detections`) and
summarises at the end. Matching follows pycocotools' ``evaluateImg``:

* per class, detections in descending score order each take the unmatched
  ground truth of highest IoU (at least the threshold); non-ignored ground
  truth is preferred over ignored, as COCO prefers it over crowd boxes;
* a detection matched to ignored ground truth is neither TP nor FP, and ignored
  ground truth never counts as missed;
* at most ``max_dets`` detections per class and image (COCO's 100);
* AP is the mean of the precision envelope sampled at 101 recall points.

The acceptance metric of the project is ``map50_dishes``: mAP@0.5 over the
billable dish classes (:data:`edge.sim.menu.DISH_IDS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.geometry import box_iou
from edge.sim.menu import DISH_IDS, LOOKALIKE_PAIRS

IOU_THRESHOLDS: npt.NDArray[np.float64] = np.linspace(0.5, 0.95, 10)
RECALL_POINTS: npt.NDArray[np.float64] = np.linspace(0.0, 1.0, 101)
LOOKALIKE_IOU = 0.5

_TP, _FP, _IGNORED = 1, 0, -1


class DetectionsLike(Protocol):
    """What the evaluator reads of :class:`edge.frames.Detections`."""

    @property
    def boxes(self) -> npt.NDArray[np.float32]: ...  # (n, 4) x1, y1, x2, y2 pixels
    @property
    def scores(self) -> npt.NDArray[np.float32]: ...  # (n,)
    @property
    def classes(self) -> npt.NDArray[np.int32]: ...  # (n,)


def match_image(
    iou: npt.NDArray[np.float64],
    gt_ignore: npt.NDArray[np.bool_],
    thresholds: npt.NDArray[np.float64],
) -> npt.NDArray[np.int8]:
    """Greedily match score-ordered detections to ground truth at every threshold.

    Parameters
    ----------
    iou : np.ndarray
        ``(n_det, n_gt)`` IoU, rows in descending score order; pairs that may
        not match (different classes) hold a negative value.
    gt_ignore : np.ndarray
        ``(n_gt,)`` bool, ground truth that is neither counted nor missed.
    thresholds : np.ndarray
        ``(n_thr,)`` IoU thresholds; a pair matches when ``iou >= threshold``.

    Returns
    -------
    np.ndarray
        ``(n_thr, n_det)`` int8: 1 true positive, 0 false positive, -1 matched
        to ignored ground truth.
    """
    n_det, n_gt = iou.shape
    status = np.full((len(thresholds), n_det), _FP, dtype=np.int8)
    if n_gt == 0 or n_det == 0:
        return status
    taken = np.zeros((len(thresholds), n_gt), dtype=bool)
    rows = np.arange(len(thresholds))
    # A detection below the lowest threshold against every box is an FP at all
    # thresholds; skipping those keeps the Python loop to overlapping boxes.
    for d in np.flatnonzero(iou.max(axis=1) >= thresholds.min()):
        ok = (iou[d][None, :] >= thresholds[:, None]) & ~taken
        real = ok & ~gt_ignore[None, :]
        ign = ok & gt_ignore[None, :]
        best_real = np.where(real, iou[d][None, :], -1.0).argmax(axis=1)
        best_ign = np.where(ign, iou[d][None, :], -1.0).argmax(axis=1)
        has_real = real.any(axis=1)
        has_ign = ign.any(axis=1) & ~has_real
        taken[rows[has_real], best_real[has_real]] = True
        taken[rows[has_ign], best_ign[has_ign]] = True
        status[has_real, d] = _TP
        status[has_ign, d] = _IGNORED
    return status


def average_precision(
    scores: npt.NDArray[np.floating[Any]], status: npt.NDArray[np.int8], n_gt: int
) -> float:
    """COCO 101-point interpolated AP of one class at one IoU threshold.

    Parameters
    ----------
    scores : np.ndarray
        ``(n,)`` detection scores over the whole dataset, in the order added.
    status : np.ndarray
        ``(n,)`` int8 as returned by :func:`match_image` for one threshold.
    n_gt : int
        Number of non-ignored ground-truth objects of the class (> 0).

    Returns
    -------
    float
        AP in [0, 1].
    """
    order = np.argsort(-scores, kind="mergesort")
    st = status[order]
    st = st[st != _IGNORED]
    if st.size == 0:
        return 0.0
    tp = np.cumsum(st == _TP, dtype=np.float64)
    fp = np.cumsum(st == _FP, dtype=np.float64)
    recall = tp / n_gt
    precision = np.maximum.accumulate((tp / (tp + fp))[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.zeros_like(RECALL_POINTS)
    valid = idx < precision.size
    q[valid] = precision[idx[valid]]
    return float(q.mean())


class DetectionEvaluator:
    """Accumulates matches image by image; :meth:`summary` computes the metrics.

    Parameters
    ----------
    class_names : Sequence[str]
        Name of each 0-based class id.
    dish_ids : Sequence[int]
        Classes averaged in ``map50_dishes`` (default: the menu's dishes).
    lookalike_pairs : Sequence[tuple[int, int]]
        Class pairs whose confusion is reported (default: the menu's pairs).
    max_dets : int or None
        Highest-scoring detections kept per class and image (COCO: 100).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        dish_ids: Sequence[int] = DISH_IDS,
        lookalike_pairs: Sequence[tuple[int, int]] = LOOKALIKE_PAIRS,
        max_dets: int | None = 100,
    ) -> None:
        self.class_names = tuple(class_names)
        n = len(self.class_names)
        for c in (*dish_ids, *(c for p in lookalike_pairs for c in p)):
            if not 0 <= c < n:
                raise ValueError(f"class id {c} in dish_ids/lookalike_pairs is not in [0, {n})")
        self.dish_ids = tuple(dish_ids)
        self.lookalike_pairs = tuple((int(a), int(b)) for a, b in lookalike_pairs)
        self.max_dets = max_dets
        self.thresholds = IOU_THRESHOLDS
        self.n_images = 0
        self._n_gt = np.zeros(n, dtype=np.int64)
        self._scores: list[npt.NDArray[np.float32]] = []
        self._classes: list[npt.NDArray[np.int32]] = []
        self._status: list[npt.NDArray[np.int8]] = []
        self._confusion = np.zeros((len(self.lookalike_pairs), 2, 2), dtype=np.int64)

    def add(
        self,
        gt_boxes: npt.ArrayLike,
        gt_classes: npt.ArrayLike,
        gt_ignore: npt.ArrayLike,
        det: DetectionsLike,
    ) -> None:
        """Add one image.

        Parameters
        ----------
        gt_boxes : array_like
            ``(n_gt, 4)`` ground truth ``x1, y1, x2, y2`` in source-image pixels.
        gt_classes : array_like
            ``(n_gt,)`` 0-based class ids.
        gt_ignore : array_like
            ``(n_gt,)`` bool, e.g. visibility < 0.5.
        det : Detections
            The detector's output for the image, same pixel frame.

        Raises
        ------
        ValueError
            Shapes disagree or a class id is outside the class table.
        """
        n_cls = len(self.class_names)
        gb = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gc = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
        gi = np.asarray(gt_ignore, dtype=bool).reshape(-1)
        db = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
        ds = np.asarray(det.scores, dtype=np.float32).reshape(-1)
        dc = np.asarray(det.classes, dtype=np.int32).reshape(-1)
        if not len(gb) == len(gc) == len(gi):
            raise ValueError(
                f"ground truth lengths differ: boxes {len(gb)}, classes {len(gc)}, "
                f"ignore {len(gi)}"
            )
        if not len(db) == len(ds) == len(dc):
            raise ValueError(
                f"detection lengths differ: boxes {len(db)}, scores {len(ds)}, classes {len(dc)}"
            )
        for what, cls in (("gt_classes", gc), ("det.classes", dc)):
            if cls.size and (cls.min() < 0 or cls.max() >= n_cls):
                raise ValueError(f"{what} holds ids outside [0, {n_cls}): {np.unique(cls)}")

        # Class-major, score-descending order; rank within the class caps max_dets.
        order = np.lexsort((-ds, dc))
        db, ds, dc = db[order], ds[order], dc[order]
        if self.max_dets is not None and dc.size:
            first = np.searchsorted(dc, dc, side="left")
            keep = np.arange(dc.size) - first < self.max_dets
            db, ds, dc = db[keep], ds[keep], dc[keep]

        self.n_images += 1
        self._n_gt += np.bincount(gc[~gi], minlength=n_cls)
        iou = box_iou(db, gb)
        same = dc[:, None] == gc[None, :]
        status = match_image(np.where(same, iou, -1.0), gi, self.thresholds)
        self._scores.append(ds)
        self._classes.append(dc)
        self._status.append(status)
        self._add_confusion(iou, ds, dc, gc[~gi], np.flatnonzero(~gi))

    def _add_confusion(
        self,
        iou: npt.NDArray[np.float64],
        scores: npt.NDArray[np.float32],
        det_cls: npt.NDArray[np.int32],
        gt_cls: npt.NDArray[np.int64],
        gt_cols: npt.NDArray[np.intp],
    ) -> None:
        """Count, per look-alike pair, true class against predicted class.

        Class-agnostic greedy matching within the pair: detections of either
        class in score order take the unmatched pair GT of highest IoU >= 0.5,
        so each GT gets the best-scoring detection that overlaps it.
        """
        for k, (a, b) in enumerate(self.lookalike_pairs):
            g_sel = (gt_cls == a) | (gt_cls == b)
            d_sel = np.flatnonzero((det_cls == a) | (det_cls == b))
            if not g_sel.any() or d_sel.size == 0:
                continue
            d_sel = d_sel[np.argsort(-scores[d_sel], kind="mergesort")]
            sub = iou[np.ix_(d_sel, gt_cols[g_sel])]
            truth = (gt_cls[g_sel] == b).astype(np.intp)
            free = np.ones(sub.shape[1], dtype=bool)
            for row, d in zip(sub, d_sel, strict=True):
                cand = np.where(free & (row >= LOOKALIKE_IOU), row, -1.0)
                g = int(cand.argmax())
                if cand[g] < 0:
                    continue
                free[g] = False
                self._confusion[k, truth[g], int(det_cls[d] == b)] += 1

    def summary(self) -> dict[str, Any]:
        """Compute the metrics over every image added so far.

        Returns
        -------
        dict
            ``map50``, ``map50_95`` (means over classes with at least one
            non-ignored GT; None if there are none), ``map50_dishes``,
            ``per_class`` ``{name: {ap50, ap50_95, n_gt, n_det}}`` (APs None
            for classes without GT), ``lookalike`` (one entry per pair:
            ``classes``, ``matrix`` ``[true a/b][pred a/b]``,
            ``confusion_rate``, ``ap50``), ``lookalike_confusion_rate``,
            ``n_images``, ``iou_thresholds``.
        """
        n_cls = len(self.class_names)
        n_thr = len(self.thresholds)
        if self._scores:
            scores = np.concatenate(self._scores)
            classes = np.concatenate(self._classes)
            status = np.concatenate(self._status, axis=1)
        else:
            scores = np.zeros(0, np.float32)
            classes = np.zeros(0, np.int32)
            status = np.zeros((n_thr, 0), np.int8)
        n_det = np.bincount(classes, minlength=n_cls)
        ap = np.full((n_cls, n_thr), np.nan)
        for c in np.flatnonzero(self._n_gt > 0):
            sel = classes == c
            for t in range(n_thr):
                ap[c, t] = average_precision(scores[sel], status[t, sel], int(self._n_gt[c]))

        def mean(ids: Sequence[int] | npt.NDArray[np.intp], t: slice | int) -> float | None:
            if len(ids) == 0:
                return None
            rows = ap[np.asarray(ids, dtype=np.intp)][:, t].reshape(len(ids), -1)
            vals = rows.mean(axis=1) if rows.size else np.zeros(0)
            vals = vals[~np.isnan(vals)]
            return float(vals.mean()) if vals.size else None

        every = np.arange(n_cls)
        per_class = {
            name: {
                "ap50": None if np.isnan(ap[c, 0]) else float(ap[c, 0]),
                "ap50_95": None if np.isnan(ap[c, 0]) else float(ap[c].mean()),
                "n_gt": int(self._n_gt[c]),
                "n_det": int(n_det[c]),
            }
            for c, name in enumerate(self.class_names)
        }
        pairs = []
        for k, (a, b) in enumerate(self.lookalike_pairs):
            m = self._confusion[k]
            total = int(m.sum())
            pairs.append({
                "classes": [self.class_names[a], self.class_names[b]],
                "matrix": m.tolist(),
                "confusion_rate": (int(m[0, 1] + m[1, 0]) / total) if total else None,
                "ap50": {self.class_names[c]: per_class[self.class_names[c]]["ap50"]
                         for c in (a, b)},
            })
        conf_total = int(self._confusion.sum())
        conf_off = int(self._confusion[:, 0, 1].sum() + self._confusion[:, 1, 0].sum())
        return {
            "map50": mean(every, 0),
            "map50_95": mean(every, slice(None)),
            "map50_dishes": mean(list(self.dish_ids), 0),
            "map50_95_dishes": mean(list(self.dish_ids), slice(None)),
            "per_class": per_class,
            "lookalike": pairs,
            "lookalike_confusion_rate": conf_off / conf_total if conf_total else None,
            "n_images": self.n_images,
            "iou_thresholds": [round(float(t), 2) for t in self.thresholds],
        }
