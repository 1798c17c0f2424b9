"""A quick mAP@0.5 for model selection during training.

Sits beside the training loop (:mod:`calibration.trainer`), which uses it on
the validation split after each epoch to pick ``best.ckpt``. It is a thin
adapter over the project's reference evaluator
(:class:`edge.eval.detection.DetectionEvaluator`: COCO-style matching,
ignored ground truth neither a miss nor a false positive), fed with the raw
``(K, 6)`` rows the model decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.eval.detection import DetectionEvaluator


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """Boxes of one image: ``boxes (n, 4)`` x1, y1, x2, y2; ``classes (n,)``; ``ignore (n,)``."""

    boxes: NDArray[Any]
    classes: NDArray[Any]
    ignore: NDArray[Any]


@dataclass(frozen=True, slots=True)
class _Rows:
    """``(K, 6)`` model rows seen as detections (zero-score padding dropped)."""

    boxes: NDArray[Any]
    scores: NDArray[Any]
    classes: NDArray[Any]

    @classmethod
    def of(cls, rows: NDArray[Any]) -> _Rows:
        keep = rows[:, 4] > 0
        return cls(rows[keep, :4], rows[keep, 4], rows[keep, 5].astype(np.int32))


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
    names = [str(i) for i in range(num_classes)]
    evaluator = DetectionEvaluator(names, dish_ids=(), lookalike_pairs=())
    for rows, truth in zip(detections, ground_truth, strict=True):
        evaluator.add(truth.boxes, truth.classes, truth.ignore, _Rows.of(np.asarray(rows)))
    summary = evaluator.summary()
    per_class = {int(name): float(v["ap50"]) for name, v in summary["per_class"].items()
                 if v.get("n_gt", 0) > 0 and v.get("ap50") is not None}
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return mean, per_class
