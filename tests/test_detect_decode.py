"""Decoding network outputs: thresholds, suppression, YOLO raw heads, mapping to source pixels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from detect_models import CONSTANT_ROWS, yolo_head

from edge.detect.decode import ContractDecoder, YoloDecoder, decoder_for
from edge.detect.model_info import ModelInfo
from edge.detect.preprocess import BoxMapping
from edge.errors import ModelError
from edge.frames import Detections
from edge.geometry import box_iou, nms

IDENTITY = BoxMapping(1.0, 1.0, 0.0, 0.0, (320, 256))


def _reference_nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32],
                   threshold: float, classes: npt.NDArray[np.int32] | None) -> list[int]:
    """Textbook greedy NMS, one box at a time."""
    iou = box_iou(boxes, boxes)
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(iou[i, k] <= threshold or (classes is not None and classes[i] != classes[k])
               for k in keep):
            keep.append(i)
    return keep


def _info(output_format: str) -> ModelInfo:
    return ModelInfo(("a", "b", "c"), (320, 256), (0, 0, 0), (1, 1, 1), "RGB", "letterbox",
                     output_format, "v", None)  # type: ignore[arg-type]


def test_contract_rows_below_threshold_and_padding_are_dropped() -> None:
    output = CONSTANT_ROWS[None]
    kept = ContractDecoder(3, score_threshold=0.25, suppress_iou=None)(output, [IDENTITY])[0]
    np.testing.assert_allclose(kept.scores, [0.9, 0.6])
    low = ContractDecoder(3, score_threshold=0.05, suppress_iou=None)(output, [IDENTITY])[0]
    np.testing.assert_allclose(low.scores, [0.9, 0.6, 0.1])
    zero = ContractDecoder(3, score_threshold=0.0, suppress_iou=None)(output, [IDENTITY])[0]
    assert len(zero) == 3  # the two padding rows score 0


def test_cross_class_suppression_keeps_the_higher_score() -> None:
    decoded = ContractDecoder(3, score_threshold=0.25)(CONSTANT_ROWS[None], [IDENTITY])[0]
    assert len(decoded) == 1
    assert decoded.classes.tolist() == [1]
    np.testing.assert_allclose(decoded.boxes, [[10, 10, 60, 60]])


def test_suppression_only_above_the_iou_threshold() -> None:
    rows = np.array([[[0, 0, 100, 100, 0.8, 0],
                      [0, 0, 100, 60, 0.7, 1],      # IoU 0.6 with the first: kept
                      [0, 0, 100, 90, 0.9, 2]]],    # IoU 0.9: suppresses the first
                    np.float32)
    decoded = ContractDecoder(3)(rows, [IDENTITY])[0]
    assert decoded.classes.tolist() == [2, 1]
    np.testing.assert_allclose(decoded.scores, [0.9, 0.7])
    assert len(ContractDecoder(3, suppress_iou=0.95)(rows, [IDENTITY])[0]) == 3


def test_contract_boxes_are_mapped_to_each_source_image() -> None:
    rows = np.array([[[40, 48, 120, 88, 0.9, 0]], [[40, 48, 120, 88, 0.9, 0]]], np.float32)
    mappings = [BoxMapping(0.5, 0.5, 0.0, 8.0, (640, 480)), IDENTITY]
    first, second = ContractDecoder(3)(rows, mappings)
    np.testing.assert_allclose(first.boxes, [[80, 80, 240, 160]])
    np.testing.assert_allclose(second.boxes, [[40, 48, 120, 88]])
    assert first.boxes.dtype == np.float32 and first.classes.dtype == np.int32


def test_contract_class_outside_class_names_is_a_model_error() -> None:
    rows = np.array([[[0, 0, 10, 10, 0.9, 3]]], np.float32)
    with pytest.raises(ModelError, match=r"class 3.0 is not in \[0, 3\)"):
        ContractDecoder(3)(rows, [IDENTITY])


def test_output_of_the_wrong_shape_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"shape \[1, 5, 7\] for 1 images; expected \[N, K, 6\]"):
        ContractDecoder(3)(np.zeros((1, 5, 7), np.float32), [IDENTITY])
    with pytest.raises(ModelError, match=r"for 2 images"):
        ContractDecoder(3)(np.zeros((1, 5, 6), np.float32), [IDENTITY, IDENTITY])
    with pytest.raises(ModelError, match=r"expected \[N, 7, A\]"):
        YoloDecoder(3)(np.zeros((1, 8, 100), np.float32), [IDENTITY])


def test_yolo_head_is_decoded_with_class_aware_nms() -> None:
    boxes = np.array([[100, 100, 50, 40],   # class 0, 0.9
                      [102, 101, 50, 40],   # class 0, 0.8: duplicate, suppressed
                      [100, 100, 50, 40],   # class 1, 0.85: same box, other class, kept
                      [200, 50, 20, 20],    # class 2, 0.1: below threshold
                      [250, 200, 30, 60]],  # class 2, 0.5
                     np.float32)
    head = yolo_head(boxes, np.array([0, 0, 1, 2, 2]), np.array([0.9, 0.8, 0.85, 0.1, 0.5]),
                     num_classes=3, anchors=64)
    decoded = YoloDecoder(3)(head, [IDENTITY])[0]
    assert decoded.classes.tolist() == [0, 1, 2]
    np.testing.assert_allclose(decoded.scores, [0.9, 0.85, 0.5])
    np.testing.assert_allclose(decoded.boxes, [[75, 80, 125, 120], [75, 80, 125, 120],
                                               [235, 170, 265, 230]])


def test_yolo_max_detections_keeps_the_best() -> None:
    rng = np.random.default_rng(3)
    centres = rng.uniform(20, 300, (50, 2))
    boxes = np.concatenate([centres, np.full((50, 2), 4.0)], axis=1)
    scores = rng.uniform(0.3, 1.0, 50)
    head = yolo_head(boxes, np.zeros(50, int), scores, num_classes=2, anchors=80)
    decoded = YoloDecoder(2, max_detections=5)(head, [BoxMapping(1, 1, 0, 0, (400, 400))])[0]
    np.testing.assert_allclose(decoded.scores, np.sort(scores)[::-1][:5], rtol=1e-6)


@pytest.mark.parametrize("class_aware", [False, True])
def test_nms_matches_textbook_greedy_nms(class_aware: bool) -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    classes = rng.integers(0, 4, 300).astype(np.int32) if class_aware else None
    kept = nms(boxes, scores, 0.45, classes)
    assert kept.tolist() == _reference_nms(boxes, scores, 0.45, classes)


@pytest.mark.parametrize("n", [40, 1500])  # the IoU-matrix path and the loop for many boxes
@pytest.mark.parametrize("max_keep", [None, 0, 1, 7])
def test_nms_max_keep_matches_textbook_on_both_paths(n: int, max_keep: int | None) -> None:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (n, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    expected = _reference_nms(boxes, scores, 0.3, None)
    if max_keep is not None:
        expected = expected[:max_keep]
    assert nms(boxes, scores, 0.3, None, max_keep=max_keep).tolist() == expected


def test_nms_of_nothing_is_nothing() -> None:
    empty = np.zeros((0, 4), np.float32)
    assert nms(empty, np.zeros(0, np.float32), 0.5, np.zeros(0, np.int32)).shape == (0,)


def test_degenerate_boxes_do_not_divide_by_zero() -> None:
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    np.testing.assert_array_equal(box_iou(boxes, boxes)[:2, :2], 0)


def test_decoder_is_chosen_by_output_format() -> None:
    assert isinstance(decoder_for(_info("detections-v1")), ContractDecoder)
    yolo = decoder_for(_info("yolov8-raw"), score_threshold=0.4)
    assert isinstance(yolo, YoloDecoder)
    assert yolo.score_threshold == 0.4


def test_thresholds_outside_zero_to_one_are_refused() -> None:
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\], got 1.5"):
        ContractDecoder(3, score_threshold=1.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        YoloDecoder(3, iou_threshold=-0.1)


def test_detections_check_their_arrays() -> None:
    empty = Detections.empty()
    assert len(empty) == 0
    assert empty.boxes.shape == (0, 4)
    with pytest.raises(ValueError, match=r"boxes must be \(2, 4\) float32"):
        Detections(np.zeros((2, 4)),  # type: ignore[arg-type]  # float64 on purpose
                   np.zeros(2, np.float32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match=r"classes must be \(2,\) int32"):
        Detections(np.zeros((2, 4), np.float32), np.zeros(2, np.float32),
                   np.zeros(3, np.int32))


def test_embeddings_follow_their_rows_through_threshold_and_suppression() -> None:
    output = CONSTANT_ROWS[None]
    k = output.shape[1]
    embeddings = np.zeros((1, k, 4), np.float32)
    embeddings[0, np.arange(k), np.arange(k) % 4] = 1.0  # row r: one-hot at r % 4
    embeddings[0, :, 3] += np.arange(k, dtype=np.float32)  # and its row number
    for decoder in (ContractDecoder(3, score_threshold=0.05, suppress_iou=None),
                    ContractDecoder(3, score_threshold=0.25)):
        kept = decoder(output, [IDENTITY], embeddings)[0]
        assert kept.embeddings is not None and kept.embeddings.shape == (len(kept), 4)
        for box, score, emb in zip(kept.boxes, kept.scores, kept.embeddings, strict=True):
            row = int(emb[3] - (1.0 if int(emb[3]) % 4 == 3 else 0.0))
            assert output[0, row, 4] == pytest.approx(score)
            np.testing.assert_allclose(output[0, row, :4], box)
    assert ContractDecoder(3)(output, [IDENTITY])[0].embeddings is None
    with pytest.raises(ModelError, match="'embeddings' has shape"):
        ContractDecoder(3)(output, [IDENTITY], embeddings[:, :2])


def test_detections_subset_and_move_keep_embeddings() -> None:
    dets = Detections(np.array([[0, 0, 1, 1], [2, 2, 3, 3]], np.float32),
                      np.array([0.9, 0.4], np.float32), np.array([1, 2], np.int32),
                      np.eye(2, dtype=np.float32))
    low = dets.subset(dets.scores < 0.5)
    assert low.classes.tolist() == [2] and low.embeddings is not None
    np.testing.assert_array_equal(low.embeddings, [[0, 1]])
    moved = dets.moved(dets.boxes + 1)
    assert moved.embeddings is dets.embeddings and moved.boxes[0, 0] == 1
    with pytest.raises(ValueError, match="embeddings must be"):
        Detections(dets.boxes, dets.scores, dets.classes, np.eye(3, dtype=np.float32))
