"""Turn a detector network's raw output into :class:`~edge.frames.Detections`.

Last step of the detection stage (:mod:`edge.detect`), after inference and
before the tracker. A decoder is a strategy object chosen once per model by
:func:`decoder_for`: :class:`ContractDecoder` for the project's
``detections-v1`` rows, :class:`YoloDecoder` for Ultralytics YOLOv8/11 raw
heads. Both threshold and suppress in network input pixels (where the model
drew its boxes), then map to each source image's pixels with its
:class:`~edge.detect.preprocess.BoxMapping`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.detect.model_info import CONTRACT_FORMAT, YOLO_FORMAT, ModelInfo
from edge.detect.preprocess import BoxMapping
from edge.errors import ModelError
from edge.frames import Detections
from edge.geometry import nms

FloatArray = npt.NDArray[np.float32]


class Decoder(Protocol):
    """Decodes a batch of raw network outputs into per-image detections."""

    def __call__(self, output: FloatArray, mappings: Sequence[BoxMapping],
                 embeddings: FloatArray | None = None) -> list[Detections]:
        """Decode ``output`` (``(N, ...)``, network input pixels) for ``N`` source images.

        ``mappings[i]`` takes image ``i``'s boxes back to its source pixels;
        ``embeddings`` (``(N, K, D)``, the model's second output, row for row
        with ``output``) go with the detections they describe.
        """
        ...


def _check_threshold(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_batch(output: FloatArray, mappings: Sequence[BoxMapping], expected: str,
                 ok: bool) -> None:
    if not ok or output.ndim != 3 or output.shape[0] != len(mappings):
        raise ModelError(f"model output has shape {list(output.shape)} for {len(mappings)} "
                         f"images; expected {expected}")


def _finish(boxes: FloatArray, scores: FloatArray, classes: npt.NDArray[np.int32],
            mapping: BoxMapping, embeddings: FloatArray | None = None) -> Detections:
    """Map network-pixel boxes to source pixels, dropping boxes that lay only in the border."""
    source = mapping.to_source(boxes)
    inside = (source[:, 2] > source[:, 0]) & (source[:, 3] > source[:, 1])
    return Detections(boxes=np.ascontiguousarray(source[inside]),
                      scores=np.ascontiguousarray(scores[inside], dtype=np.float32),
                      classes=np.ascontiguousarray(classes[inside], dtype=np.int32),
                      embeddings=None if embeddings is None
                      else np.ascontiguousarray(embeddings[inside], dtype=np.float32))


class ContractDecoder:
    """Decoder for ``detections-v1`` output ``(N, K, 6)``: x1, y1, x2, y2, score, class.

    Parameters
    ----------
    num_classes : int
        Class ids must lie in ``[0, num_classes)``.
    score_threshold : float
        Rows scoring below are dropped; rows scoring 0 are padding and always dropped.
    suppress_iou : float or None
        Class-agnostic suppression of near-duplicates: of two boxes with IoU
        above this, the lower-scoring one is dropped whatever the classes
        (a dish is one dish, even when the model hesitates between two
        look-alike classes). ``None`` turns it off.
    max_detections : int or None
        Keep at most this many per image, highest scores first.
    """

    def __init__(self, num_classes: int, score_threshold: float = 0.25,
                 suppress_iou: float | None = 0.7, max_detections: int | None = None) -> None:
        _check_threshold("score_threshold", score_threshold)
        if suppress_iou is not None:
            _check_threshold("suppress_iou", suppress_iou)
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.suppress_iou = suppress_iou
        self.max_detections = max_detections

    def __call__(self, output: FloatArray, mappings: Sequence[BoxMapping],
                 embeddings: FloatArray | None = None) -> list[Detections]:
        """Decode ``(N, K, 6)`` rows in network input pixels; see :class:`Decoder`."""
        _check_batch(output, mappings, "[N, K, 6] (detections-v1)",
                     output.ndim == 3 and output.shape[-1] == 6)
        if embeddings is not None and embeddings.shape[:2] != output.shape[:2]:
            raise ModelError(f"model output 'embeddings' has shape {list(embeddings.shape)} "
                             f"for detections {list(output.shape)}; expected [N, K, D]")
        results = []
        for i, (image_rows, mapping) in enumerate(zip(output, mappings, strict=True)):
            scores = image_rows[:, 4]
            picked = np.flatnonzero((scores >= self.score_threshold) & (scores > 0)
                                    & np.isfinite(image_rows).all(axis=1))
            rows = image_rows[picked]
            classes = np.rint(rows[:, 5]).astype(np.int32)
            bad = (classes < 0) | (classes >= self.num_classes)
            if bad.any():
                raise ModelError(f"model output class {rows[bad, 5][0]} is not in "
                                 f"[0, {self.num_classes}) (the model's class_names)")
            boxes, scores = rows[:, :4], rows[:, 4]
            if self.suppress_iou is not None:
                keep = nms(boxes, scores, self.suppress_iou, max_keep=self.max_detections)
            else:
                keep = np.argsort(-scores, kind="stable")[:self.max_detections]
            results.append(_finish(boxes[keep], scores[keep], classes[keep], mapping,
                                   None if embeddings is None else embeddings[i, picked[keep]]))
        return results


class YoloDecoder:
    """Decoder for Ultralytics YOLOv8/11 raw heads ``(N, 4 + C, A)``.

    Each of the ``A`` anchor columns holds cx, cy, w, h (network input
    pixels) and ``C`` class scores (no objectness). A column takes its best
    class (Ultralytics' ``multi_label=False``), is kept when that score
    reaches the threshold, and then boxes go through class-aware NMS.

    Parameters
    ----------
    num_classes : int
        ``C``.
    score_threshold : float
        Minimum best-class score.
    iou_threshold : float
        NMS IoU above which the lower-scoring box of the same class is dropped
        (0.7, Ultralytics' default for prediction).
    max_detections : int
        Keep at most this many per image.
    max_candidates : int
        Only the highest-scoring this many columns enter NMS, bounding its cost
        when the threshold is low.
    """

    def __init__(self, num_classes: int, score_threshold: float = 0.25,
                 iou_threshold: float = 0.7, max_detections: int = 300,
                 max_candidates: int = 30000) -> None:
        _check_threshold("score_threshold", score_threshold)
        _check_threshold("iou_threshold", iou_threshold)
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.max_candidates = max_candidates

    def __call__(self, output: FloatArray, mappings: Sequence[BoxMapping],
                 embeddings: FloatArray | None = None) -> list[Detections]:
        """Decode ``(N, 4 + C, A)`` raw heads in network input pixels; see :class:`Decoder`
        (a YOLO head has no embeddings: ``embeddings`` is ignored)."""
        _check_batch(output, mappings, f"[N, {4 + self.num_classes}, A] (YOLO raw head)",
                     output.ndim == 3 and output.shape[1] == 4 + self.num_classes)
        results = []
        for head, mapping in zip(output, mappings, strict=True):
            class_scores = head[4:]
            classes = class_scores.argmax(axis=0)
            scores = np.take_along_axis(class_scores, classes[None], axis=0)[0]
            candidates = np.flatnonzero((scores >= self.score_threshold) & (scores > 0))
            if candidates.size > self.max_candidates:
                top = np.argpartition(-scores[candidates], self.max_candidates - 1)
                candidates = candidates[top[:self.max_candidates]]
            cx, cy, w, h = head[:4, candidates]
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
            scores, labels = scores[candidates], classes[candidates].astype(np.int32)
            keep = nms(boxes, scores, self.iou_threshold, labels, self.max_detections)
            results.append(_finish(boxes[keep], scores[keep], labels[keep], mapping))
        return results


def decoder_for(info: ModelInfo, score_threshold: float = 0.25) -> Decoder:
    """The decoder for a model's ``output_format``, with default suppression settings."""
    if info.output_format == CONTRACT_FORMAT:
        return ContractDecoder(info.num_classes, score_threshold)
    if info.output_format == YOLO_FORMAT:
        return YoloDecoder(info.num_classes, score_threshold)
    raise ModelError(f"no decoder for output_format {info.output_format!r} "
                     f"(valid: {CONTRACT_FORMAT!r}, {YOLO_FORMAT!r})")
