"""CenterNet training targets and losses for the stride-8 detector head.

Sits between :mod:`calibration.data` (boxes in network-input pixels) and
:mod:`calibration.trainer`. Each object becomes a Gaussian peak on its
heatmap channel, with the radius CenterNet derives from the box size, plus a
log-size and a sub-cell offset target at its centre cell. Objects marked
``ignore`` (less than half visible) draw no peak and switch the heatmap loss
off inside their box on their channel, so they count neither as positive nor
negative.

The heatmap channel of an object is its class for the ``centernet`` head; for
the ``factorized`` head it is 0 for trays and 1 for everything else, and a
per-cell class map labels item centres for the head's softmax classifier:
the centre cell, its 8 neighbours (a decoded peak is often one cell off the
centre, and 9 labels per item feed the classifier 9x more examples per step;
FCOS's centre sampling does the same) and further cells where the item's
Gaussian is still >= 0.8. Trays are not labelled: the decoder names a
channel-0 peak a tray without asking the classifier, and on ds1 tray cells
would take 45 % of the classifier's supervision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 -- the PyTorch convention
from numpy.typing import NDArray

from calibration.model import STRIDE, TRAY_CLASS, HeadType

MIN_OVERLAP = 0.7  # CenterNet: a box shifted by the radius keeps IoU >= 0.7
CLASS_TARGET_MIN = 0.8  # Gaussian value from which a cell is labelled for the classifier
CLASS_NEIGHBOURHOOD = 1  # cells around an item centre always labelled (1: the 3x3 block)
NO_CLASS = -1  # class-map value of unlabelled cells (cross-entropy ignore_index)
LABEL_SMOOTHING = 0.05


@dataclass(frozen=True, slots=True)
class Targets:
    """Dense targets of one image on a ``(h, w)`` output grid.

    Attributes
    ----------
    heatmap : np.ndarray
        ``(K, h, w)`` float32 in [0, 1]; exactly 1 at object centre cells.
        K = C for the centernet head, 2 for the factorized one.
    heatmap_weight : np.ndarray
        ``(K, h, w)`` float32; 0 where the heatmap loss is ignored, else 1.
    regression : np.ndarray
        ``(4, h, w)`` float32: log width, log height (grid cells), offset x, y
        (cells, in [0, 1)); valid where ``regression_mask`` is 1.
    regression_mask : np.ndarray
        ``(h, w)`` float32; 1 at object centre cells.
    classes : np.ndarray
        ``(h, w)`` int64 item class id the classifier learns at a cell,
        ``NO_CLASS`` (-1) elsewhere; the nearer centre wins a shared cell.
        All ``NO_CLASS`` for the centernet head.
    objects : np.ndarray
        ``(h, w)`` int64 id of the object whose label ``classes`` holds at a
        cell (the ``ids`` given to :func:`encode_targets`), -1 elsewhere.
    """

    heatmap: NDArray[Any]
    heatmap_weight: NDArray[Any]
    regression: NDArray[Any]
    regression_mask: NDArray[Any]
    classes: NDArray[Any]
    objects: NDArray[Any]


def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """CenterNet's Gaussian radius for a box of ``height x width`` grid cells.

    The smallest of the three quadratic solutions in CornerNet/CenterNet
    (``gaussian_radius`` in their code), so that a prediction within the radius
    still has IoU >= ``min_overlap`` with the box.
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def gaussian_window(
    shape: tuple[int, ...], center: tuple[int, int], radius: int
) -> tuple[tuple[slice, slice], NDArray[Any]]:
    """The Gaussian of ``radius`` cells at ``center=(x, y)``, clipped to a ``(h, w)`` grid.

    Returns
    -------
    tuple
        ``(rows, cols)`` slices of the grid and the float32 patch that covers them.
    """
    diameter = 2 * radius + 1
    sigma = diameter / 6
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma * sigma))
    x, y = center
    height, width = shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    window = (slice(y - top, y + bottom), slice(x - left, x + right))
    return window, kernel[radius - top : radius + bottom, radius - left : radius + right]


