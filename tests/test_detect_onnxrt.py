"""The ONNX Runtime detector end to end, on small generated models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from detect_models import (
    CONTRACT_METADATA,
    constant_model,
    square_finder,
    ultralytics_metadata,
    yolo_head,
)

from edge.detect import BACKENDS, load_detector
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.errors import ConfigError, ModelError


def _scene(width: int, height: int, box: tuple[int, int, int, int],
           value: int = 255) -> npt.NDArray[np.uint8]:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = value
    return image


@pytest.fixture(scope="module")
def square_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return square_finder(tmp_path_factory.mktemp("models") / "square.onnx")


def test_batch_of_three_sizes_gives_each_image_its_own_boxes(square_model: Path) -> None:
    scenes = [(640, 480, (100, 60, 300, 200)), (300, 700, (20, 500, 280, 680)),
              (1000, 200, (900, 0, 1000, 50))]
    images = [_scene(w, h, box) for w, h, box in scenes]
    with OnnxRuntimeDetector(square_model) as detector:
        results = detector.detect(images)
        one_by_one = [detector.detect([image])[0] for image in images]
    assert len(results) == 3
    for (w, h, box), found, alone in zip(scenes, results, one_by_one, strict=True):
        square = found.boxes[found.classes == 0]
        assert square.shape == (1, 4)
        scale = min(320 / w, 256 / h)
        # A blurred edge costs up to one network pixel, i.e. 1 / scale source pixels.
        np.testing.assert_allclose(square[0], box, atol=1 / scale + 0.5)
        assert (found.boxes[:, 2] <= w).all() and (found.boxes[:, 3] <= h).all()
        np.testing.assert_array_equal(found.boxes, alone.boxes)


def test_score_threshold_applies_to_the_model_output(square_model: Path) -> None:
    grey_square = _scene(640, 480, (100, 100, 200, 200), value=200)
    low = load_detector(square_model, score_threshold=0.05).detect([grey_square])[0]
    high = load_detector(square_model, score_threshold=0.85).detect([grey_square])[0]
    np.testing.assert_allclose(np.sort(low.scores), [0.1, 200 / 255, 0.9], rtol=1e-6)
    np.testing.assert_allclose(high.scores, [0.9], rtol=1e-6)


def test_cross_class_duplicates_are_suppressed_by_default(square_model: Path) -> None:
    found = load_detector(square_model).detect([_scene(320, 256, (200, 200, 300, 250))])[0]
    assert sorted(found.classes.tolist()) == [0, 1]  # bowl 0.6 duplicates plate 0.9


def test_fixed_batch_model_runs_images_one_at_a_time(tmp_path: Path) -> None:
    path = square_finder(tmp_path / "b1.onnx", batch=1)
    detector = load_detector(path)
    assert detector.info.batch == 1
    images = [_scene(320, 256, (10, 20, 30, 40)), _scene(320, 256, (100, 120, 130, 140))]
    squares = [d.boxes[d.classes == 0][0].tolist() for d in detector.detect(images)]
    assert squares == [[10, 20, 30, 40], [100, 120, 130, 140]]


def test_normalisation_from_metadata_reaches_the_network(tmp_path: Path) -> None:
    metadata = {**CONTRACT_METADATA, "normalization": json.dumps(
        {"color": "BGR", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})}
    detector = OnnxRuntimeDetector(square_finder(tmp_path / "n.onnx", metadata))
    found = detector.detect([_scene(320, 256, (0, 0, 10, 10))])[0]
    assert found.scores[found.classes == 0].tolist() == [1.0]  # (255/255 - 0.5) / 0.5


def test_yolo_export_is_decoded_in_source_pixels(tmp_path: Path) -> None:
    head = yolo_head(np.array([[160, 128, 80, 64], [162, 129, 80, 64]]), np.array([1, 1]),
                     np.array([0.9, 0.7]), num_classes=3, anchors=100)
    path = constant_model(tmp_path / "yolo.onnx", head,
                          ultralytics_metadata(["plate", "bowl", "cup"], imgsz=(256, 320)),
                          input_shape=[1, 3, 256, 320], output_name="output0")
    detector = load_detector(path)
    assert detector.info.class_names == ("plate", "bowl", "cup")
    first, second = detector.detect([np.zeros((480, 640, 3), np.uint8),
                                     np.zeros((256, 320, 3), np.uint8)])
    # 640x480 -> 320x240 with 8 px borders above and below.
    np.testing.assert_allclose(first.boxes, [[240, 176, 400, 304]])
    np.testing.assert_allclose(second.boxes, [[120, 96, 200, 160]])
    assert first.classes.tolist() == [1]


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_setting_is_honoured(square_model: Path, threads: int) -> None:
    detector = OnnxRuntimeDetector(square_model, threads=threads)
    assert detector.threads == threads
    assert detector.providers == ["CPUExecutionProvider"]


def test_unknown_backend_names_the_valid_ones(square_model: Path) -> None:
    with pytest.raises(ConfigError, match=r"backend 'openvino' is unknown; valid: "
                                          r"\['onnxruntime', 'tensorrt'\]"):
        load_detector(square_model, backend="openvino")
    assert list(BACKENDS) == ["onnxruntime", "tensorrt"]


def test_closed_detector_refuses_work(square_model: Path) -> None:
    detector = OnnxRuntimeDetector(square_model)
    detector.close()
    detector.close()
    with pytest.raises(RuntimeError, match="is closed"):
        detector.detect([_scene(10, 10, (0, 0, 1, 1))])


def test_no_images_no_work(square_model: Path) -> None:
    assert OnnxRuntimeDetector(square_model).detect([]) == []


def test_missing_broken_and_unusable_models_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        load_detector(tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx at all")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        load_detector(broken)
    no_metadata = constant_model(tmp_path / "bare.onnx", np.zeros((1, 100, 6)), {})
    with pytest.raises(ModelError, match=r"bare\.onnx cannot be used as a detector"):
        load_detector(no_metadata)


def test_shipped_model_gives_each_detection_its_embedding() -> None:
    """A dish seen twice looks more like itself than like any dish of another class."""
    from edge.config import DEFAULT_MODEL
    from edge.sim.scene import Scene

    scene = Scene(21, fps=20, size=(640, 480), difficulty="easy", keep_history=False)
    with OnnxRuntimeDetector(DEFAULT_MODEL, score_threshold=0.3) as detector:
        assert detector.info.embedding_dim == 128
        a, b = detector.detect([scene.render(200)[0], scene.render(202)[0]])
    for dets in (a, b):
        assert dets.embeddings is not None and dets.embeddings.shape == (len(dets), 128)
        np.testing.assert_allclose(np.linalg.norm(dets.embeddings, axis=1), 1.0, atol=1e-4)
    assert len(a) >= 3 and a.embeddings is not None and b.embeddings is not None
    from edge.geometry import box_iou

    iou = box_iou(a.boxes, b.boxes)
    same = a.embeddings @ b.embeddings.T
    checked = 0
    tray = detector.info.class_names.index("tray")
    for i in range(len(a)):
        j = int(iou[i].argmax())
        if a.classes[i] == tray or iou[i, j] < 0.4:
            continue
        others = same[i, (b.classes != a.classes[i]) & (b.classes != tray)]
        assert same[i, j] > others.max(), (i, same[i, j], others.max())
        checked += 1
    assert checked >= 5
