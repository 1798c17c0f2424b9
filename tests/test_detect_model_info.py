"""Reading what a detector model is from its ONNX metadata, and the contract check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from detect_models import (
    CONTRACT_METADATA,
    constant_model,
    square_finder,
    ultralytics_metadata,
    yolo_head,
)

from edge.detect.contract import check_contract, read_model_info
from edge.detect.model_info import Signature, TensorSpec, model_info
from edge.errors import ModelError


def _signature(input_shape: tuple[int | None, ...] = (None, 3, 256, 320),
               output_shape: tuple[int | None, ...] | None = (None, 100, 6)) -> Signature:
    return Signature((TensorSpec("images", "float32", input_shape),),
                     (TensorSpec("detections", "float32", output_shape),))


def _without(key: str) -> dict[str, str]:
    return {k: v for k, v in CONTRACT_METADATA.items() if k != key}


def test_contract_metadata_is_parsed() -> None:
    info = model_info(CONTRACT_METADATA, _signature())
    assert info.class_names == ("square", "plate", "bowl")
    assert info.input_size == (320, 256)
    assert (info.mean, info.std, info.color) == ((0, 0, 0), (1, 1, 1), "RGB")
    assert (info.resize, info.output_format, info.model_version) == (
        "letterbox", "detections-v1", "test-1")
    assert info.batch is None
    assert model_info(CONTRACT_METADATA, _signature((1, 3, 256, 320))).batch == 1


@pytest.mark.parametrize("key", ["class_names", "input_size", "normalization", "resize",
                                 "model_version"])
def test_missing_contract_key_is_named(key: str) -> None:
    with pytest.raises(ModelError, match=f"'{key}' is missing"):
        model_info(_without(key), _signature(), "m.onnx")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("class_names", "[plate, bowl]", "'class_names' is not valid JSON"),
    ("class_names", '{"0": "plate"}', "non-empty JSON list"),
    ("class_names", "[]", "non-empty JSON list"),
    ("class_names", '["plate", "plate"]', r"repeats \['plate'\]"),
    ("input_size", "320", r"\[width, height\] of positive integers"),
    ("input_size", "[320, 0]", r"\[width, height\] of positive integers"),
    ("normalization", "{'color': 'RGB'}", "'normalization' is not valid JSON"),
    ("normalization", '{"color": "HSV", "mean": [0, 0, 0], "std": [1, 1, 1]}',
     r"'color' must be one of \['RGB', 'BGR'\]"),
    ("normalization", '{"color": "RGB", "mean": [0, 0], "std": [1, 1, 1]}',
     "'mean' must be 3 finite numbers"),
    ("normalization", '{"color": "RGB", "mean": [0, 0, 0], "std": [1, 0, 1]}',
     "'std' must be 3 finite numbers > 0"),
    ("normalization", '{"color": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1], "x": 1}',
     r"unknown keys \['x'\]"),
    ("resize", "crop", r"'resize' must be one of \['letterbox', 'stretch'\], got 'crop'"),
    ("output_format", "detections-v2", "'output_format' must be 'detections-v1'"),
])
def test_invalid_contract_value_is_named(key: str, value: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        model_info({**CONTRACT_METADATA, key: value}, _signature(), "m.onnx")


def test_every_problem_is_listed_at_once() -> None:
    metadata = {**_without("resize"), "input_size": "[1, 2", "class_names": "[]"}
    with pytest.raises(ModelError) as caught:
        model_info(metadata, _signature(output_shape=(None, 100, 5)), "m.onnx")
    message = str(caught.value)
    assert message.startswith("m.onnx cannot be used as a detector:")
    for part in ("'resize' is missing", "'input_size' is not valid JSON", "'class_names'",
                 "must be [N, K, 6]"):
        assert part in message


def test_wrong_output_shape_is_refused() -> None:
    with pytest.raises(ModelError, match=r"must be \[N, K, 6\].*got \[\?, 100, 4\]"):
        model_info(CONTRACT_METADATA, _signature(output_shape=(None, 100, 4)))


def test_dynamic_input_dims_take_the_size_from_metadata() -> None:
    for shape in [(None, 3, None, None), (None, 3, 256, None), (None, 3, None, 320)]:
        assert model_info(CONTRACT_METADATA, _signature(shape)).input_size == (320, 256)


def test_input_shape_must_agree_with_input_size() -> None:
    with pytest.raises(ModelError, match=r"disagrees with input_size \[320, 256\]"):
        model_info(CONTRACT_METADATA, _signature(input_shape=(1, 3, 320, 256)))


def test_ultralytics_names_and_imgsz_are_read_height_first() -> None:
    metadata = ultralytics_metadata(["plate", "bowl", "cup"], imgsz=(256, 320))
    info = model_info(metadata, _signature((1, 3, 256, 320), (1, 7, 1680)))
    assert info.class_names == ("plate", "bowl", "cup")
    assert info.input_size == (320, 256)
    assert info.output_format == "yolov8-raw"
    assert (info.mean, info.std, info.color, info.resize) == (
        (0, 0, 0), (1, 1, 1), "RGB", "letterbox")
    assert info.model_version == "ultralytics 8.3.40"
    assert info.batch == 1


def test_yolo_without_metadata_gets_numbered_classes_and_input_shape_size() -> None:
    info = model_info({}, _signature((1, 3, 480, 640), (1, 6, 6300)))
    assert info.class_names == ("class0", "class1")
    assert info.input_size == (640, 480)
    assert info.model_version == "unknown"


def test_yolo_with_dynamic_input_takes_size_from_imgsz() -> None:
    metadata = ultralytics_metadata(["a", "b"], imgsz=(384, 640))
    info = model_info(metadata, _signature((None, 3, None, None), (None, 6, None)))
    assert info.input_size == (640, 384)


def test_ultralytics_end_to_end_export_decodes_as_rows() -> None:
    metadata = ultralytics_metadata(["a", "b", "c"], imgsz=(640, 640))
    info = model_info(metadata, _signature((1, 3, 640, 640), (1, 300, 6)))
    assert info.output_format == "detections-v1"


@pytest.mark.parametrize(("metadata", "signature", "message"), [
    ({}, _signature((None, 3, 256, 320), (None, 100, 6)),
     "no 'output_format'.*not an Ultralytics YOLO raw head"),
    (ultralytics_metadata(["a", "b"], (256, 320)), _signature((1, 3, 256, 320), (1, 9, 100)),
     r"not an Ultralytics YOLO raw head \[N, 6, A\]"),
    ({**ultralytics_metadata(["a"], (256, 320)), "names": "[plate]"},
     _signature((1, 3, 256, 320), (1, 5, 100)), "'names' must be a dict"),
    ({**ultralytics_metadata(["a"], (256, 320)), "task": "segment"},
     _signature((1, 3, 256, 320), (1, 5, 100)), "only 'detect' models"),
    (ultralytics_metadata(["a"], (320, 320)), _signature((1, 3, 256, 320), (1, 5, 100)),
     "'imgsz' .* disagrees with the input shape"),
    ({"names": "{0: 'a'}"}, _signature((None, 3, None, None), (None, 5, None)),
     "input size unknown"),
])
def test_unusable_yolo_metadata_is_refused(metadata: dict[str, str], signature: Signature,
                                           message: str) -> None:
    with pytest.raises(ModelError, match=message):
        model_info(metadata, signature)


def test_contract_file_passes(tmp_path: Path) -> None:
    info = check_contract(square_finder(tmp_path / "m.onnx"))
    assert info.class_names == ("square", "plate", "bowl")


def test_contract_check_lists_every_problem_in_a_file(tmp_path: Path) -> None:
    metadata = {**_without("model_version"), "resize": "crop"}
    path = constant_model(tmp_path / "bad.onnx", np.zeros((1, 10, 5)), metadata,
                          input_shape=[4, 3, 256, 320], input_name="input",
                          output_name="output0")
    with pytest.raises(ModelError) as caught:
        check_contract(path)
    message = str(caught.value)
    assert message.startswith(f"{path} does not meet the detector contract:")
    for part in ("'model_version' is missing", "'resize' must be one of",
                 "must be [N, K, 6]", "input must be named 'images'",
                 "batch dimension must be dynamic or 1, is 4",
                 "first output must be named 'detections'"):
        assert part in message


def test_contract_check_refuses_yolo_exports(tmp_path: Path) -> None:
    head = yolo_head(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0), 2, 100)
    path = constant_model(tmp_path / "yolo.onnx", head,
                          ultralytics_metadata(["a", "b"], (256, 320)),
                          input_shape=[1, 3, 256, 320])
    assert read_model_info(path).output_format == "yolov8-raw"
    with pytest.raises(ModelError, match="'output_format' is missing"):
        check_contract(path)


def test_unreadable_files_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        check_contract(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        read_model_info(garbage)


def test_metadata_json_round_trips_through_a_file(tmp_path: Path) -> None:
    names = ["soup of the day", "crème brûlée", "饺子"]
    metadata = {**CONTRACT_METADATA, "class_names": json.dumps(names, ensure_ascii=False)}
    assert read_model_info(square_finder(tmp_path / "m.onnx", metadata)).class_names == tuple(
        names)


def _with_embeddings(shape: tuple[int | None, ...] | None, dtype: str = "float32") -> Signature:
    plain = _signature()
    return Signature(plain.inputs, (*plain.outputs, TensorSpec("embeddings", dtype, shape)))


def test_embeddings_output_is_read_and_checked() -> None:
    assert model_info(CONTRACT_METADATA, _signature()).embedding_dim is None
    assert model_info(CONTRACT_METADATA, _with_embeddings((None, 100, 128))).embedding_dim == 128
    for bad in [(None, 100, None), (None, 50, 128), (None, 100), None]:
        with pytest.raises(ModelError, match="output 'embeddings' must be float32 \\[N, K, D\\]"):
            model_info(CONTRACT_METADATA, _with_embeddings(bad))
    with pytest.raises(ModelError, match="output 'embeddings'"):
        model_info(CONTRACT_METADATA, _with_embeddings((None, 100, 128), "float16"))


def test_the_shipped_model_has_embeddings() -> None:
    from edge.config import DEFAULT_MODEL

    for path in (DEFAULT_MODEL, DEFAULT_MODEL.with_name("dishnet-int8.onnx")):
        assert read_model_info(path).embedding_dim == 128
        check_contract(path)
