"""INT8 post-training quantization of an ONNX detector: ``dishtracker calibrate quantize``.

A site tool after training and export (:mod:`calibration.export`): it takes a
detector that meets the model contract, runs it over calibration frames to
find activation ranges, and writes a QDQ model (QuantizeLinear /
DequantizeLinear pairs around the convolutions) that the detection stage
loads exactly like the float model (``detector.model`` in the site config,
:mod:`edge.detect.onnxrt`). The output's metadata names the float model it was
made from by SHA-256 (``float_model_sha256``): written as ``<model>-int8.onnx``
beside it, it is the INT8 sibling that ``detector.precision`` probes
(:mod:`edge.detect.precision`). Two recipes, chosen by ``--target``:

``cpu``
    unsigned activations, signed weights (U8S8), per-channel weights. On the
    2-core AVX2 dev box signed activations ran *slower* than FP32 and U8S8
    faster (docs/BENCHMARKS.md, "INT8 quantization").
``tensorrt``
    symmetric signed activations and weights (S8S8, zero points 0), per-channel
    weights, float biases: the explicit-precision form TensorRT 10/11 build INT8
    engines from.

Calibration frames go through the same :class:`~edge.detect.preprocess.Letterbox`
as inference, so the ranges are those the deployed model sees. Only the
network body is quantized (convolutions and the adds, concats and resizes
between them, see :func:`body_nodes`); the head's output convolutions emit
float and the in-graph decoding after them (sigmoid, 3x3 max-pool peak test,
TopK, gathers) stays float, because 8-bit scores tie between neighbours and
the ``MaxPool(x) == x`` peak test would turn every plateau into peaks.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from tqdm import tqdm

from calibration.dataset import parse_seeds
from calibration.frame_sources import DEFAULT_MAX_FRAMES, image_frames, sim_frames
from edge.detect.engine_store import file_sha256
from edge.detect.precision import FLOAT_MODEL_SHA256
from edge.errors import ConfigError, InputFormatError, ModelError
from edge.seeds import HELD_OUT

QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Concat", "Resize",
                 "Relu", "Clip", "AveragePool", "GlobalAveragePool")
"""Op types that may be quantized, and only inside the network body (see :func:`body_nodes`)."""
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to quantize for one deployment target.

    Attributes
    ----------
    label : str
        Written to the output's ``quantization`` metadata.
    signed_activations : bool
        QInt8 activations (else QUInt8); weights are always QInt8.
    per_channel : bool
        One weight scale per output channel (else one per tensor).
    extra_options : dict
        ``quantize_static`` extra options (symmetry, bias handling).
    """

    label: str
    signed_activations: bool
    per_channel: bool
    extra_options: dict[str, Any] = field(default_factory=dict)


TARGETS: dict[str, Recipe] = {
    "cpu": Recipe("int8-qdq-u8s8", signed_activations=False, per_channel=True),
    # TensorRT reads Q/DQ as explicit precision: symmetric int8 everywhere; it folds
    # float biases into its INT8 kernels itself (TensorRT 10 Q/DQ guidance).
    "tensorrt": Recipe("int8-qdq-s8s8-symmetric", signed_activations=True, per_channel=True,
                       extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                      "QuantizeBias": False}),
}


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    """What :func:`quantize_model` wrote.

    Attributes
    ----------
    out : Path
        The quantized model.
    target, method : str
        Recipe and calibration method used.
    frames : int
        Calibration frames seen.
    quantized_nodes : int
        Nodes of the (pre-processed) float graph given to the quantizer.
    float_nodes : int
        Nodes left in float (decoding and everything not in :data:`QUANTIZED_OPS`).
    seconds : float
        Wall time of pre-processing, calibration and writing.
    """

    out: Path
    target: str
    method: str
    frames: int
    quantized_nodes: int
    float_nodes: int
    seconds: float


