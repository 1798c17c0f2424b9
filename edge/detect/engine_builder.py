"""Build TensorRT engines from the ONNX model on the box, for TensorRT 10.3 (JetPack 6) to 11.

The GPU path of the detection stage: :class:`EngineBuilder` turns the same
ONNX file ONNX Runtime runs into a TensorRT engine for this GPU, kept in the
:class:`~edge.detect.engine_store.EngineStore` and built once per key; the
runtime (:mod:`edge.detect.tensorrt`) and ``dishtracker calibrate engine``
both go through :meth:`EngineBuilder.ensure`.

TensorRT and pycuda are never imported at module level: :func:`import_backend`
imports them on demand and turns every way they can be missing into one
:class:`TensorRTUnavailable`. What differs between releases is found by
feature detection (:class:`TensorRTFeatures`), not version numbers: TensorRT
10 builds weakly typed networks whose precision comes from builder flags
(``BuilderFlag.FP16``, and ``INT8`` for a Q/DQ graph); TensorRT 11 removed
those flags and the implicit INT8 calibrators, so the precision is the
graph's own (strongly typed). INT8 here only ever comes from a Q/DQ ONNX
model (``dishtracker calibrate quantize``); nothing calibrates.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
import structlog
from google.protobuf.message import DecodeError

from edge.detect.contract import signature_from_onnx
from edge.detect.engine_store import EngineKey, EngineStore, Precision
from edge.detect.model_info import ModelInfo, model_info, report
from edge.errors import MissingExtraError, ModelError

log = structlog.get_logger(__name__)

RequestedPrecision = Literal["auto", "fp32", "fp16", "int8"]
MIN_MAJOR = 10
DEFAULT_WORKSPACE_BYTES = 1 << 30
"""Builder scratch memory limit; a Jetson shares its RAM with the GPU, so not "all of it"."""
INSTALL_HINT = ("install the 'tensorrt' extra on an NVIDIA GPU box "
                "(pip install 'dishtracker-edge[tensorrt]'; on a Jetson create the venv with "
                "--system-site-packages to use JetPack's TensorRT), see docs/TENSORRT.md")
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_REQUIRED = (("Builder", None), ("Runtime", None), ("OnnxParser", None),
             ("IExecutionContext", "execute_async_v3"), ("IExecutionContext", "set_input_shape"),
             ("IExecutionContext", "set_tensor_address"), ("ICudaEngine", "get_tensor_name"),
             ("ICudaEngine", "num_io_tensors"))


class TensorRTUnavailable(MissingExtraError):
    """TensorRT, pycuda or a CUDA GPU is missing or unusable; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"TensorRT backend unavailable: {reason}; {INSTALL_HINT}")
        self.reason = reason


def import_backend() -> tuple[Any, Any]:
    """Import ``tensorrt`` and ``pycuda.driver`` and initialise CUDA.

    Returns
    -------
    (tensorrt, pycuda.driver)
        The two modules.

    Raises
    ------
    TensorRTUnavailable
        Either is not installed or cannot load its libraries, the CUDA driver
        does not initialise, or there is no CUDA device.
    """
    try:
        import tensorrt as trt  # noqa: PLC0415 - GPU library, imported only for this backend
    except (ImportError, OSError) as err:
        raise TensorRTUnavailable(f"Python package 'tensorrt' cannot be imported ({err})") from err
    try:
        import pycuda.driver as cuda  # noqa: PLC0415 - as above
    except (ImportError, OSError) as err:
        raise TensorRTUnavailable(f"Python package 'pycuda' cannot be imported ({err})") from err
    try:
        cuda.init()
        count = int(cuda.Device.count())
    except Exception as err:  # pycuda.driver.Error and its subclasses; no common import
        raise TensorRTUnavailable(f"the CUDA driver does not initialise ({err})") from err
    if count < 1:
        raise TensorRTUnavailable("no CUDA GPU is visible")
    return trt, cuda