def draw_gaussian(heatmap: NDArray[Any], center: tuple[int, int], radius: int) -> None:
    """Max-blend a Gaussian of ``radius`` cells centred on ``center=(x, y)`` into ``(h, w)``."""
    window, patch = gaussian_window(heatmap.shape, center, radius)
    region = heatmap[window]
    np.maximum(region, patch, out=region)


def encode_targets(
    boxes: NDArray[Any],
    classes: NDArray[Any],
    ignore: NDArray[Any],
    num_classes: int,
    input_size: tuple[int, int],
    *,
    head: HeadType = "centernet",
    ids: NDArray[Any] | None = None,
) -> Targets:
    """Encode boxes of one image into dense CenterNet targets.

    Parameters
    ----------
    boxes : np.ndarray
        ``(n, 4)`` x1, y1, x2, y2 in network-input pixels.
    classes : np.ndarray
        ``(n,)`` int class ids in ``[0, num_classes)``.
    ignore : np.ndarray
        ``(n,)`` bool; True for objects neither positive nor negative.
    num_classes : int
        C.
    input_size : tuple of int
        ``(width, height)`` of the network input in pixels.
    head : {"centernet", "factorized"}
        Heatmap layout: one channel per class, or trays / everything else.
    ids : np.ndarray, optional
        ``(n,)`` int64 object ids written to :attr:`Targets.objects`.

    Returns
    -------
    Targets
        On the ``(height / 8, width / 8)`` grid.
    """
    grid_w, grid_h = input_size[0] // STRIDE, input_size[1] // STRIDE
    factorized = head == "factorized"
    heatmap = np.zeros((2 if factorized else num_classes, grid_h, grid_w), np.float32)
    weight = np.ones_like(heatmap)
    regression = np.zeros((4, grid_h, grid_w), np.float32)
    mask = np.zeros((grid_h, grid_w), np.float32)
    class_map = np.full((grid_h, grid_w), NO_CLASS, np.int64)
    objects = np.full((grid_h, grid_w), -1, np.int64)
    claim = np.zeros((grid_h, grid_w), np.float32)  # Gaussian value of a cell's label
    if ids is None:
        ids = np.full(len(classes), -1, np.int64)
    for box, cls, skip, oid in zip(boxes / STRIDE, classes, ignore, ids, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        item = int(cls) != TRAY_CLASS
        channel = int(item) if factorized else int(cls)
        if skip:
            weight[
                channel,
                max(0, math.floor(y1)) : math.ceil(y2),
                max(0, math.floor(x1)) : math.ceil(x2),
            ] = 0
            continue
        width, height = x2 - x1, y2 - y1
        if width <= 0 or height <= 0:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ix = min(max(int(cx), 0), grid_w - 1)
        iy = min(max(int(cy), 0), grid_h - 1)
        radius = max(0, int(gaussian_radius(math.ceil(height), math.ceil(width))))
        draw_gaussian(heatmap[channel], (ix, iy), radius)
        regression[:, iy, ix] = (math.log(width), math.log(height), cx - ix, cy - iy)
        mask[iy, ix] = 1.0
        if not (factorized and item):
            continue
        for r, floor in ((radius, CLASS_TARGET_MIN), (CLASS_NEIGHBOURHOOD, 0.0)):
            window, patch = gaussian_window(class_map.shape, (ix, iy), r)
            strength = np.where(patch >= floor, patch, 0.0)
            wins = strength > claim[window]
            class_map[window][wins] = cls
            objects[window][wins] = oid
            claim[window][wins] = strength[wins]
    weight[heatmap > 0] = 1.0  # a real object inside an ignored box still counts
    return Targets(heatmap, weight, regression, mask, class_map, objects)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed.

    Parameters
    ----------
    logits, target, weight : torch.Tensor
        ``(N, C, h, w)``: heatmap logits, Gaussian targets, per-cell loss weight.

    Returns
    -------
    tuple of torch.Tensor
        Summed loss (scalar) and the number of positive cells (scalar).
    """
    positive = (target >= 1.0).to(logits.dtype)
    prob = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = positive * (1 - prob) ** 2 * log_p
    neg_loss = (1 - positive) * (1 - target) ** 4 * prob**2 * log_not_p
    return -(weight * (pos_loss + neg_loss)).sum(), positive.sum()


def detection_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    size_weight: float = 1.0,
    offset_weight: float = 1.0,
    class_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Total loss of a batch and its parts, each normalised by the number of objects.

    Parameters
    ----------
    outputs : tuple of torch.Tensor
        :class:`calibration.model.DishNet` outputs: heatmap logits, log-size,
        offset and, from the factorized head, class logits ``(N, C, h, w)``.
    batch : dict of torch.Tensor
        Stacked :class:`Targets` fields: ``heatmap``, ``heatmap_weight``,
        ``regression``, ``regression_mask`` and ``classes``.

    Returns
    -------
    dict of torch.Tensor
        Scalars ``loss``, ``heatmap``, ``size``, ``offset``; plus ``class``
        for the factorized head: label-smoothed cross-entropy of a softmax
        over the item classes 1..C-1 (what the decoder uses), per labelled cell;
        an optional ``batch["class_weight"]`` ``(N, h, w)`` weighs each cell.
    """
    heatmap_logits, log_size, offset = outputs[:3]
    if heatmap_logits.shape[1] != batch["heatmap"].shape[1]:
        msg = (
            f"heatmap has {heatmap_logits.shape[1]} channels, its targets "
            f"{batch['heatmap'].shape[1]}: dataset and model were built for different heads"
        )
        raise ValueError(msg)
    heat_sum, num_pos = focal_loss(heatmap_logits, batch["heatmap"], batch["heatmap_weight"])
    norm = torch.clamp(num_pos, min=1.0)
    mask = batch["regression_mask"].unsqueeze(1)
    regression = batch["regression"]
    size = (mask * (log_size - regression[:, :2]).abs()).sum() / norm
    off = (mask * (offset - regression[:, 2:]).abs()).sum() / norm
    heat = heat_sum / norm
    losses = {
        "loss": heat + size_weight * size + offset_weight * off,
        "heatmap": heat,
        "size": size,
        "offset": off,
    }
    if len(outputs) == 4:
        labels = batch["classes"]
        labelled = (labels != NO_CLASS).to(heat.dtype)
        cell_loss = class_cell_loss(outputs[3], labels)
        if "class_weight" in batch:  # wrong labels found in training weigh less (noisy.py)
            labelled = labelled * batch["class_weight"]
            cell_loss = cell_loss * batch["class_weight"]
        cls = cell_loss.sum() / torch.clamp(labelled.sum(), min=1.0)
        losses["loss"] = losses["loss"] + class_weight * cls
        losses["class"] = cls
    return losses


def class_cell_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label-smoothed cross-entropy of each labelled cell, 0 elsewhere.

    Parameters
    ----------
    class_logits : torch.Tensor
        ``(N, C, h, w)`` the factorized head's class logits (the tray row unused).
    labels : torch.Tensor
        ``(N, h, w)`` :attr:`Targets.classes`.

    Returns
    -------
    torch.Tensor
        ``(N, h, w)``: the softmax runs over the item classes 1..C-1, as the decoder's.
    """
    first_item = TRAY_CLASS + 1
    loss: torch.Tensor = F.cross_entropy(
        class_logits[:, first_item:],
        torch.where(labels >= first_item, labels - first_item, NO_CLASS),
        ignore_index=NO_CLASS,
        label_smoothing=LABEL_SMOOTHING,
        reduction="none",
    )
    return loss
