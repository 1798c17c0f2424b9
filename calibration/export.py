"""Export a trained DishNet to the detector contract's self-describing ONNX file.

Sits at the end of the training side; ``edge.detect`` loads what it writes.
The file has input ``images`` float32 ``(N, 3, H, W)`` (dynamic N), output
``detections`` ``(N, K, 6)`` = x1, y1, x2, y2 (input pixels), score, class,
and for the factorized head a second output ``embeddings`` ``(N, K, D)``
(unit vectors, row k describes detection k; :func:`calibration.model.embed_cells`),
opset 17, and ``metadata_props`` (all JSON or plain strings): ``class_names``,
``input_size`` ``[w, h]``, ``normalization``, ``resize`` ("letterbox"),
``output_format`` ("detections-v1"), ``model_version``, ``architecture``
(names the head type) and ``training`` (provenance, including ``head``).

Export uses torch's TorchScript exporter without constant folding: the
dynamo exporter (torch >= 2.9 default) cannot emit opset 17 for this graph
(no Pad adapter below 18) and folds BatchNorm away, which would lose the
state-dict names that ``--init`` relies on. ONNX Runtime and TensorRT fuse
Conv+BN when they load the model, so inference speed is unchanged.

Every export is checked: ``onnx.checker``, then torch and ONNX Runtime run
the same inputs and their decoded detections must agree.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import structlog
from numpy.typing import NDArray
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from calibration.extras import require_train_extra
from edge.errors import ModelError

if TYPE_CHECKING:
    from calibration.model import DishNet

OPSET = 17
MAX_FILE_BYTES = 12 * 1024 * 1024
BOX_TOLERANCE_PX = 1e-2
SCORE_TOLERANCE = 1e-4
PARITY_TOP = 10  # detections per image compared one by one
EMBEDDING_TOLERANCE = 1e-3  # largest difference of an embedding element, torch vs ONNX Runtime


def _metadata(
    net: DishNet, class_names: Sequence[str], model_version: str, training: Mapping[str, Any] | None
) -> dict[str, str]:
    from calibration.model import (  # noqa: PLC0415 -- torch is the optional train extra
        IMAGENET_MEAN,
        IMAGENET_STD,
        MAX_DETECTIONS,
        STRIDE,
    )

    normalization = {  # the contract: input = (pixel / 255 - mean) / std
        "color": "RGB",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    return {
        "class_names": json.dumps(list(class_names)),
        "input_size": json.dumps(list(net.input_size)),
        "normalization": json.dumps(normalization),
        "resize": "letterbox",
        "letterbox_pad_value": "114",
        "output_format": "detections-v1",
        "max_detections": str(MAX_DETECTIONS),
        "stride": str(STRIDE),
        "architecture": f"dishnet-efficientnet-lite0-b8-{net.head_type}",
        "model_version": model_version,
        "training": json.dumps(
            {**dict(training or {}), "head": net.head_type}, default=str, sort_keys=True
        ),
    }


def fold_constants(proto: onnx.ModelProto) -> None:
    """Evaluate nodes fed only by Constant nodes, in place; weights stay initializers.

    Without constant folding the TorchScript exporter leaves the arithmetic
    that builds every ``Pad``'s pads and the ``Resize`` scales in the graph
    (ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast chains). ONNX
    Runtime folds them at load, but TensorRT and human readers are better
    served by plain constants. Identity nodes are kept: they carry the names
    of deduplicated weights.
    """
    values: dict[str, NDArray[Any]] = {}
    kept = []
    for node in proto.graph.node:  # exporter output is topologically sorted
        inputs = [name for name in node.input if name]
        if node.op_type != "Identity" and all(name in values for name in inputs):
            outputs = ReferenceEvaluator(node).run(None, {name: values[name] for name in inputs})
            values.update(
                (name, np.asarray(v)) for name, v in zip(node.output, outputs, strict=True)
            )
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | {o.name for o in proto.graph.output}
    constants = [
        onnx.helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
        for name, value in values.items()
        if name in used
    ]
    del proto.graph.node[:]
    proto.graph.node.extend(constants + kept)


def compare_detections(reference: NDArray[Any], candidate: NDArray[Any]) -> str | None:
    """Why two ``(N, K, 6)`` detection arrays disagree, or None if they match.

    The :data:`PARITY_TOP` highest scores are compared sorted (robust to the
    order of ties; below them, which of two cells of near-equal objectness
    becomes the K-th candidate may differ between runtimes, and with it any
    score of that tail); each of the top :data:`PARITY_TOP` reference
    detections must have a candidate with the same class, a score within
    1e-4 and box corners within 1e-2 pixels.
    """
    if reference.shape != candidate.shape:
        return f"shapes differ: {reference.shape} vs {candidate.shape}"
    for n, (ref, got) in enumerate(zip(reference, candidate, strict=True)):
        top_ref = np.sort(ref[:, 4])[::-1][:PARITY_TOP]
        top_got = np.sort(got[:, 4])[::-1][:PARITY_TOP]
        score_gap = np.abs(top_ref - top_got).max()
        if score_gap > SCORE_TOLERANCE:
            return f"image {n}: sorted scores differ by {score_gap:.2e}"
        for row in ref[:PARITY_TOP]:
            same = (got[:, 5] == row[5]) & (np.abs(got[:, 4] - row[4]) <= SCORE_TOLERANCE)
            if not same.any():
                return f"image {n}: no match for class {int(row[5])} score {row[4]:.5f}"
            corner_gap = np.abs(got[same, :4] - row[:4]).max(axis=1).min()
            if corner_gap > BOX_TOLERANCE_PX:
                return f"image {n}: box of class {int(row[5])} differs by {corner_gap:.3e} px"
    return None


def declare_embeddings_shape(proto: onnx.ModelProto, dim: int) -> None:
    """Give the ``embeddings`` output the shape the contract asks for:
    ``[batch, K, D]`` with K the detections' own and D declared."""
    outputs = {o.name: o for o in proto.graph.output}
    rows = outputs["detections"].type.tensor_type.shape.dim
    shape = outputs["embeddings"].type.tensor_type.shape.dim
    shape[1].CopyFrom(rows[1])
    shape[2].Clear()
    shape[2].dim_value = dim