@dataclass(frozen=True, slots=True)
class TensorRTFeatures:
    """What the imported TensorRT can do, found by looking, not by version number.

    Attributes
    ----------
    version : str
        ``tensorrt.__version__``.
    major_minor : (int, int)
        Parsed from it.
    precision_flags : bool
        ``BuilderFlag.FP16`` and ``BuilderFlag.INT8`` exist (TensorRT 10);
        without them (TensorRT 11) precision lives in the graph.
    timing_cache : bool
        ``IBuilderConfig.create_timing_cache`` exists.
    memory_pools : bool
        ``MemoryPoolType`` exists (workspace limits by pool).
    """

    version: str
    major_minor: tuple[int, int]
    precision_flags: bool
    timing_cache: bool
    memory_pools: bool

    @classmethod
    def of(cls, trt: Any) -> TensorRTFeatures:
        """Inspect a ``tensorrt`` module.

        Raises
        ------
        TensorRTUnavailable
            If it is older than TensorRT 10 or lacks the name-based tensor API.
        """
        version = str(getattr(trt, "__version__", ""))
        match = re.match(r"^(\d+)\.(\d+)", version)
        if match is None:
            raise TensorRTUnavailable(f"tensorrt.__version__ {version!r} is not a version")
        major_minor = (int(match[1]), int(match[2]))
        if major_minor[0] < MIN_MAJOR:
            raise TensorRTUnavailable(f"TensorRT {version} is too old; this backend needs "
                                      f"TensorRT {MIN_MAJOR} or newer (JetPack 6 ships 10.3)")
        missing = [f"{owner}.{attr}" if attr else owner for owner, attr in _REQUIRED
                   if not hasattr(trt, owner)
                   or (attr is not None and not hasattr(getattr(trt, owner), attr))]
        if missing:
            raise TensorRTUnavailable(f"TensorRT {version} lacks {', '.join(missing)}")
        flags = getattr(trt, "BuilderFlag", None)
        config = getattr(trt, "IBuilderConfig", None)
        return cls(version=version, major_minor=major_minor,
                   precision_flags=hasattr(flags, "FP16") and hasattr(flags, "INT8"),
                   timing_cache=hasattr(config, "create_timing_cache"),
                   memory_pools=hasattr(trt, "MemoryPoolType"))


@dataclass(frozen=True, slots=True)
class GraphFacts:
    """What the builder and runtime need to know about an ONNX file, read without a GPU.

    Attributes
    ----------
    info : ModelInfo
        The model's metadata (the same the ONNX Runtime backend reads).
    input_name, output_name : str
        The image input and the first (detections) output.
    quantized : bool
        The graph holds ``QuantizeLinear``/``DequantizeLinear`` nodes (explicit INT8).
    float16 : bool
        The graph computes in float16 (float16 weights or casts to float16).
    """

    info: ModelInfo
    input_name: str
    output_name: str
    quantized: bool
    float16: bool


def read_graph(path: Path) -> GraphFacts:
    """Read :class:`GraphFacts` from an ONNX file (external weights are not loaded).

    Raises
    ------
    ModelError
        If the file is missing, not ONNX, or not a usable detector.
    """
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, OSError, ValueError) as err:
        raise ModelError(f"{path}: not a readable ONNX file ({err})") from err
    signature = signature_from_onnx(model)
    info = model_info({p.key: p.value for p in model.metadata_props}, signature, str(path))
    fp16 = onnx.TensorProto.FLOAT16
    nodes = list(model.graph.node)
    return GraphFacts(
        info=info, input_name=signature.inputs[0].name, output_name=signature.outputs[0].name,
        quantized=any(n.op_type in _QDQ_OPS for n in nodes),
        float16=any(i.data_type == fp16 for i in model.graph.initializer) or any(
            n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
            for n in nodes))


