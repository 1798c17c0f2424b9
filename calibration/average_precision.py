"""A quick mAP@0.5 for model selection during training.

Sits beside the training loop (:mod:`calibration.trainer`), which uses it on
the validation split after each epoch to pick ``best.ckpt``. It follows the
PASCAL VOC (2010+) all-point interpolated AP at IoU 0.5, per class, averaged
over classes that have ground truth. Ground truth marked ``ignore`` neither
counts as a miss nor makes a detection on it a false positive. The project's
reference evaluator lives in ``edge.eval``; this one only ranks checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

IOU_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Boxes of one image: ``boxes (n, 4)`` x1, y1, x2, y2; ``classes (n,)``; ``ignore (n,)``."""

    boxes: NDArray[Any]
    classes: NDArray[Any]
    ignore: NDArray[Any]


def box_iou(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """IoU matrix ``(n, m)`` of x1, y1, x2, y2 boxes ``(n, 4)`` and ``(m, 4)``."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    iou: NDArray[Any] = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    return iou


def _match_image(det: NDArray[Any], gt: GroundTruth, cls: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Scores and TP flags of one image's detections of ``cls`` (ignored matches dropped)."""
    det = det[det[:, 5] == cls]
    det = det[np.argsort(-det[:, 4], kind="stable")]
    select = gt.classes == cls
    boxes, ignore = gt.boxes[select], gt.ignore[select]
    if not len(det):
        return np.zeros(0), np.zeros(0, bool)
    if not len(boxes):
        return det[:, 4], np.zeros(len(det), bool)
    iou = box_iou(det[:, :4], boxes)
    taken = np.zeros(len(boxes), bool)
    scores, tp = [], []
    for row, score in zip(iou, det[:, 4], strict=True):
        candidates = np.where(~ignore & ~taken, row, -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= IOU_THRESHOLD:
            taken[best] = True
            scores.append(score)
            tp.append(True)
        elif not (ignore & (row >= IOU_THRESHOLD)).any():
            scores.append(score)
            tp.append(False)
    return np.array(scores, np.float64), np.array(tp, bool)


def average_precision(scores: NDArray[Any], tp: NDArray[Any], num_gt: int) -> float:
    """All-point interpolated AP of ranked detections against ``num_gt`` objects."""
    if num_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    recall = np.concatenate([[0.0], np.cumsum(hits) / num_gt, [1.0]])
    precision = np.concatenate([[1.0], np.cumsum(hits) / np.arange(1, len(hits) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(
    detections: list[NDArray[Any]], ground_truth: list[GroundTruth], num_classes: int
) -> tuple[float, dict[int, float]]:
    """mAP@0.5 over classes with ground truth.

    Parameters
    ----------
    detections : list of np.ndarray
        Per image ``(K, 6)``: x1, y1, x2, y2, score, class (the model's output).
    ground_truth : list of GroundTruth
        Per image, same order and coordinate frame.
    num_classes : int
        C.

    Returns
    -------
    tuple
        mAP (nan without any ground truth) and AP per class id.
    """
    per_class: dict[int, float] = {}
    for cls in range(num_classes):
        num_gt = sum(int(((g.classes == cls) & ~g.ignore).sum()) for g in ground_truth)
        if num_gt == 0:
            continue
        parts = [_match_image(d, g, cls) for d, g in zip(detections, ground_truth, strict=True)]
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        tp = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
        per_class[cls] = average_precision(scores, tp, num_gt)
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return mean, per_class
