"""Box geometry shared by detection, tracking, billing and evaluation."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

_Float = TypeVar("_Float", bound=np.floating[Any])


def _iou(a: npt.ArrayLike, b: npt.ArrayLike, dtype: type[_Float]) -> npt.NDArray[_Float]:
    a = np.asarray(a, dtype=dtype).reshape(-1, 4)
    b = np.asarray(b, dtype=dtype).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    # np.maximum, not np.clip: the same values, at a fifth of the cost on the few
    # boxes of a frame (numpy 2's clip goes through Python)
    zero = dtype(0.0)
    inter = np.maximum(iw, zero) * np.maximum(ih, zero)
    area_a = np.maximum(a[:, 2] - a[:, 0], zero) * np.maximum(a[:, 3] - a[:, 1], zero)
    area_b = np.maximum(b[:, 2] - b[:, 0], zero) * np.maximum(b[:, 3] - b[:, 1], zero)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: npt.NDArray[_Float] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Pairwise intersection over union of two sets of boxes.

    Parameters
    ----------
    a, b : array_like
        ``(n, 4)`` and ``(m, 4)`` boxes as ``x1, y1, x2, y2`` in the same frame
        (pixels).

    Returns
    -------
    np.ndarray
        ``(n, m)`` float64 IoU in [0, 1]; 0 where both boxes are empty.
    """
    return _iou(a, b, np.float64)


_NMS_MATRIX_MAX = 1024
"""Up to this many boxes NMS computes all IoUs at once (4 MiB of float32 at most)."""


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32], iou_threshold: float,
        classes: npt.NDArray[np.int32] | None = None,
        max_keep: int | None = None) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression.

    Parameters
    ----------
    boxes : np.ndarray
        ``(n, 4)`` float32 x1, y1, x2, y2 (pixels). IoUs are computed in
        float32, the detector's precision, so a box at the threshold is kept or
        suppressed the same way by the decoder and the tracker.
    scores : np.ndarray
        ``(n,)``.
    iou_threshold : float
        A box is suppressed when its IoU with a kept, higher-scoring box is
        strictly greater than this.
    classes : np.ndarray, optional
        ``(n,)`` class ids: boxes only suppress boxes of their own class.
        ``None`` suppresses across classes.
    max_keep : int, optional
        Stop after keeping this many.

    Returns
    -------
    np.ndarray
        Indices of the kept boxes, highest score first.
    """
    if classes is not None and len(boxes):
        # Shift each class to its own region so boxes of different classes never
        # overlap; one pass then does per-class NMS (the torchvision batched_nms trick).
        span = float(boxes.max() - boxes.min()) + 1.0
        boxes = boxes + (classes.astype(np.float32) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    if max_keep is not None and max_keep <= 0:
        return np.asarray(keep, dtype=np.intp)
    if order.size <= _NMS_MATRIX_MAX:
        # One IoU matrix and a boolean sweep: the same result as the loop below,
        # without a NumPy call per kept box (the tracker runs this every frame).
        ordered = boxes[order]
        overlaps = _iou(ordered, ordered, np.float32) > iou_threshold
        suppressed = np.zeros(order.size, dtype=bool)
        for i in range(order.size):
            if suppressed[i]:
                continue
            keep.append(int(order[i]))
            if max_keep is not None and len(keep) >= max_keep:
                break
            suppressed |= overlaps[i]
        return np.asarray(keep, dtype=np.intp)
    while order.size and (max_keep is None or len(keep) < max_keep):
        best, order = order[0], order[1:]
        keep.append(int(best))
        if order.size:
            order = order[_iou(boxes[best:best + 1], boxes[order], np.float32)[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)
