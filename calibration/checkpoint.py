"""Training checkpoints and starting a model from an earlier one (``--init``).

Sits beside the training loop (:mod:`calibration.trainer`). A checkpoint is a
``torch.save`` dict of plain values (tensors, numbers, strings, lists) so it
loads with ``weights_only=True``: model and optimizer state, scheduler,
epoch, RNG states, the run's arguments and the class names.

``--init`` takes such a checkpoint or an ONNX model exported by
:mod:`calibration.export`, which keeps the state-dict names of its weights
(exported without constant folding, so BatchNorm is not folded into the
convolutions). Weights are matched by name and shape; the per-class output
channels (the centernet heatmap, the factorized classifier) are matched by
class name, so a site that adds a dish keeps what the model knew about the
others. A factorized model started from a centernet source also takes the
heatmap branch as its objectness branch and the tray channel as objectness
channel 0; backbone, neck, shared, size and offset layers carry the same
names in both heads.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import structlog
import torch
from google.protobuf.message import DecodeError
from numpy.typing import NDArray
from onnx import numpy_helper

from calibration.model import TRAY_CLASS, DishNet, HeadType
from edge.errors import ModelError

HEATMAP_OUT = "head.heatmap.1"  # the centernet head's class-specific output conv
CLASSES_OUT = "head.classes.1"  # the factorized head's classifier output conv
OBJECTNESS_OUT = "head.objectness.1"  # the factorized head's tray/item heatmap conv
HEATMAP_BRANCH = "head.heatmap.0."
OBJECTNESS_BRANCH = "head.objectness.0."
ONNX_PREFIX = "net."  # DetectionGraph wraps DishNet as ``net``


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python RNG states as weights-only-loadable values."""
    state = cast(tuple[str, NDArray[np.uint32], int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temporary file, then rename), so a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    ModelError
        If the file is missing, unreadable or lacks the model state.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        msg = f"{path}: cannot load checkpoint ({err})"
        raise ModelError(msg) from err
    if not isinstance(payload, dict) or "model" not in payload:
        msg = f"{path}: not a DishTracker training checkpoint (no 'model' entry)"
        raise ModelError(msg)
    return payload


def onnx_weights(path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """State-dict-named weights and class names of an ONNX model we exported.

    The TorchScript exporter stores identical tensors once and aliases the
    other names with Identity nodes (e.g. freshly initialised BatchNorm
    parameters); those aliases are resolved here.
    """
    try:
        model = onnx.load(str(path))
    except (OSError, DecodeError, ValueError) as err:
        msg = f"{path}: cannot read ONNX model ({err})"
        raise ModelError(msg) from err
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    weights = {
        name.removeprefix(ONNX_PREFIX): torch.from_numpy(np.array(value))
        for name, value in arrays.items()
        if name.startswith(ONNX_PREFIX)
    }
    meta = {prop.key: prop.value for prop in model.metadata_props}
    names = json.loads(meta["class_names"]) if "class_names" in meta else None
    return weights, names


@dataclass(frozen=True, slots=True)
class InitReport:
    """What :func:`init_from` loaded: tensor counts and classes carried over."""

    loaded: int
    skipped: int
    classes_kept: int
    classes_new: int


def head_of(weights: dict[str, torch.Tensor]) -> HeadType:
    """The head type a state dict (or ONNX weights) belongs to, from its parameter names."""
    if any(key.startswith(OBJECTNESS_BRANCH) for key in weights):
        return "factorized"
    return "centernet"


def _centernet_to_factorized(
    weights: dict[str, torch.Tensor],
    source_classes: list[str] | None,
    class_names: list[str],
    state: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Centernet weights renamed for a factorized model: heatmap branch -> objectness branch.

    The tray's heatmap channel becomes objectness channel 0; the item
    channel (1) and the classifier keep their fresh initialisation.
    """
    out = dict(weights)
    for key, value in weights.items():
        if key.startswith(HEATMAP_BRANCH):
            out[OBJECTNESS_BRANCH + key.removeprefix(HEATMAP_BRANCH)] = value
    tray = class_names[TRAY_CLASS]
    if not source_classes or tray not in source_classes:
        return out
    row = source_classes.index(tray)
    for part in ("weight", "bias"):
        source = weights.get(f"{HEATMAP_OUT}.{part}")
        fresh = state[f"{OBJECTNESS_OUT}.{part}"].clone()
        if source is None or source.shape[0] != len(source_classes):
            return out
        if tuple(source.shape[1:]) != tuple(fresh.shape[1:]):
            return out
        fresh[0] = source[row]
        out[f"{OBJECTNESS_OUT}.{part}"] = fresh
    return out


def apply_weights(
    model: DishNet,
    weights: dict[str, torch.Tensor],
    source_classes: list[str] | None,
    class_names: list[str],
) -> InitReport:
    """Copy weights matching by name and shape; remap per-class output channels by class name.

    Classes the source does not know keep their fresh initialisation. Without
    source class names, a per-class output is loaded only if its shape
    matches. See the module docstring for a centernet source and a
    factorized model.
    """
    state = model.state_dict()
    if model.head_type == "factorized" and head_of(weights) == "centernet":
        weights = _centernet_to_factorized(weights, source_classes, class_names, state)
    loaded = skipped = 0
    heat_keys = {
        f"{out}.{part}" for out in (HEATMAP_OUT, CLASSES_OUT) for part in ("weight", "bias")
    }
    kept = 0
    for key, target in state.items():
        source = weights.get(key)
        if key in heat_keys and source is not None and source_classes is not None:
            index = {name: i for i, name in enumerate(source_classes)}
            rows = [(i, index[name]) for i, name in enumerate(class_names) if name in index]
            if len(source_classes) == source.shape[0]:
                for new, old in rows:
                    target[new] = source[old]
                kept = len(rows)
                loaded += 1
                continue
        if source is not None and tuple(source.shape) == tuple(target.shape):
            target.copy_(source.to(target.dtype))
            loaded += 1
            if key in heat_keys:
                kept = len(class_names)
        elif not key.endswith("num_batches_tracked"):
            skipped += 1
    model.load_state_dict(state)
    return InitReport(loaded, skipped, kept, len(class_names) - kept)


def init_from(model: DishNet, source: Path, class_names: list[str]) -> InitReport:
    """Start ``model`` from an exported ONNX model or a training checkpoint.

    Parameters
    ----------
    model : DishNet
        Freshly built model for ``class_names``, of either head type.
    source : Path
        ``*.onnx`` exported by :mod:`calibration.export`, or a ``*.ckpt``;
        its head type may differ from the model's.
    class_names : list of str
        Classes of the new training run, in id order.

    Raises
    ------
    ModelError
        If the source cannot be read or shares no weights with the model.
    """
    log = structlog.get_logger("calibration.checkpoint")
    if Path(source).suffix.lower() == ".onnx":
        weights, names = onnx_weights(source)
    else:
        payload = load_checkpoint(source)
        weights, names = payload["model"], payload.get("class_names")
    report = apply_weights(model, weights, names, class_names)
    if report.loaded == 0:
        msg = f"{source}: no weight matches the model by name and shape; is it a DishNet export?"
        raise ModelError(msg)
    log.info(
        "init_loaded",
        source=str(source),
        source_head=head_of(weights),
        head=model.head_type,
        tensors_loaded=report.loaded,
        tensors_reinitialised=report.skipped,
        classes_kept=report.classes_kept,
    )
    if report.classes_new:
        log.info(
            "class_outputs_reinitialised",
            source=str(source),
            new_classes=[n for n in class_names if not names or n not in names],
            classes_new=report.classes_new,
        )
    return report
