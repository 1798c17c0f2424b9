"""ONNX Runtime detector backend: the default, CPU-only way to run the detection stage.

Sits in the detection stage (:mod:`edge.detect`) between decoded frames and
the tracker: :class:`OnnxRuntimeDetector` runs one ONNX Runtime session
inside the run loop every backend shares (:mod:`edge.detect.batching`:
preprocessing, batching and decoding, configured from the model's
metadata). Normally built through :func:`edge.detect.load_detector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from edge.detect.batching import BatchedDetector
from edge.detect.model_info import EMBEDDINGS_OUTPUT, Signature, TensorSpec, model_info
from edge.errors import ModelError

# ONNX Runtime's exceptions (Fail, InvalidProtobuf, InvalidArgument, ...) share no base
# class but Exception, and the set differs between releases: collect them all.
_ORT_ERRORS = tuple(error for error in vars(ort_errors).values()
                    if isinstance(error, type) and issubclass(error, Exception))
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
              "tensor(double)": "float64", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
              "tensor(int32)": "int32", "tensor(int64)": "int64"}


class OnnxRuntimeDetector(BatchedDetector):
    """Detect objects with an ONNX model on ONNX Runtime.

    Parameters
    ----------
    path : str or Path
        ONNX model meeting the contract (``detections-v1``) or an Ultralytics
        YOLOv8/11 detection export.
    threads : int
        ONNX Runtime intra-op threads (inter-op is 1, execution sequential).
        Measured speed-ups per thread count: ``bench/detector.py``.
    score_threshold : float
        Detections scoring below are dropped, in ``[0, 1]``.
    providers : sequence of str, optional
        ONNX Runtime execution providers; default ``["CPUExecutionProvider"]``.

    Raises
    ------
    ModelError
        If the file is missing, unreadable by ONNX Runtime or not a usable detector.

    Notes
    -----
    Not thread-safe: one detector is created and used by one thread (the
    detection stage's single-thread executor, which also loads it). Run
    several detectors for several threads.
    """

    def __init__(self, path: str | Path, threads: int = 1, score_threshold: float = 0.25,
                 providers: Sequence[str] | None = None) -> None:
        path = Path(path)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options,
                providers=list(providers) if providers else ["CPUExecutionProvider"])
        except _ORT_ERRORS as err:
            raise ModelError(f"{path}: ONNX Runtime cannot load it: {err}") from err
        self.path = path
        info = model_info(session.get_modelmeta().custom_metadata_map, _signature(session),
                          str(path))
        self._session: ort.InferenceSession | None = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        super().__init__(info, score_threshold)

    @property
    def threads(self) -> int:
        """Intra-op threads the session runs with."""
        return int(self._live().get_session_options().intra_op_num_threads)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session uses, in priority order."""
        return list(self._live().get_providers())

    def infer(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network alone.

        Parameters
        ----------
        tensor : np.ndarray
            ``(N, 3, H, W)`` float32 network input (see
            :class:`~edge.detect.preprocess.Letterbox`).

        Returns
        -------
        np.ndarray
            The first output as float32, boxes in network input pixels.
        """
        return self._run(tensor, [self._output])[0]

    def infer_outputs(self, tensor: npt.NDArray[np.float32]
                      ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Detections and, where the model has them, embeddings of one run."""
        if self.info.embedding_dim is None:
            return self.infer(tensor), None
        output, embeddings = self._run(tensor, [self._output, EMBEDDINGS_OUTPUT])
        return output, embeddings

    def _run(self, tensor: npt.NDArray[np.float32],
             names: list[str]) -> list[npt.NDArray[np.float32]]:
        """The named outputs of one run, as float32."""
        session = self._live()
        try:
            outputs = session.run(names, {self._input: tensor})
        except _ORT_ERRORS as err:
            raise ModelError(f"{self.path}: inference failed on input "
                             f"{list(tensor.shape)}: {err}") from err
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    def close(self) -> None:
        """Release the session; the detector cannot be used afterwards. Idempotent."""
        self._session = None

    def _live(self) -> ort.InferenceSession:
        if self._session is None:
            raise RuntimeError(f"detector for {self.path} is closed")
        return self._session


def _signature(session: ort.InferenceSession) -> Signature:
    def spec(arg: ort.NodeArg) -> TensorSpec:
        shape = None if arg.shape is None else tuple(
            d if isinstance(d, int) and d > 0 else None for d in arg.shape)
        return TensorSpec(arg.name, _ORT_TYPES.get(arg.type, arg.type), shape)

    return Signature(tuple(spec(a) for a in session.get_inputs()),
                     tuple(spec(a) for a in session.get_outputs()))
