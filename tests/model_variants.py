"""Variants of the shipped detector for the rollout tests (not test files themselves).

All run on the real ONNX Runtime:

- :func:`dishnet_variant`: the shipped network under another ``model_version``
  (another SHA-256: a new model to the registry, the same detections).
- :func:`failing_at_load`: passes the contract check, but ONNX Runtime cannot
  build a session for it (an operator no runtime implements).
- :func:`failing_at_inference`: loads and runs on a blank frame (the
  worker's warm-up), and raises on every real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

DISHNET = Path(__file__).resolve().parents[1] / "edge" / "models" / "dishnet.onnx"


def _with_version(model: onnx.ModelProto, version: str) -> None:
    for prop in model.metadata_props:
        if prop.key == "model_version":
            prop.value = version
            return
    model.metadata_props.append(onnx.StringStringEntryProto(key="model_version", value=version))


def dishnet_variant(path: Path, version: str) -> Path:
    """The shipped model with ``model_version = version``, saved at ``path``."""
    model = onnx.load(str(DISHNET))
    _with_version(model, version)
    onnx.save(model, str(path))
    return path


def _wrap_detections(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
                     inits: list[onnx.TensorProto]) -> None:
    """Route the ``detections`` output through ``nodes`` (input ``det_raw``, output
    ``detections``)."""
    for node in model.graph.node:
        node.output[:] = ["det_raw" if o == "detections" else o for o in node.output]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)


def failing_at_load(path: Path, version: str = "broken-load") -> Path:
    """A model whose ``detections`` pass through an operator no runtime has."""
    model = onnx.load(str(DISHNET))
    _with_version(model, version)
    _wrap_detections(model, [helper.make_node("Mystery", ["det_raw"], ["detections"],
                                              domain="com.example.missing")], [])
    model.opset_import.append(helper.make_opsetid("com.example.missing", 1))
    onnx.save(model, str(path))
    return path


def failing_at_inference(path: Path, version: str = "broken-run") -> Path:
    """A model that loads and runs on a blank frame (the worker's warm-up) but
    raises on a real one: its detections are reshaped to ``[k, -1]`` and back,
    with ``k = 7`` (which 100 x 6 values cannot fill) when the normalised input
    has a value over 1.0, a pixel brighter than a blank, letterboxed frame has."""
    model = onnx.load(str(DISHNET))
    _with_version(model, version)
    consts = [numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in (
        ("bright", 1.0, np.float32), ("k_bad", [7], np.int64), ("k_ok", [1], np.int64),
        ("rest", [-1], np.int64), ("back_shape", [-1, 100, 6], np.int64))]
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Greater", ["peak", "bright"], ["is_real"]),
        helper.make_node("Where", ["is_real", "k_bad", "k_ok"], ["k"]),
        helper.make_node("Concat", ["k", "rest"], ["odd_shape"], axis=0),
        helper.make_node("Reshape", ["det_raw", "odd_shape"], ["det_odd"]),
        helper.make_node("Reshape", ["det_odd", "back_shape"], ["detections"]),
    ]
    _wrap_detections(model, nodes, consts)
    onnx.save(model, str(path))
    return path