def choose_precision(requested: RequestedPrecision, graph: GraphFacts,
                     features: TensorRTFeatures) -> Precision:
    """The precision an engine is built in.

    ``auto`` is ``int8`` for a Q/DQ graph; otherwise ``fp16`` where TensorRT
    still has precision flags (10.x) or the graph is already float16, else
    ``fp32`` (TensorRT 11 with a float32 graph, logged with the way to fp16).

    Raises
    ------
    ModelError
        ``int8`` without Q/DQ nodes, another precision for a Q/DQ graph, or
        ``fp16`` on TensorRT 11 for a float32 graph; the message says what to do.
    """
    if graph.quantized:
        if requested not in ("auto", "int8"):
            raise ModelError(f"model {graph.info.model_version!r} is quantized (Q/DQ nodes), "
                             f"so its engine is int8, not {requested}; build {requested} from "
                             "the float model")
        return "int8"
    if requested == "int8":
        raise ModelError("int8 needs a Q/DQ-quantized ONNX model (dishtracker calibrate "
                         "quantize); TensorRT's implicit calibrators are not used (removed in "
                         "TensorRT 11)")
    if requested == "fp32":
        return "fp32"
    if features.precision_flags or graph.float16:
        return "fp16"
    if requested == "fp16":
        raise ModelError(f"TensorRT {features.version} has no FP16 builder flag: convert the "
                         "model to float16 first (python -m modelopt.onnx.autocast --onnx_path "
                         "model.onnx) or build fp32")
    log.warning("engine_precision_fp32", tensorrt=features.version,
                hint="TensorRT 11 takes precision from the graph; convert the ONNX to mixed "
                     "fp16 with ModelOpt AutoCast for a faster engine")
    return "fp32"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """The CUDA device an engine is built for: ``name`` and ``"major.minor"`` capability."""

    name: str
    compute_capability: str

    @classmethod
    def of(cls, device: Any) -> GpuInfo:
        """From a ``pycuda.driver.Device``."""
        major, minor = device.compute_capability()
        return cls(str(device.name()), f"{major}.{minor}")


@dataclass(frozen=True, slots=True)
class BuiltEngine:
    """An engine in the store: where it is, its key, and whether it was built just now."""

    path: Path
    key: EngineKey
    built: bool