def body_nodes(model: onnx.ModelProto, op_types: Iterable[str] = QUANTIZED_OPS) -> list[str]:
    """Names of the nodes to quantize: the network body, not its outputs or the decoding.

    The body is every node that feeds a weight layer (Conv, MatMul, Gemm),
    directly or through other nodes. The last weight layers, whose outputs
    feed no other weight layer (the head's objectness, class, size and offset
    convolutions), are not in it: they read the dequantized 8-bit activation
    before them but keep float weights and a float output, because an 8-bit
    objectness map makes neighbouring scores tie and the 3x3 max-pool peak
    test (``MaxPool(x) == x``) would then keep whole plateaus. Everything
    downstream (sigmoid, peak test, TopK, box arithmetic) is decoding and
    stays float. Of the body, only ``op_types`` are returned.

    Parameters
    ----------
    model : onnx.ModelProto
        A graph whose nodes all have names.
    op_types : iterable of str
        Op types eligible for quantization.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    body: set[str] = set()
    stack = [producer[name] for node in model.graph.node if node.op_type in WEIGHT_OPS
             for name in node.input if name in producer]
    while stack:
        node = stack.pop()
        if node.name in body:
            continue
        body.add(node.name)
        stack.extend(producer[name] for name in node.input if name in producer)
    wanted = set(op_types)
    return [node.name for node in model.graph.node
            if node.name in body and node.op_type in wanted]


class _LetterboxReader:
    """ONNX Runtime calibration data reader: frames -> letterboxed ``(1, 3, H, W)`` inputs."""

    def __init__(self, frames: Iterator[npt.NDArray[np.uint8]], letterbox: Any, input_name: str,
                 bar: tqdm[Any]) -> None:
        self._frames = frames
        self._letterbox = letterbox
        self._input = input_name
        self._bar = bar
        self.count = 0

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        image = next(self._frames, None)
        if image is None:
            return None
        tensor, _ = self._letterbox(image)
        self.count += 1
        self._bar.update()
        return {self._input: tensor[None]}

    def __iter__(self) -> _LetterboxReader:
        return self

    def __next__(self) -> dict[str, npt.NDArray[np.float32]]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    """Run with ``directory`` as working directory: ONNX Runtime's quantizer drops
    ``*.data`` external-weight files into the current directory (ONNX Runtime 1.32)."""
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def quantize_model(model: Path, out: Path, frames: Iterator[npt.NDArray[np.uint8]], *,
                   target: str = "cpu", method: str = DEFAULT_METHOD,
                   per_channel: bool | None = None, reduce_range: bool = False,
                   exclude: Sequence[str] = (), op_types: Sequence[str] = QUANTIZED_OPS,
                   frame_count: int | None = None,
                   progress: bool | None = None, source: str = "") -> QuantizeResult:
    """Quantize an ONNX detector to INT8 QDQ and write it atomically to ``out``.

    Parameters
    ----------
    model : Path
        Float ONNX detector meeting the contract (or an Ultralytics export).
    out : Path
        Destination; written through a temporary file beside it, then renamed.
    frames : iterator of np.ndarray
        Calibration images, ``(height, width, 3)`` uint8 BGR, of any size.
    target : {"cpu", "tensorrt"}
        Key of :data:`TARGETS`.
    method : {"minmax", "entropy", "percentile"}
        How activation ranges are derived from the calibration outputs.
    per_channel : bool, optional
        Override the recipe's per-channel weights.
    reduce_range : bool
        7-bit weights (for CPUs without VNNI that saturate U8S8 sums).
    exclude : sequence of str
        Further node names (of the pre-processed graph) to keep in float.
    op_types : sequence of str
        Op types quantized inside the body (default :data:`QUANTIZED_OPS`).
    frame_count : int, optional
        Expected number of frames, for the progress bar.
    progress : bool, optional
        Show a tqdm bar; ``None`` shows it only on a terminal.
    source : str
        Describes the calibration data in the output's metadata.

    Raises
    ------
    ModelError
        The model cannot be read, or the result fails to load as a detector.
    InputFormatError
        No calibration frames.
    ConfigError
        Unknown target or method, or ``out`` is ``model``.

    Notes
    -----
    While ONNX Runtime runs, the process's working directory is a temporary
    directory (its quantizer leaves ``*.data`` files in the working
    directory), so do not call this from several threads at once.
    """
    from onnxruntime.quantization import (  # noqa: PLC0415 - heavy, loads with the command
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edge.detect.contract import read_model_info  # noqa: PLC0415
    from edge.detect.preprocess import Letterbox  # noqa: PLC0415

    if target not in TARGETS:
        raise ConfigError(f"--target {target!r} is unknown; valid: {sorted(TARGETS)}")
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is unknown; valid: {list(METHODS)}")
    model, out = Path(model).absolute(), Path(out).absolute()
    if out == model:
        raise ConfigError(f"--out {out} is the input model; write the INT8 model elsewhere")
    recipe = TARGETS[target]
    start = time.perf_counter()
    info = read_model_info(model)
    source_meta = {p.key: p.value for p in onnx.load(model, load_external_data=False)
                   .metadata_props}
    letterbox = Letterbox.from_info(info)
    first = next(frames, None)
    if first is None:
        raise InputFormatError(f"no calibration frames to quantize {model} with")
    frames = itertools.chain([first], frames)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dishtracker-quant-") as tmp_name:
        tmp = Path(tmp_name)
        with _inside(tmp):
            pre, nodes = _prepare(model, tmp / "pre.onnx", exclude, op_types)
            input_name = pre.graph.input[0].name
            with tqdm(total=frame_count, desc="calibrate", unit="frame",
                      disable=None if progress is None else not progress) as bar:
                reader = _LetterboxReader(frames, letterbox, input_name, bar)
                quantize_static(
                    str(tmp / "pre.onnx"), str(tmp / "int8.onnx"), reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if recipe.signed_activations
                    else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=recipe.per_channel if per_channel is None else per_channel,
                    reduce_range=reduce_range,
                    op_types_to_quantize=list(op_types),
                    nodes_to_quantize=nodes,
                    calibrate_method={"minmax": CalibrationMethod.MinMax,
                                      "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method],
                    extra_options=dict(recipe.extra_options),
                )
            quantized = onnx.load(tmp / "int8.onnx")
        _finish(quantized, source_meta, {
            "quantization": recipe.label,
            FLOAT_MODEL_SHA256: file_sha256(model),
            "quantization_calibration": json.dumps({
                "method": method, "frames": reader.count, "source": source,
                "per_channel": recipe.per_channel if per_channel is None else per_channel,
                "reduce_range": reduce_range, "target": target,
                "float_model_version": source_meta.get("model_version", info.model_version),
            }, sort_keys=True),
        })
        _write(quantized, tmp / "out.onnx", out)
    return QuantizeResult(out, target, method, reader.count, len(nodes),
                          len(pre.graph.node) - len(nodes), time.perf_counter() - start)


def _prepare(model: Path, path: Path, exclude: Sequence[str],
             op_types: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """Run ``quant_pre_process`` into ``path``, name every node; return it and the nodes to
    quantize.

    Pre-processing folds BatchNorm and Pad into the convolutions; symbolic shape
    inference is skipped because it fails on the decoding tail (ONNX Runtime 1.32).
    """
    from onnxruntime.quantization.shape_inference import (  # noqa: PLC0415 - heavy
        quant_pre_process,
    )

    try:
        quant_pre_process(str(model), str(path), skip_symbolic_shape=True)
    except Exception as err:  # ORT raises bare Exceptions from its optimizer and shape inference
        raise ModelError(f"{model}: ONNX Runtime's quantization pre-processing failed: "
                         f"{err}") from err
    pre = onnx.load(path)
    for index, node in enumerate(pre.graph.node):
        if not node.name:  # nodes_to_quantize selects by name
            node.name = f"{node.op_type}_{index}"
    onnx.save(pre, path)
    unknown = set(exclude) - {n.name for n in pre.graph.node}
    if unknown:
        raise ConfigError(f"--exclude names nodes not in the pre-processed graph: "
                          f"{sorted(unknown)[:5]}")
    return pre, [n for n in body_nodes(pre, op_types) if n not in set(exclude)]


def _write(quantized: onnx.ModelProto, staged: Path, out: Path) -> None:
    """Check ``quantized`` loads as a detector with a float tail, then write it atomically."""
    from edge.detect import load_detector  # noqa: PLC0415 - loads onnxruntime

    tail = {"MaxPool", "TopK", "ArgMax", "Equal", "NonMaxSuppression", "GatherElements"}
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    touched = [n.name for n in quantized.graph.node
               if n.op_type in tail and dequantized.intersection(n.input)]
    if touched:
        raise ModelError(f"quantization reached the decoding tail ({touched[:3]}); keep those "
                         "nodes float with --exclude")
    onnx.save(quantized, staged)
    try:
        load_detector(staged).close()
    except ModelError as err:
        raise ModelError(f"the quantized model does not load as a detector: {err}") from err
    partial = out.with_name(f".{out.name}.tmp")
    partial.write_bytes(staged.read_bytes())
    partial.replace(out)


def _finish(model: onnx.ModelProto, source_meta: dict[str, str], extra: dict[str, str]) -> None:
    """Restore the float model's metadata, add ``extra``, drop unused opset imports, in place.

    ``quant_pre_process`` declares every ONNX Runtime domain it knows; a
    TensorRT parser only needs the ones the graph uses.
    """
    meta = {**source_meta, **extra}
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    used = {node.domain for node in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dishtracker calibrate quantize`` to ``parser``."""
    parser.add_argument("--model", type=Path, required=True, help="float ONNX detector")
    parser.add_argument("--out", type=Path, required=True, help="INT8 ONNX model to write")
    parser.add_argument("--target", choices=sorted(TARGETS), default="cpu",
                        help="cpu: U8S8 for ONNX Runtime; tensorrt: symmetric S8S8 Q/DQ "
                             "(default: cpu)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", type=Path,
                        help="calibration frames: a directory of jpg/png (recursive) or a video")
    source.add_argument("--from-sim", action="store_true",
                        help="render calibration frames with the simulator (--seeds)")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                        help=f"at most this many frames from --frames (default "
                             f"{DEFAULT_MAX_FRAMES}, spread evenly)")
    parser.add_argument("--seeds", default="1000-1009",
                        help="simulator seeds for --from-sim (default 1000-1009; never "
                             f"the held-out {HELD_OUT.start}-{HELD_OUT.stop - 1})")
    parser.add_argument("--frames-per-seed", type=int, default=10,
                        help="rendered frames kept per seed, every 10th (default 10)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                        help=f"activation range calibration (default {DEFAULT_METHOD})")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                        help="per-channel weight scales (default: on for both targets)")
    parser.add_argument("--reduce-range", action="store_true",
                        help="7-bit weights, for CPUs without VNNI that overflow U8S8 sums")
    parser.add_argument("--exclude", default="",
                        help="comma-separated node names to keep in float")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_quantize(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker calibrate quantize``; returns 0 on success.

    Raises
    ------
    DishTrackerError
        Bad model, no frames, held-out seeds, unknown options (exit code 2).
    """
    if args.from_sim:
        count, frames = sim_frames(parse_seeds(args.seeds), args.frames_per_seed)
        source = f"sim seeds {args.seeds}, {args.frames_per_seed} frames each"
    else:
        count, frames = image_frames(args.frames, args.max_frames)
        source = str(args.frames)
    result = quantize_model(
        args.model, args.out, frames, target=args.target, method=args.method,
        per_channel=args.per_channel, reduce_range=args.reduce_range,
        exclude=[n.strip() for n in args.exclude.split(",") if n.strip()],
        frame_count=count, progress=False if args.quiet else None, source=source)
    print(f"wrote {result.out}: {result.target} ({TARGETS[result.target].label}), "
          f"{result.method} over {result.frames} frames, {result.quantized_nodes} nodes "
          f"quantized, {result.float_nodes} float, {result.seconds:.1f} s")
    return 0
