"""TensorRT detector backend: the detection stage on an NVIDIA GPU (Jetson Orin, desktop, server).

Sits where :mod:`edge.detect.onnxrt` sits, between decoded frames and the
tracker, and runs inside the same shared loop (:mod:`edge.detect.batching`),
so preprocessing, batching and decoding are the ONNX Runtime backend's, read
from the same ONNX metadata. Only the network call differs: an engine built
on this box from that ONNX file (:mod:`edge.detect.engine_builder`, cached by
:mod:`edge.detect.engine_store`), page-locked host buffers, one CUDA stream,
and TensorRT's name-based tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) as TensorRT 10 and 11 have it.

CUDA through pycuda: the device's primary context is retained once and
pushed around every call, all from the detection stage's one inference
thread, which also creates the detector (TensorRT execution contexts are not
thread-safe). Normally built through :func:`edge.detect.load_detector`, which
falls back to ONNX Runtime when TensorRT, pycuda or a GPU is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from edge.detect.batching import BatchedDetector
from edge.detect.engine_builder import (
    BuiltEngine,
    EngineBuilder,
    GpuInfo,
    GraphFacts,
    RequestedPrecision,
    TensorRTUnavailable,
    import_backend,
    read_graph,
)
from edge.detect.engine_store import DEFAULT_ENGINE_DIR, EngineStore
from edge.detect.model_info import EMBEDDINGS_OUTPUT
from edge.errors import ModelError

__all__ = ["TensorRTDetector", "TensorRTUnavailable"]

log = structlog.get_logger(__name__)


class TensorRTDetector(BatchedDetector):
    """Detect objects with an ONNX model compiled to a TensorRT engine on this GPU.

    Parameters
    ----------
    path : str or Path
        ONNX model meeting the contract (``detections-v1``) or an Ultralytics
        YOLOv8/11 detection export; a Q/DQ-quantized one gives an int8 engine.
    engine_dir : Path
        The engine cache (``storage.dir / "engines"``); a missing engine is
        built there first (minutes on a Jetson).
    max_batch : int
        Most images per network call (the number of streams); more images
        are run in several calls.
    score_threshold : float
        Detections scoring below are dropped, in ``[0, 1]``.
    precision : {"auto", "fp32", "fp16", "int8"}
        See :func:`edge.detect.engine_builder.choose_precision`.
    device : int
        CUDA device index.
    backend : (module, module), optional
        ``(tensorrt, pycuda.driver)`` already imported; default
        :func:`~edge.detect.engine_builder.import_backend`.

    Raises
    ------
    TensorRTUnavailable
        TensorRT or pycuda is not installed, too old, or there is no GPU.
    ModelError
        The model is not a usable detector, or TensorRT cannot build or load it.

    Notes
    -----
    Not thread-safe: create, use and close it in one thread.
    """

    def __init__(self, path: str | Path, *, engine_dir: Path = DEFAULT_ENGINE_DIR,
                 max_batch: int = 1, score_threshold: float = 0.25,
                 precision: RequestedPrecision = "auto", device: int = 0,
                 backend: tuple[Any, Any] | None = None) -> None:
        path = Path(path)
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        graph = read_graph(path)
        super().__init__(graph.info, score_threshold)
        trt, cuda = backend if backend is not None else import_backend()
        count = int(cuda.Device.count())
        if not 0 <= device < count:
            raise TensorRTUnavailable(f"CUDA device {device} does not exist ({count} visible)")
        self.path = path
        self._trt, self._cuda = trt, cuda
        self._device = cuda.Device(device)
        self._gpu_context: Any = self._device.retain_primary_context()
        self._engine: Any = None
        self._context: Any = None
        self._runtime: Any = None
        self._stream: Any = None
        self._allocations: dict[str, Any] = {}
        self._host: dict[str, npt.NDArray[Any]] = {}
        self._limit = max_batch
        self._gpu_context.push()
        try:
            builder = EngineBuilder(trt, GpuInfo.of(self._device))
            store = EngineStore(engine_dir)
            built = builder.ensure(store, path, max_batch=max_batch, precision=precision)
            self._load(builder, store, built, graph)
        except BaseException:
            self._drop()
            cuda.Context.pop()
            self._gpu_context.detach()
            self._gpu_context = None
            raise
        cuda.Context.pop()
        self.engine_path = built.path
        self.precision = built.key.precision
        log.info("tensorrt_detector_ready", model=str(path), engine=str(built.path),
                 built=built.built, precision=built.key.precision, max_batch=self._limit,
                 gpu=built.key.gpu_name, tensorrt=built.key.tensorrt_version)

    @property
    def batch_limit(self) -> int:
        """Most images one network call takes (the engine profile's upper batch)."""
        return self._limit

    def _load(self, builder: EngineBuilder, store: EngineStore, built: BuiltEngine,
              graph: GraphFacts) -> None:
        trt, cuda = self._trt, self._cuda
        self._runtime = trt.Runtime(builder.logger)
        self._engine = self._runtime.deserialize_cuda_engine(built.path.read_bytes())
        if self._engine is None:
            store.discard(built.key)
            raise ModelError(f"{built.path}: TensorRT cannot load this engine; it was removed "
                             "from the cache and is built again on the next start")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelError(f"{built.path}: no execution context (out of GPU memory?)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names
                  if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [graph.input_name] or graph.output_name not in names:
            raise ModelError(f"{built.path}: engine tensors {names} do not match the ONNX "
                             f"input {graph.input_name!r} and output {graph.output_name!r}")
        self._input, self._output = graph.input_name, graph.output_name
        # the embeddings come back from the same run where the model has them
        self._embeddings = (EMBEDDINGS_OUTPUT if graph.info.embedding_dim is not None
                            and EMBEDDINGS_OUTPUT in names else None)
        self._limit = built.key.max_batch
        width, height = graph.info.input_size
        self._input_shape = (3, height, width)
        if not self._context.set_input_shape(self._input, (self._limit, *self._input_shape)):
            raise ModelError(f"{built.path}: the engine refuses input shape "
                             f"{[self._limit, *self._input_shape]}")
        self._stream = cuda.Stream()
        for name in names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelError(f"{built.path}: tensor {name!r} has shape {list(shape)} that "
                                 "depends on the data; this backend needs shapes known from "
                                 "the input shape")
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            volume = math.prod(shape)
            self._allocations[name] = cuda.mem_alloc(max(1, volume * dtype.itemsize))
            if not self._context.set_tensor_address(name, int(self._allocations[name])):
                raise ModelError(f"{built.path}: TensorRT refused the buffer of {name!r}")
            if name in (self._input, self._output, self._embeddings):  # others stay on the GPU
                self._host[name] = cuda.pagelocked_empty(volume, dtype)

    def infer(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network alone.

        Parameters
        ----------
        tensor : np.ndarray
            ``(N, 3, H, W)`` float32 network input, ``1 <= N <=``
            :attr:`batch_limit` (see :class:`~edge.detect.preprocess.Letterbox`).

        Returns
        -------
        np.ndarray
            The first output as float32 (a copy), boxes in network input pixels.
        """
        return self._run(tensor, (self._output,))[0]

    def infer_outputs(self, tensor: npt.NDArray[np.float32]
                      ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Detections and, where the model has them, embeddings of one run."""
        if self._embeddings is None:
            return self.infer(tensor), None
        output, embeddings = self._run(tensor, (self._output, self._embeddings))
        return output, embeddings

    def _run(self, tensor: npt.NDArray[np.float32],
             outputs: tuple[str, ...]) -> list[npt.NDArray[np.float32]]:
        """Run the engine on ``tensor``; copies of the named outputs, as float32."""
        if self._context is None:
            raise RuntimeError(f"detector for {self.path} is closed")
        if tensor.ndim != 4 or tuple(tensor.shape[1:]) != self._input_shape or not (
                1 <= tensor.shape[0] <= self._limit):
            expected = ", ".join(map(str, self._input_shape))
            raise ValueError(f"input must be (1..{self._limit}, {expected}), got {tensor.shape}")
        cuda, context, stream = self._cuda, self._context, self._stream
        self._gpu_context.push()
        try:
            if not context.set_input_shape(self._input, tuple(tensor.shape)):
                raise ModelError(f"{self.path}: the engine refuses input shape "
                                 f"{list(tensor.shape)}")
            host_in = self._host[self._input][:tensor.size].reshape(tensor.shape)
            np.copyto(host_in, tensor, casting="same_kind")
            cuda.memcpy_htod_async(self._allocations[self._input], host_in, stream)
            if not context.execute_async_v3(stream.handle):
                raise ModelError(f"{self.path}: TensorRT inference failed on input "
                                 f"{list(tensor.shape)} (see tensorrt_message)")
            host_outs = []
            for name in outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(name))
                host_out = self._host[name][:math.prod(shape)].reshape(shape)
                cuda.memcpy_dtoh_async(host_out, self._allocations[name], stream)
                host_outs.append(host_out)
            stream.synchronize()
        finally:
            cuda.Context.pop()
        return [np.array(h, dtype=np.float32) for h in host_outs]

    def close(self) -> None:
        """Free the GPU buffers, engine and context; release the primary context. Idempotent."""
        if self._gpu_context is None:
            return
        self._gpu_context.push()
        try:
            self._drop()
        finally:
            self._cuda.Context.pop()
            self._gpu_context.detach()
            self._gpu_context = None

    def _drop(self) -> None:
        """Release TensorRT objects and device memory (the CUDA context must be current)."""
        self._context = None  # before the engine it came from
        self._engine = None
        self._runtime = None
        for allocation in self._allocations.values():
            allocation.free()
        self._allocations = {}
        self._host = {}
        self._stream = None