def compare_embeddings(reference_rows: NDArray[Any], reference: NDArray[Any],
                       candidate_rows: NDArray[Any], candidate: NDArray[Any]) -> str | None:
    """Where two graphs' embeddings of the same detections differ (None: they agree).

    Each of the :data:`PARITY_TOP` best reference detections of an image is
    paired with the candidate detection :func:`compare_detections` matched
    it to (same class and score, nearest box: ties may come in another
    order), and their embeddings are compared element by element.
    """
    if reference.shape != candidate.shape:
        return f"embeddings shape {list(candidate.shape)}, expected {list(reference.shape)}"
    for n, (ref, got) in enumerate(zip(reference_rows, candidate_rows, strict=True)):
        for k, row in enumerate(ref[:PARITY_TOP]):
            if row[4] <= 0:
                continue
            same = (got[:, 5] == row[5]) & (np.abs(got[:, 4] - row[4]) <= SCORE_TOLERANCE)
            gaps = np.where(same, np.abs(got[:, :4] - row[:4]).max(axis=1), np.inf)
            worst = float(np.abs(reference[n, k] - candidate[n, int(gaps.argmin())]).max())
            if worst > EMBEDDING_TOLERANCE:
                return f"image {n}: embeddings differ by {worst:.6f} > {EMBEDDING_TOLERANCE}"
    return None


def _parity(graph: Any, data: bytes, outputs: Sequence[str], inputs: NDArray[Any]) -> str | None:
    """Where ONNX Runtime's answer to ``inputs`` differs from torch's (None: nowhere)."""
    import torch  # noqa: PLC0415 -- the optional train extra

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(list(outputs), {"images": inputs})
    with torch.no_grad():
        answer = graph(torch.from_numpy(inputs))
    reference = [t.numpy() for t in (answer if isinstance(answer, tuple) else (answer,))]
    problem = compare_detections(reference[0], got[0])
    if problem is None and len(outputs) > 1:
        problem = compare_embeddings(reference[0], reference[1], got[0], got[1])
    return problem


