"""Check a detector model file against the project's model contract.

The gate between training (``calibration/``) and the detection stage
(:mod:`edge.detect`): an exported model must pass :func:`check_contract`
before it ships (``docs/FORMATS.md``, "Detector model"). The rules themselves live in
:mod:`edge.detect.model_info`, shared with the backends that load models;
this module reads ONNX files for them.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from edge.detect.model_info import (
    ModelInfo,
    Signature,
    TensorSpec,
    inspect_model,
    model_info,
    report,
)
from edge.errors import ModelError


def check_contract(path: str | Path) -> ModelInfo:
    """Validate an ONNX file against the project's detector model contract.

    Checks the graph (``onnx.checker``), the input ``images`` (float32
    ``[N, 3, H, W]``, batch dynamic or 1, H and W matching ``input_size``),
    the output ``detections`` (float32 ``[N, K, 6]``, shape declared) and
    every metadata key (present once, valid JSON, valid values, unique class
    names).

    Returns
    -------
    ModelInfo
        The model's info when it meets the contract.

    Raises
    ------
    ModelError
        Listing every problem found, not only the first.
    """
    path = Path(path)
    model = _load(path)
    problems: list[str] = []
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        problems.append(f"onnx.checker: {err}")
    metadata = _metadata(model, problems)
    info, found = inspect_model(metadata, signature_from_onnx(model), contract=True)
    problems += found
    if problems or info is None:
        raise ModelError(report(str(path), "does not meet the detector contract", problems))
    return info


def read_model_info(path: str | Path) -> ModelInfo:
    """Read an ONNX file's :class:`ModelInfo` under the rules backends load models by.

    Unlike :func:`check_contract` this accepts Ultralytics YOLO exports.

    Raises
    ------
    ModelError
        If the file cannot be read or does not describe a usable detector.
    """
    model = _load(Path(path))
    return model_info(_metadata(model, []), signature_from_onnx(model), str(path))


def signature_from_onnx(model: onnx.ModelProto) -> Signature:
    """Read the graph inputs (initializers excluded) and outputs of an ONNX model."""
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = (onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
                 if tensor.elem_type else "undefined")
        shape = (tuple(d.dim_value if d.HasField("dim_value") else None
                       for d in tensor.shape.dim)
                 if tensor.HasField("shape") else None)
        return TensorSpec(value.name, dtype, shape)

    return Signature(
        inputs=tuple(spec(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(spec(v) for v in model.graph.output),
    )


def _load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        return onnx.load(path, load_external_data=False)
    except (DecodeError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable ONNX file ({err})") from err


def _metadata(model: onnx.ModelProto, problems: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for prop in model.metadata_props:
        if prop.key in metadata:
            problems.append(f"metadata key {prop.key!r} appears more than once")
        metadata[prop.key] = prop.value
    return metadata
