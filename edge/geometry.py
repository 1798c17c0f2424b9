"""Box geometry shared by tracking, billing and evaluation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


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
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0.0) * (a[:, 3] - a[:, 1]).clip(0.0)
    area_b = (b[:, 2] - b[:, 0]).clip(0.0) * (b[:, 3] - b[:, 1]).clip(0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: npt.NDArray[np.float64] = np.divide(
        inter, union, out=np.zeros_like(inter), where=union > 0
    )
    return iou