def export_onnx(
    model: DishNet,
    path: Path,
    class_names: Sequence[str],
    input_size: tuple[int, int] | None = None,
    *,
    model_version: str = "dev",
    training: Mapping[str, Any] | None = None,
    parity_inputs: NDArray[Any] | None = None,
    embeddings: bool | None = None,
) -> Path:
    """Write ``model`` with in-graph decoding to ``path`` and verify it.

    Parameters
    ----------
    model : DishNet
        Trained network; left untouched (a copy is exported in eval mode).
    path : Path
        Destination ``.onnx`` file, replaced atomically.
    class_names : sequence of str
        Names in class-id order; must match the model's classes.
    input_size : tuple of int, optional
        ``(width, height)``; must equal the model's (the default).
    model_version : str
        Free-form version string stored in the metadata.
    training : mapping, optional
        Provenance (data, epochs, init ...) stored as JSON.
    parity_inputs : np.ndarray, optional
        ``(n, 3, H, W)`` float32 normalised real frames for the parity check,
        in addition to random inputs.
    embeddings : bool, optional
        Add the ``embeddings`` output; default: when the head is factorized.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ModelError
        If the graph fails ``onnx.checker``, torch and ONNX Runtime disagree,
        or the file exceeds 12 MB.
    """
    require_train_extra()
    import torch  # noqa: PLC0415 -- the optional train extra

    from calibration.model import DetectionGraph  # noqa: PLC0415 -- needs torch

    if len(class_names) != model.num_classes:
        msg = f"class_names has {len(class_names)} names, the model {model.num_classes} classes"
        raise ValueError(msg)
    if input_size is not None and tuple(input_size) != model.input_size:
        msg = f"input_size {input_size} differs from the model's {model.input_size}"
        raise ValueError(msg)
    if embeddings is None:
        embeddings = model.head_type == "factorized"
    graph = DetectionGraph(copy.deepcopy(model), embeddings=embeddings).eval()
    outputs = ["detections", "embeddings"] if embeddings else ["detections"]
    width, height = model.input_size
    with tempfile.TemporaryDirectory() as tmp_dir, warnings.catch_warnings():
        # the TorchScript exporter warns about its own deprecation and about
        # tracing Python ints (the grid size, constant by design)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (torch.zeros(1, 3, height, width),),
            Path(tmp_dir) / "raw.onnx",
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            do_constant_folding=False,
        )
        proto = onnx.load(str(Path(tmp_dir) / "raw.onnx"))
    fold_constants(proto)
    if embeddings:
        declare_embeddings_shape(proto, graph.embedding_dim)
    for key, value in _metadata(model, class_names, model_version, training).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        msg = f"exported graph fails onnx.checker: {err}"
        raise ModelError(msg) from err
    data = proto.SerializeToString()
    if len(data) > MAX_FILE_BYTES:
        msg = f"exported model is {len(data) / 2**20:.1f} MB, above the 12 MB limit"
        raise ModelError(msg)

    inputs = np.random.default_rng(0).normal(size=(2, 3, height, width)).astype(np.float32)
    if parity_inputs is not None and len(parity_inputs):
        inputs = np.concatenate([inputs, parity_inputs.astype(np.float32)])
    problem = _parity(graph, data, outputs, inputs)
    if problem is not None:
        msg = f"ONNX Runtime output differs from torch after export: {problem}"
        raise ModelError(msg)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def export_checkpoint(ckpt: Path, out: Path, model_version: str | None = None) -> Path:
    """Export the model of a training checkpoint (``last.ckpt`` / ``best.ckpt``)."""
    require_train_extra()
    from calibration.checkpoint import load_checkpoint  # noqa: PLC0415 -- needs torch
    from calibration.model import build_model  # noqa: PLC0415 -- needs torch

    payload = load_checkpoint(ckpt)
    names = list(payload["class_names"])
    head = payload.get("head", "centernet")  # checkpoints before --head: centernet
    net = build_model(len(names), tuple(payload["input_size"]), pretrained=False, head=head)
    net.load_state_dict(payload["model"])
    version = model_version or str(payload.get("model_version", Path(ckpt).stem))
    training = dict(payload.get("training", {}), checkpoint=str(ckpt), epoch=payload.get("epoch"))
    return export_onnx(net, out, names, model_version=version, training=training)


def reexport_onnx(source: Path, out: Path, model_version: str | None = None) -> Path:
    """Export a model this module exported before again, with today's graph
    (e.g. to add the ``embeddings`` output): same weights, same detections
    (the parity check of :func:`export_onnx` compares them with torch's), its
    metadata kept and its provenance noting the source file's SHA-256.

    Raises
    ------
    ModelError
        ``source`` is not a DishNet export, or lacks weights the model needs.
    """
    require_train_extra()
    import hashlib  # noqa: PLC0415

    from calibration.checkpoint import onnx_weights  # noqa: PLC0415 -- needs torch
    from calibration.model import build_model  # noqa: PLC0415 -- needs torch

    meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    try:
        names = list(json.loads(meta["class_names"]))
        size = tuple(json.loads(meta["input_size"]))
        training = dict(json.loads(meta.get("training", "{}")))
    except (KeyError, ValueError) as err:
        msg = f"{source}: not a DishNet export (metadata: {err})"
        raise ModelError(msg) from err
    head = training.get("head", "centernet")
    net = build_model(len(names), (int(size[0]), int(size[1])), pretrained=False, head=head)
    weights, _ = onnx_weights(source)
    state = net.state_dict()
    # BatchNorm's step counter is not in an inference graph, and not used by one
    missing = sorted(k for k in set(state) - set(weights) if not k.endswith("num_batches_tracked"))
    if missing:
        msg = f"{source}: lacks {len(missing)} weights of the model, e.g. {missing[:3]}"
        raise ModelError(msg)
    net.load_state_dict({k: weights.get(k, v) for k, v in state.items()})
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    training["reexported_from"] = {"file": Path(source).name, "sha256": digest}
    version = model_version or meta.get("model_version", Path(source).stem)
    return export_onnx(net, out, names, model_version=version, training=training)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate export``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", type=Path, help="training checkpoint (.ckpt)")
    src.add_argument("--onnx", type=Path,
                     help="a DishNet ONNX export to export again with today's graph (same "
                          "weights and metadata; adds the embeddings output)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--model-version", default=None, help="version string for the metadata")


def run_export(args: argparse.Namespace) -> int:
    """Run ``dishtracker calibrate export``; returns the exit status."""
    if args.onnx is not None:
        path = reexport_onnx(args.onnx, args.out, args.model_version)
    else:
        path = export_checkpoint(args.ckpt, args.out, args.model_version)
    structlog.get_logger("calibration.export").info(
        "model_exported", path=str(path), bytes=path.stat().st_size
    )
    return 0
