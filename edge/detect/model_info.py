"""What a detector model is: class names, input geometry, normalisation, output layout.

First step of the detection stage (:mod:`edge.detect`): a backend reads the
model's ONNX ``metadata_props`` and graph signature into a :class:`ModelInfo`,
which configures preprocessing (:mod:`edge.detect.preprocess`) and decoding
(:mod:`edge.detect.decode`). The parser is strict about the project's contract
(``docs/FORMATS.md``, "Detector model") and lenient only for Ultralytics YOLO exports, whose
metadata is their own; :mod:`edge.detect.contract` applies it to model files.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from edge.errors import ModelError

CONTRACT_FORMAT: Literal["detections-v1"] = "detections-v1"
"""``[N, K, 6]`` rows of x1, y1, x2, y2 (network input pixels), score, class."""
YOLO_FORMAT: Literal["yolov8-raw"] = "yolov8-raw"
"""Ultralytics YOLOv8/11 raw head ``[N, 4 + C, A]``: cx, cy, w, h, C class scores."""

Color = Literal["RGB", "BGR"]
Resize = Literal["letterbox", "stretch"]
OutputFormat = Literal["detections-v1", "yolov8-raw"]
COLORS: tuple[Color, ...] = ("RGB", "BGR")
RESIZE_MODES: tuple[Resize, ...] = ("letterbox", "stretch")
CONTRACT_KEYS = ("class_names", "input_size", "normalization", "resize", "output_format",
                 "model_version")
_NORMALIZATION_KEYS = ("color", "mean", "std")
EMBEDDINGS_OUTPUT = "embeddings"
"""Name of the contract's optional second output, ``[N, K, D]`` float32."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype name and shape (``None`` = dynamic dim)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None
    """``None`` when the graph does not declare the rank."""


