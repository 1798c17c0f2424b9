"""Cheap appearance descriptors of detected dishes, and a frame's sharpness.

Frame selection (:mod:`calibration.select`) covers the space of what the
dishes look like. Until the detector has an embedding output (the learning
issue adds one), a dish in one frame is described by what a labeller would
call a different view of it:

* **colour**: hue (weighted by saturation), saturation and value histograms
  of its crop, each normalised to sum 1 and square-rooted (Hellinger), so the
  Euclidean distance between two crops is a histogram distance; the mean
  value carries the lighting;
* **texture and rotation**: a magnitude-weighted histogram of gradient
  orientations over the crop (rotating a dish turns it);
* **geometry**: where the dish sits on its tray (its centre relative to the
  tray box, in tray widths and heights), where the tray is in the picture,
  the dish box's size relative to the tray (partly hidden or clipped dishes
  shrink) and its aspect;
* **class**: the track's voted class, one-hot, so two classes that look
  alike to the histograms still count as two things to cover.

The blocks are weighted so that each spans roughly 0..1.5 in distance.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]

CROP = 32  # px: crops are resized to CROP x CROP before the histograms
HUE_BINS, SAT_BINS, VAL_BINS, GRAD_BINS = 8, 3, 4, 8
CLASS_WEIGHT = 0.5  # two classes differ by 0.71 in this block alone
GEOMETRY_WEIGHT = 1.0


def descriptor_size(num_classes: int) -> int:
    """Length of :func:`describe`'s vectors for a detector with ``num_classes`` classes."""
    return HUE_BINS + SAT_BINS + VAL_BINS + 1 + GRAD_BINS + 7 + num_classes


def _hist(values: npt.NDArray[np.float32], bins: int, top: float,
          weights: npt.NDArray[np.float32] | None = None) -> FloatArray:
    h, _ = np.histogram(values, bins=bins, range=(0.0, top), weights=weights)
    total = float(h.sum())
    return np.sqrt(h / total if total > 0 else np.zeros(bins)).astype(np.float32)


def describe(image: npt.NDArray[np.uint8], box: Box, tray: Box | None, class_id: int,
             num_classes: int) -> FloatArray:
    """The appearance vector of one detected dish.

    Parameters
    ----------
    image : np.ndarray
        ``(height, width, 3)`` uint8 BGR frame.
    box : (x1, y1, x2, y2)
        The dish, source pixels.
    tray : (x1, y1, x2, y2) or None
        The tray it sits on, source pixels; None for a dish on no tray (its
        tray geometry is then zero).
    class_id : int
        The track's voted class, ``0 <= class_id < num_classes``.
    num_classes : int
        Classes of the detector.

    Returns
    -------
    np.ndarray
        ``(descriptor_size(num_classes),)`` float32.
    """
    height, width = image.shape[:2]
    x1, y1 = int(np.clip(np.floor(box[0]), 0, width - 1)), int(np.clip(np.floor(box[1]), 0,
                                                                       height - 1))
    x2 = int(np.clip(np.ceil(box[2]), x1 + 1, width))
    y2 = int(np.clip(np.ceil(box[3]), y1 + 1, height))
    crop = cv2.resize(image[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_AREA)
    crop = cv2.GaussianBlur(crop, (3, 3), 0)  # sensor noise would fill empty histogram bins
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.float32)
    sat = hsv[:, 1] / 255.0
    colour = [_hist(hsv[:, 0], HUE_BINS, 180.0, sat), _hist(hsv[:, 1], SAT_BINS, 256.0),
              _hist(hsv[:, 2], VAL_BINS, 256.0),
              np.array([hsv[:, 2].mean() / 255.0], np.float32)]
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    angle = np.mod(np.arctan2(gy, gx), np.pi).ravel()
    grad = _hist(angle, GRAD_BINS, float(np.pi), np.hypot(gx, gy).ravel())
    geometry = np.zeros(7, np.float32)
    bw, bh = box[2] - box[0], box[3] - box[1]
    geometry[6] = float(np.log(max(bw, 1.0) / max(bh, 1.0))) / 2
    if tray is not None:
        tw, th = max(tray[2] - tray[0], 1.0), max(tray[3] - tray[1], 1.0)
        geometry[0] = ((box[0] + box[2]) - (tray[0] + tray[2])) / 2 / tw
        geometry[1] = ((box[1] + box[3]) - (tray[1] + tray[3])) / 2 / th
        geometry[2] = (tray[0] + tray[2]) / 2 / width
        geometry[3] = (tray[1] + tray[3]) / 2 / height
        geometry[4], geometry[5] = bw / tw, bh / th
    onehot = np.zeros(num_classes, np.float32)
    if 0 <= class_id < num_classes:
        onehot[class_id] = CLASS_WEIGHT
    return np.concatenate([*colour, grad, geometry * GEOMETRY_WEIGHT, onehot]).astype(np.float32)


def sharpness(image: npt.NDArray[np.uint8], regions: Sequence[Box]) -> float:
    """Variance of the Laplacian of the grey picture over ``regions`` (the trays).

    Motion blur in a checkout scene is on the trays (the counter stands
    still), so the measure is taken where the dishes are; with no region it
    is taken over the whole frame. Only comparable within one stream: it
    depends on the scene's texture, so :mod:`calibration.select` judges a
    frame against the stream's median.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = gray.shape
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in regions:
        mask[max(int(y1), 0):max(int(y2), 0), max(int(x1), 0):max(int(x2), 0)] = True
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    values = lap[mask] if mask.sum() >= 64 else lap.ravel()
    return float(values.var())