class EngineBuilder:
    """Builds (or finds) the engine of an ONNX model for one GPU and TensorRT.

    Parameters
    ----------
    trt : module
        The imported ``tensorrt`` (from :func:`import_backend`).
    gpu : GpuInfo
        The device the engine is for; its CUDA context must be current while
        :meth:`ensure` or :meth:`build` run.
    workspace_bytes : int
        Builder scratch memory limit (where ``MemoryPoolType`` exists).

    Raises
    ------
    TensorRTUnavailable
        If ``trt`` is older than TensorRT 10 or lacks the name-based API.
    """

    def __init__(self, trt: Any, gpu: GpuInfo, *,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> None:
        self.trt = trt
        self.features = TensorRTFeatures.of(trt)
        self.gpu = gpu
        self.workspace_bytes = workspace_bytes
        self.logger = make_logger(trt)

    def key(self, onnx_path: Path, precision: Precision, max_batch: int) -> EngineKey:
        """The cache key of ``onnx_path`` built here in ``precision`` for batches 1..max_batch."""
        return EngineKey.for_model(onnx_path, tensorrt_version=self.features.version,
                                   gpu_name=self.gpu.name,
                                   compute_capability=self.gpu.compute_capability,
                                   precision=precision, max_batch=max_batch)

    def ensure(self, store: EngineStore, onnx_path: Path, *, max_batch: int,
               precision: RequestedPrecision = "auto", force: bool = False) -> BuiltEngine:
        """Return the cached engine of ``onnx_path``, building and storing it on a miss.

        Parameters
        ----------
        store : EngineStore
            Where engines and the timing cache live.
        onnx_path : Path
            The ONNX model.
        max_batch : int
            Largest batch (streams detected together); a model with a fixed
            batch ``b`` is built for ``b`` whatever this says.
        precision : {"auto", "fp32", "fp16", "int8"}
            See :func:`choose_precision`.
        force : bool
            Discard a cached engine and build again.

        Raises
        ------
        ModelError
            If TensorRT cannot parse or build the model.
        """
        graph = read_graph(onnx_path)
        chosen = choose_precision(precision, graph, self.features)
        batch = graph.info.batch or max_batch
        key = self.key(onnx_path, chosen, batch)
        return ensure_engine(store, key, onnx_path, lambda timing: self.build(
            onnx_path, graph, chosen, batch, timing), force=force)

    def build(self, onnx_path: Path, graph: GraphFacts, precision: Precision, max_batch: int,
              timing_cache: bytes) -> tuple[memoryview, bytes]:
        """Build one engine; returns the serialized engine and the updated timing cache.

        The optimization profile spans batch 1..``max_batch`` (optimal at
        ``max_batch``, every stream at once); dynamic height and width are
        pinned to the metadata's input size.
        """
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode from TensorRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelError(report(str(onnx_path), f"cannot be parsed by TensorRT "
                                    f"{self.features.version}", errors or ["(no details)"]))
        config = builder.create_builder_config()
        if self.features.memory_pools:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.features.precision_flags and precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8: layers left unquantized run fp16
        if self.features.precision_flags and precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        self._add_profile(builder, network, config, graph, max_batch)
        cache = self._timing_cache(config, timing_cache)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelError(f"{onnx_path}: TensorRT {self.features.version} could not build a "
                             f"{precision} engine (its messages are logged as tensorrt_message)")
        timing = bytes(memoryview(cache.serialize())) if cache is not None else b""
        return memoryview(serialized), timing

    def _add_profile(self, builder: Any, network: Any, config: Any, graph: GraphFacts,
                     max_batch: int) -> None:
        width, height = graph.info.input_size
        profile = None
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = list(tensor.shape)
            if all(d >= 0 for d in shape):
                continue
            fixed = [d if d >= 0 else fill for d, fill in zip(shape, (1, 3, height, width),
                                                              strict=False)]
            low, high = list(fixed), list(fixed)
            if shape[0] < 0:
                low[0], high[0] = 1, max_batch
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(tensor.name, tuple(low), tuple(high), tuple(high))
        if profile is not None:
            config.add_optimization_profile(profile)

    def _timing_cache(self, config: Any, data: bytes) -> Any:
        if not self.features.timing_cache:
            return None
        for attempt in (data, b"") if data else (b"",):
            try:
                cache = config.create_timing_cache(attempt)
                if cache is not None and config.set_timing_cache(cache, False):
                    return cache
                problem = "TensorRT refused it"
            except (RuntimeError, TypeError, ValueError) as err:
                problem = str(err)
            # a cache from another TensorRT or GPU (a copied var/ folder): start afresh
            log.warning("engine_timing_cache_ignored", bytes=len(attempt), error=problem)
        raise ModelError(f"TensorRT {self.features.version} cannot create a timing cache")


def ensure_engine(store: EngineStore, key: EngineKey, onnx_path: Path,
                  build: Callable[[bytes], tuple[memoryview | bytes, bytes]], *,
                  force: bool = False) -> BuiltEngine:
    """Look ``key`` up in ``store`` under its lock; on a miss build, store and return it.

    Parameters
    ----------
    store : EngineStore
        The engine cache.
    key : EngineKey
        What the engine must match.
    onnx_path : Path
        The model (recorded in the sidecar, named in logs).
    build : callable
        ``(timing_cache_bytes) -> (serialized_engine, new_timing_cache_bytes)``.
    force : bool
        Discard a cached entry first.
    """
    timing_path = store.timing_cache_path(key.tensorrt_version, key.gpu_name,
                                          key.compute_capability)
    with store.lock(key):
        if force:
            store.discard(key)
        found = store.lookup(key)
        if found is not None:
            log.info("engine_cache_hit", model=str(onnx_path), engine=str(found),
                     precision=key.precision, max_batch=key.max_batch)
            return BuiltEngine(found, key, built=False)
        log.info("engine_build_started", model=str(onnx_path), precision=key.precision,
                 max_batch=key.max_batch, gpu=key.gpu_name, tensorrt=key.tensorrt_version,
                 note="minutes on a Jetson; later starts load the cached engine")
        start = time.monotonic()
        engine, timing = build(store.read_timing_cache(timing_path))
        seconds = time.monotonic() - start
        if timing:
            store.write_timing_cache(timing_path, timing)
        path = store.save(key, engine, model=onnx_path, build_seconds=seconds)
        log.info("engine_built", engine=str(path), seconds=round(seconds, 1),
                 bytes=path.stat().st_size)
        return BuiltEngine(path, key, built=True)


_TRT_LEVELS = {"INTERNAL_ERROR": "error", "ERROR": "error", "WARNING": "warning",
               "INFO": "debug", "VERBOSE": "debug"}


def make_logger(trt: Any) -> Any:
    """A ``tensorrt.ILogger`` that routes TensorRT's messages into structlog.

    Messages come as ``tensorrt_message`` events (errors and warnings at their
    level, info and verbose at debug); TensorRT logs while building and
    loading, not per inference.
    """

    class _StructlogLogger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            name = str(getattr(severity, "name", severity)).rsplit(".", 1)[-1]
            getattr(log, _TRT_LEVELS.get(name, "warning"))("tensorrt_message", severity=name,
                                                            message=msg)

    return _StructlogLogger()