@dataclass(frozen=True, slots=True)
class Signature:
    """The graph's inputs and outputs, as a backend sees them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Everything pre- and post-processing need to know about a detector model.

    Attributes
    ----------
    class_names : tuple of str
        Index = class id.
    input_size : (int, int)
        Network input ``(width, height)`` in pixels.
    mean, std : (float, float, float)
        Per channel, in ``color`` order: the network input is
        ``(pixel / 255 - mean) / std``.
    color : {"RGB", "BGR"}
        Channel order the network expects.
    resize : {"letterbox", "stretch"}
        ``letterbox`` keeps the aspect ratio and pads centred with grey 114.
    output_format : {"detections-v1", "yolov8-raw"}
        Layout of the first output; chooses the decoder.
    model_version : str
        Free text from the model's producer.
    batch : int or None
        Fixed batch size of the input, or ``None`` when it is dynamic.
    embedding_dim : int or None
        ``D`` of the optional ``embeddings`` output (``[N, K, D]``, one unit
        vector per detection row), or ``None`` when the model has none.
    """

    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: Color
    resize: Resize
    output_format: OutputFormat
    model_version: str
    batch: int | None
    embedding_dim: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes the model knows."""
        return len(self.class_names)


def inspect_model(metadata: Mapping[str, str], signature: Signature, *,
                  contract: bool = False) -> tuple[ModelInfo | None, list[str]]:
    """Read a :class:`ModelInfo` and list every problem found on the way.

    Parameters
    ----------
    metadata : mapping of str to str
        The model's ``metadata_props``.
    signature : Signature
        Its inputs and outputs (first input = images, first output = detections).
    contract : bool
        Apply the full contract (as :func:`edge.detect.contract.check_contract`
        does): contract metadata required, tensors named ``images`` and
        ``detections``, batch dynamic or 1, output shape declared.

    Returns
    -------
    info : ModelInfo or None
        ``None`` when there are problems.
    problems : list of str
        Each names the metadata key or tensor and what would be valid.
    """
    problems: list[str] = []
    if contract or "output_format" in metadata:
        if "output_format" not in metadata:
            problems.append("metadata key 'output_format' is missing (valid: "
                            f"{CONTRACT_FORMAT!r})")
        info = _contract_info(metadata, signature, problems)
    else:
        info = _ultralytics_info(metadata, signature, problems)
    _check_input(signature, info, problems)
    if contract:
        _check_contract_names(signature, problems)
    return (None if problems else info), problems


def model_info(metadata: Mapping[str, str], signature: Signature,
               source: str = "model") -> ModelInfo:
    """Read a :class:`ModelInfo` from ONNX metadata and the graph signature.

    A model with an ``output_format`` key must carry the whole contract
    metadata. A model without one is accepted only as an Ultralytics YOLO
    export: class names from ``names`` (else ``class0, class1, ...``), input
    size from the input shape or ``imgsz``, RGB, ``/255`` and letterbox.

    Parameters
    ----------
    metadata : mapping of str to str
        The model's ``metadata_props``.
    signature : Signature
        Its inputs and outputs (first input = images, first output = detections).
    source : str
        How to name the model in error messages (usually its path).

    Raises
    ------
    ModelError
        Listing every problem found.
    """
    info, problems = inspect_model(metadata, signature)
    if info is None:
        raise ModelError(report(source, "cannot be used as a detector", problems))
    return info


def report(source: str, what: str, problems: Sequence[str]) -> str:
    """Format problems as one error message, a bullet per problem."""
    return f"{source} {what}:\n" + "\n".join(f"  - {p}" for p in problems)


def _json(metadata: Mapping[str, str], key: str, expected: str,
          problems: list[str]) -> Any:
    if key not in metadata:
        problems.append(f"metadata key {key!r} is missing (expected {expected})")
        return None
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as err:
        problems.append(f"metadata key {key!r} is not valid JSON ({err.msg}): "
                        f"{metadata[key]!r}; expected {expected}")
        return None


def _numbers(value: Any, n: int, *, positive: bool = False) -> tuple[float, ...] | None:
    if (not isinstance(value, list) or len(value) != n
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            or not all(math.isfinite(v) and (v > 0 or not positive) for v in value)):
        return None
    return tuple(float(v) for v in value)


Triple = tuple[float, float, float]


def _normalization(metadata: Mapping[str, str], problems: list[str],
                   ) -> tuple[Color, Triple, Triple] | None:
    norm = _json(metadata, "normalization",
                 'JSON {"color": "RGB", "mean": [r, g, b], "std": [r, g, b]}', problems)
    if norm is None:
        return None
    if not isinstance(norm, dict):
        problems.append(f"metadata key 'normalization' must be a JSON object, got "
                        f"{metadata['normalization']!r}")
        return None
    start = len(problems)
    unknown = sorted(set(norm) - set(_NORMALIZATION_KEYS))
    if unknown:
        problems.append(f"metadata key 'normalization' has unknown keys {unknown} "
                        f"(valid: {list(_NORMALIZATION_KEYS)})")
    color = norm.get("color")
    if color not in COLORS:
        problems.append(f"metadata key 'normalization': 'color' must be one of "
                        f"{list(COLORS)}, got {color!r}")
    mean = _numbers(norm.get("mean"), 3)
    if mean is None:
        problems.append(f"metadata key 'normalization': 'mean' must be 3 finite numbers, "
                        f"got {norm.get('mean')!r}")
    std = _numbers(norm.get("std"), 3, positive=True)
    if std is None:
        problems.append(f"metadata key 'normalization': 'std' must be 3 finite numbers "
                        f"> 0, got {norm.get('std')!r}")
    if len(problems) > start:
        return None
    return cast(Color, color), cast(Triple, mean), cast(Triple, std)


def _contract_info(metadata: Mapping[str, str], signature: Signature,
                   problems: list[str]) -> ModelInfo | None:
    start = len(problems)
    names = _json(metadata, "class_names", "a JSON list of class name strings", problems)
    if names is not None and (not isinstance(names, list) or not names
                              or not all(isinstance(n, str) and n for n in names)):
        problems.append(f"metadata key 'class_names' must be a non-empty JSON list of "
                        f"non-empty strings, got {metadata['class_names']!r}")
    elif names is not None and len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        problems.append(f"metadata key 'class_names' repeats {duplicates}")
    size = _json(metadata, "input_size", "JSON [width, height]", problems)
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        problems.append(f"metadata key 'input_size' must be JSON [width, height] of positive "
                        f"integers, got {metadata['input_size']!r}")
    normalization = _normalization(metadata, problems)
    resize = metadata.get("resize")
    if resize is None:
        problems.append(f"metadata key 'resize' is missing (valid: {list(RESIZE_MODES)})")
    elif resize not in RESIZE_MODES:
        problems.append(f"metadata key 'resize' must be one of {list(RESIZE_MODES)}, got "
                        f"{resize!r}")
    fmt = metadata.get("output_format")
    if fmt is not None and fmt != CONTRACT_FORMAT:
        problems.append(f"metadata key 'output_format' must be {CONTRACT_FORMAT!r}, got {fmt!r}")
    version = metadata.get("model_version")
    if not version:
        problems.append("metadata key 'model_version' is missing or empty "
                        "(expected any non-empty string)")
    _check_output_rows(signature, problems)
    embedding_dim = _embedding_dim(signature, problems)
    if len(problems) > start or normalization is None:
        return None
    color, mean, std = normalization
    return ModelInfo(
        class_names=tuple(names), input_size=(size[0], size[1]), mean=mean, std=std,
        color=color, resize=cast(Resize, resize), output_format=CONTRACT_FORMAT,
        model_version=cast(str, version), batch=_batch(signature),
        embedding_dim=embedding_dim)


def _ultralytics_info(metadata: Mapping[str, str], signature: Signature,
                      problems: list[str]) -> ModelInfo | None:
    """Defaults for an Ultralytics YOLOv8/11 export, whose metadata is Python reprs."""
    start = len(problems)
    names = _ultralytics_names(metadata.get("names"), problems)
    if metadata.get("task", "detect") != "detect":
        problems.append(f"metadata key 'task' is {metadata['task']!r}; only 'detect' models "
                        "are supported")
    out = signature.outputs[0].shape if signature.outputs else None
    channels = out[1] if out is not None and len(out) == 3 else None
    anchors = out[2] if out is not None and len(out) == 3 else None
    fmt: OutputFormat = YOLO_FORMAT
    if names is None and channels is not None and channels > 4 and (
            anchors is None or anchors > channels):
        # Without names, a raw head is told from [N, K, 6] rows by having more anchors
        # than channels (8400 vs 84 for COCO at 640).
        names = tuple(f"class{i}" for i in range(channels - 4))
    raw_head = names is not None and channels == 4 + len(names)
    if not raw_head and "names" in metadata and out is not None and out[-1] == 6:
        fmt = CONTRACT_FORMAT  # end-to-end export (nms=True): rows already x1 y1 x2 y2 s c
    elif not raw_head:
        expected = f"[N, {4 + len(names)}, A]" if names is not None else "[N, 4 + C, A]"
        problems.append(
            f"metadata has no 'output_format' (valid: {CONTRACT_FORMAT!r} with the contract "
            f"keys {list(CONTRACT_KEYS)}), and output shape {_shape(out)} is not an "
            f"Ultralytics YOLO raw head {expected}")
    size = _ultralytics_size(metadata.get("imgsz"), signature, problems)
    if len(problems) > start or names is None or size is None:
        return None
    version = metadata.get("version")
    return ModelInfo(
        class_names=names, input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        color="RGB", resize="letterbox", output_format=fmt,
        model_version=f"ultralytics {version}" if version else "unknown", batch=_batch(signature))


def _ultralytics_names(raw: str | None, problems: list[str]) -> tuple[str, ...] | None:
    if raw is None:
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, dict) and sorted(value) == list(range(len(value))):
        value = [value[i] for i in range(len(value))]
    if not isinstance(value, list) or not value or not all(isinstance(n, str) for n in value):
        problems.append(f"metadata key 'names' must be a dict {{0: 'name', ...}} with ids "
                        f"0..C-1 or a list of strings, got {raw[:80]!r}")
        return None
    return tuple(value)


def _ultralytics_size(raw: str | None, signature: Signature,
                      problems: list[str]) -> tuple[int, int] | None:
    shape = signature.inputs[0].shape if signature.inputs else None
    static = (shape[3], shape[2]) if shape is not None and len(shape) == 4 else (None, None)
    imgsz = None
    if raw is not None:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, int):
            value = [value, value]
        if isinstance(value, list | tuple) and len(value) == 2 and all(
                isinstance(v, int) and v > 0 for v in value):
            imgsz = (value[1], value[0])  # Ultralytics stores imgsz as [height, width]
        else:
            problems.append(f"metadata key 'imgsz' must be [height, width], got {raw!r}")
    if static[0] is not None and static[1] is not None:
        if imgsz is not None and imgsz != static:
            problems.append(f"metadata key 'imgsz' {raw} disagrees with the input shape "
                            f"{_shape(shape)} (width, height = {static})")
        return (static[0], static[1])
    if imgsz is None and raw is None:
        problems.append(f"input size unknown: input shape {_shape(shape)} is dynamic and "
                        "metadata has no 'imgsz'")
    return imgsz


def _check_output_rows(signature: Signature, problems: list[str]) -> None:
    if not signature.outputs:
        problems.append("the graph has no output")
        return
    shape = signature.outputs[0].shape
    if shape is not None and (len(shape) != 3 or shape[2] not in (6, None)):
        problems.append(f"output {signature.outputs[0].name!r} must be [N, K, 6] "
                        f"(x1, y1, x2, y2, score, class), got {_shape(shape)}")


def _embedding_dim(signature: Signature, problems: list[str]) -> int | None:
    """``D`` of the optional ``embeddings`` output ``[N, K, D]`` (None: absent)."""
    spec = next((o for o in signature.outputs[1:] if o.name == EMBEDDINGS_OUTPUT), None)
    if spec is None:
        return None
    rows = signature.outputs[0].shape
    shape = spec.shape
    if (spec.dtype != "float32" or shape is None or len(shape) != 3 or shape[2] is None
            or shape[2] < 1 or (rows is not None and len(rows) == 3 and None not in (
                rows[1], shape[1]) and rows[1] != shape[1])):
        problems.append(f"output {EMBEDDINGS_OUTPUT!r} must be float32 [N, K, D] with D "
                        f"declared and K as in {signature.outputs[0].name!r}, got "
                        f"{spec.dtype} {_shape(shape)}")
        return None
    return shape[2]


def _check_input(signature: Signature, info: ModelInfo | None, problems: list[str]) -> None:
    if len(signature.inputs) != 1:
        problems.append(f"the graph must have exactly one input, has "
                        f"{[i.name for i in signature.inputs]}")
        return
    spec = signature.inputs[0]
    if spec.dtype != "float32":
        problems.append(f"input {spec.name!r} must be float32, is {spec.dtype}")
    if spec.shape is None or len(spec.shape) != 4 or spec.shape[1] not in (3, None):
        problems.append(f"input {spec.name!r} must be [N, 3, H, W], got {_shape(spec.shape)}")
    elif info is not None and any(
            dim is not None and dim != size
            for dim, size in zip((spec.shape[3], spec.shape[2]), info.input_size, strict=True)):
        problems.append(f"input {spec.name!r} shape {_shape(spec.shape)} disagrees with "
                        f"input_size {list(info.input_size)} ([width, height])")


def _check_contract_names(signature: Signature, problems: list[str]) -> None:
    if signature.inputs and signature.inputs[0].name != "images":
        problems.append(f"input must be named 'images', is {signature.inputs[0].name!r}")
    shape = signature.inputs[0].shape if signature.inputs else None
    if shape and shape[0] not in (1, None):
        problems.append(f"input batch dimension must be dynamic or 1, is {shape[0]}")
    if not signature.outputs:
        return
    out = signature.outputs[0]
    if out.name != "detections":
        problems.append(f"first output must be named 'detections', is {out.name!r}")
    if out.dtype != "float32":
        problems.append(f"output {out.name!r} must be float32, is {out.dtype}")
    if out.shape is None:
        problems.append(f"output {out.name!r} must declare its shape [N, K, 6]")


def _batch(signature: Signature) -> int | None:
    shape = signature.inputs[0].shape if signature.inputs else None
    return shape[0] if shape else None


def _shape(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
