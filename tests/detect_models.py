"""Small ONNX detector models built with ``onnx.helper``, for the detection-stage tests.

Not test files themselves: ``test_detect_*.py`` import these builders. The
models run on the real ONNX Runtime; they are tiny graphs, not trained
networks, so their outputs are known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

CONTRACT_METADATA = {
    "class_names": json.dumps(["square", "plate", "bowl"]),
    "input_size": json.dumps([320, 256]),
    "normalization": json.dumps({"color": "RGB", "mean": [0, 0, 0], "std": [1, 1, 1]}),
    "resize": "letterbox",
    "output_format": "detections-v1",
    "model_version": "test-1",
}

# Constant rows every square-finder output carries after its own row, in network pixels.
CONSTANT_ROWS = np.array([
    [10, 10, 60, 60, 0.9, 1],     # plate
    [12, 12, 61, 61, 0.6, 2],     # bowl, near-duplicate of the plate (IoU 0.92)
    [100, 100, 150, 150, 0.1, 2],  # bowl, low score
    [0, 0, 0, 0, 0, 0],           # padding
    [0, 0, 0, 0, 0, 0],           # padding
], np.float32)


def _save(path: Path, *, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto],
          metadata: Mapping[str, str]) -> Path:
    graph = helper.make_graph(nodes, "test_detector", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dishtracker-tests")
    model.ir_version = 8
    helper.set_model_props(model, dict(metadata))
    onnx.save(model, path)
    return path


def _batch_zeros(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
                 input_name: str) -> str:
    """Add nodes giving ``(N, 1, 1)`` zeros that depend on the input (carry the batch dim)."""
    inits += [numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape_n11"),
              numpy_helper.from_array(np.array(0, np.float32), "zero")]
    nodes += [
        helper.make_node("ReduceMean", [input_name], ["mean_all"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean_all", "shape_n11"], ["mean_n11"]),
        helper.make_node("Mul", ["mean_n11", "zero"], ["zeros_n11"]),
    ]
    return "zeros_n11"


def square_finder(path: Path, metadata: Mapping[str, str] = CONTRACT_METADATA,
                  batch: int | str = "N", input_hw: tuple[int | str, int | str] | None = None,
                  ) -> Path:
    """A ``detections-v1`` model that finds the brightest region of its input.

    Row 0 of each image's output is the bounding box (network pixels, pixel
    edges) of the pixels whose channel mean equals the image maximum, scored
    by that maximum (1.0 for white on a normalised 0..1 input), class 0. Rows
    1.. are :data:`CONSTANT_ROWS`.
    """
    size = json.loads(metadata.get("input_size", "[320, 256]"))
    h, w = input_hw if input_hw is not None else (size[1], size[0])
    rows = len(CONSTANT_ROWS) + 1
    inits = [numpy_helper.from_array(CONSTANT_ROWS[None], "constant_rows"),
             numpy_helper.from_array(np.array(1, np.float32), "one"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["gray"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["gray"], ["cols"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["gray"], ["rows"], axes=[2], keepdims=0),
        helper.make_node("ReduceMax", ["cols"], ["score"], axes=[1], keepdims=1),
        helper.make_node("ArgMax", ["cols"], ["x1i"], axis=1, keepdims=1),
        helper.make_node("ArgMax", ["cols"], ["x2i"], axis=1, keepdims=1, select_last_index=1),
        helper.make_node("ArgMax", ["rows"], ["y1i"], axis=1, keepdims=1),
        helper.make_node("ArgMax", ["rows"], ["y2i"], axis=1, keepdims=1, select_last_index=1),
    ]
    for name in ("x1", "x2", "y1", "y2"):
        nodes.append(helper.make_node("Cast", [f"{name}i"], [f"{name}f"], to=TensorProto.FLOAT))
    nodes += [
        helper.make_node("Add", ["x2f", "one"], ["x2e"]),
        helper.make_node("Add", ["y2f", "one"], ["y2e"]),
        helper.make_node("Sub", ["score", "score"], ["class0"]),
        helper.make_node("Concat", ["x1f", "y1f", "x2e", "y2e", "score", "class0"], ["row0"],
                         axis=1),
        helper.make_node("Unsqueeze", ["row0", "axis1"], ["row0_3d"]),
    ]
    zeros = _batch_zeros(nodes, inits, "images")
    nodes += [
        helper.make_node("Add", [zeros, "constant_rows"], ["rest"]),
        helper.make_node("Concat", ["row0_3d", "rest"], ["detections"], axis=1),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, h, w])]
    outputs = [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [batch, rows, 6])]
    return _save(path, nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits,
                 metadata=metadata)


def constant_model(path: Path, output: npt.ArrayLike, metadata: Mapping[str, str], *,
                   input_shape: list[int | str] | None = None, input_name: str = "images",
                   output_name: str = "detections") -> Path:
    """A model whose output is ``output`` (``(1, K, D)``) repeated along the input's batch."""
    input_shape = input_shape or ["N", 3, 256, 320]
    value = np.asarray(output, np.float32)
    inits = [numpy_helper.from_array(value, "constant_output")]
    nodes: list[onnx.NodeProto] = []
    zeros = _batch_zeros(nodes, inits, input_name)
    nodes.append(helper.make_node("Add", [zeros, "constant_output"], [output_name]))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    shape = [input_shape[0], *value.shape[1:]]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, shape)]
    return _save(path, nodes=nodes, inputs=inputs, outputs=outputs, initializers=inits,
                 metadata=metadata)


def yolo_head(boxes_cxcywh: npt.ArrayLike, classes: npt.ArrayLike, scores: npt.ArrayLike,
              num_classes: int, anchors: int) -> npt.NDArray[np.float32]:
    """A ``(1, 4 + C, A)`` raw head: column ``i`` holds box ``i`` scored ``scores[i]`` for
    ``classes[i]`` and a tenth of that for the next class; unused columns are zero."""
    head = np.zeros((1, 4 + num_classes, anchors), np.float32)
    rows = zip(np.asarray(boxes_cxcywh), np.asarray(classes, int), np.asarray(scores),
               strict=True)
    for i, (box, cls, score) in enumerate(rows):
        head[0, :4, i] = box
        head[0, 4 + cls, i] = score
        head[0, 4 + (cls + 1) % num_classes, i] = score / 10
    return head


def ultralytics_metadata(names: list[str], imgsz: tuple[int, int]) -> dict[str, str]:
    """Metadata as Ultralytics' exporter writes it: Python reprs, imgsz as [height, width]."""
    return {
        "description": "Ultralytics YOLO11n model trained on test.yaml",
        "author": "Ultralytics", "version": "8.3.40", "task": "detect", "batch": "1",
        "stride": "32", "imgsz": str(list(imgsz)),
        "names": str(dict(enumerate(names))),
    }
